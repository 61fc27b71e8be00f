"""Ports for a capture that was not taken behind this switch (``--ports-from-trace N``).

``replay`` decides where a frame enters by its source MAC; a capture from elsewhere has no
port MAC, so every frame would enter from the uplink and be dropped ``no_port``.
``scan_trace`` counts a trace's source MACs in one cheap pass; ``ports_from_trace`` makes
the most frequent of them the VM ports, each with the layers of the policy's first port.
Used by ``hostsdn replay`` and ``hostsdn cachelab``.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass

from hostsdn.errors import HostsdnUsageError
from hostsdn.policy import model as pm
from hostsdn.runtime.pcap import LINKTYPE_ETHERNET, TraceReader

__all__ = ["TraceStats", "link_type_warning", "port_name_for_mac", "ports_from_trace",
           "scan_trace"]

_LINK_NAMES = {0: "BSD loopback", 12: "raw IP", 14: "raw IP", 101: "raw IP", 228: "raw IPv4",
               229: "raw IPv6", 113: "Linux cooked (SLL)", 276: "Linux cooked (SLL2)"}


def link_type_warning(trace: str | os.PathLike[str], linktype: int) -> str | None:
    """Why a non-Ethernet capture's frames will hardly meet a port (None for Ethernet)."""
    lt = linktype & 0xFFFF
    if lt == LINKTYPE_ETHERNET:
        return None
    name = _LINK_NAMES.get(lt, "not Ethernet")
    if lt in (113, 276):
        what = ("its frames get a synthetic Ethernet header: the source MAC of the cooked "
                "header and a zero destination MAC, so frames from other hosts reach no port "
                "(no_port)")
    else:
        what = ("its frames get a synthetic Ethernet header with zero MACs, so none comes "
                "from or goes to a port: expect every frame dropped no_port, and "
                "--ports-from-trace has no source MAC to use")
    return f"{trace}: link type {lt} ({name}) has no Ethernet header; {what}"


@dataclass(frozen=True, slots=True)
class TraceStats:
    """What one cheap pass over a trace tells before the replays."""

    frames: int
    """Number of frames."""
    first_time: float | None
    """Smallest timestamp (None for an empty trace)."""
    last_time: float | None
    """Largest timestamp."""
    src_macs: tuple[tuple[bytes, int], ...] = ()
    """Source MACs with their frame counts, most frequent first (ties: first seen)."""
    linktype: int = LINKTYPE_ETHERNET
    """The trace's link type (its frames were converted to Ethernet when not 1)."""

    @property
    def duration(self) -> float | None:
        """Seconds of trace time covered; None when it is not positive."""
        if self.first_time is None or self.last_time is None:
            return None
        span = self.last_time - self.first_time
        return span if span > 0 else None


def scan_trace(trace: str | os.PathLike[str]) -> TraceStats:
    """Count frames, timestamps and source MACs of ``trace`` (raises ``TraceError``)."""
    macs: Counter[bytes] = Counter()
    first: float | None = None
    last: float | None = None
    frames = 0
    reader = TraceReader(trace)
    for tf in reader:
        frames += 1
        first = tf.time if first is None else min(first, tf.time)
        last = tf.time if last is None else max(last, tf.time)
        if len(tf.data) >= 12:
            macs[tf.data[6:12]] += 1
    return TraceStats(frames, first, last, tuple(macs.most_common()),
                      reader.linktype & 0xFFFF)


def port_name_for_mac(mac: bytes) -> str:
    """``02:00:..`` -> ``"mac-02-00-.."`` (a valid policy name)."""
    return "mac-" + "-".join(f"{b:02x}" for b in mac)


def ports_from_trace(policy: pm.Policy, stats: TraceStats, count: int) -> pm.Policy:
    """A copy of ``policy`` whose ports are the ``count`` most frequent source MACs of the
    trace, each with the layers of the policy's first port (the template).

    Not eligible as a station: group (multicast/broadcast) MACs, the all-zero MAC (the
    synthetic header of raw-IP captures) and the policy's uplink MAC.  The policy's own
    ports are dropped; layers, uplink and mappings are kept.
    """
    if count < 1:
        raise HostsdnUsageError("the number of ports from the trace must be at least 1")
    if not policy.ports:
        raise HostsdnUsageError(f"{policy.source or 'policy'}: has no port to use as the "
                                "template of the ports from the trace")
    template = policy.ports[0]
    chosen = [mac for mac, _ in stats.src_macs
              if not mac[0] & 1 and mac != bytes(6) and mac != policy.uplink.mac][:count]
    if not chosen:
        why = ("" if stats.linktype == LINKTYPE_ETHERNET else
               f" (link type {stats.linktype}: no Ethernet header, the frames have zero MACs)")
        raise HostsdnUsageError(f"the trace has no unicast source MAC to make a port of{why}")
    # The trace's hosts are unknown to the policy: their ports do no anti-spoofing (a
    # router's MAC in a capture sends from many addresses; replayed as a study).
    ports = tuple(dataclasses.replace(template, name=port_name_for_mac(mac), mac=mac, ips=(),
                                      line=None, port_security=False, allowed_addresses=())
                  for mac in chosen)
    return dataclasses.replace(policy, ports=ports)
