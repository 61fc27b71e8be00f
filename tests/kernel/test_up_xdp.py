"""`hostsdn up --nic xdp` end to end: the same traffic as test_up_simnic, with the BPF
program attached to the host-side interfaces as the NIC.  Hits stay in the kernel, so
Python sees only the exceptions (first packets, SYN/FIN, blocked traffic).

Skipped (with the reason) when network namespaces or BPF/libbpf/clang are truly
unavailable (the ``xdp_ready`` fixture of conftest.py); CI has them, so it runs there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_up_simnic import (  # the traffic tests run again, against the fixture below
    Setup,
    last_status,
    run_up,
    test_blocked_port_is_blocked,
    test_icmp_error_through_snat_reaches_the_vm_socket,
    test_ping_between_vms,
    test_snat_to_remote_address_in_uplink_namespace,
    test_tcp_transfer_of_1mb_between_vms,
)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

__all__ = ["test_blocked_port_is_blocked", "test_icmp_error_through_snat_reaches_the_vm_socket",
           "test_ping_between_vms",
           "test_snat_to_remote_address_in_uplink_namespace",
           "test_tcp_transfer_of_1mb_between_vms"]


@pytest.fixture(scope="module")
def up(xdp_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from run_up(tmp_path_factory.mktemp("up-xdp"), "xdp")


def test_xdp_program_is_attached_and_python_sees_only_exceptions(up: Setup) -> None:
    from hostsdn.nic.xdp import libbpf
    from hostsdn.runtime.netns import Topology
    from hostsdn.runtime.policyfile import load_policy

    topo = Topology(load_policy(up.policy), uplink_ns=up.ns_up)
    for port in topo.ports:
        assert libbpf.xdp_query_id(topo.host_ifindex(port)) > 0, port
    fields = last_status(up)
    # ~720 data segments of the 1 MB transfer went VM to VM in the kernel; Python saw the
    # handshakes, teardowns, first packets and blocked SYNs only
    assert 0 < int(fields["packets"]) < 300, fields
    assert int(fields["dropped"]) >= 1
    assert int(fields["tx_errors"]) == 0


def test_established_flow_no_longer_reaches_the_slow_path(up: Setup) -> None:
    """After the first packets of a connection its flows sit in the BPF maps: a 2 MB
    transfer (~1,400 data segments each way plus ACKs) costs the Python slow path only the
    handshake, the teardown and the first packets of each direction."""
    import hashlib
    import os

    from netns_util import listen_in, transfer
    from test_up_simnic import VM_B

    before = int(last_status(up)["packets"])
    payload = os.urandom(2 << 20)
    with listen_in(up.ns_b, VM_B, 5007) as server:
        _, data, reply = transfer(server, up.ns_a, (VM_B, 5007), payload)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    assert reply.startswith(b"done ")
    seen = int(last_status(up)["packets"]) - before
    assert 0 < seen < 40, f"the slow path saw {seen} frames of a 2 MB transfer"
