"""NIC backends (simnic, xdp) and the datapath that puts a NIC in front of the switch."""

from __future__ import annotations

from typing import Any

from hostsdn.offload.backend import NicBackend, register_backend


def _simnic(**kwargs: Any) -> NicBackend:
    from hostsdn.nic.simnic import SimNic

    return SimNic(**kwargs)


def _xdp(**kwargs: Any) -> NicBackend:
    from hostsdn.nic.xdp.backend import XdpNic  # needs libbpf and root: imported when asked

    return XdpNic(**kwargs)


register_backend("simnic", _simnic)
register_backend("xdp", _xdp, needs_root=True, attaches_to_ports=True)
