"""The slow path as the ``xdp`` backend will drive it, in-process: every frame read from a
socket is a NIC miss and goes straight to the host switch (``receive_exception``), and the
flow ops are flushed to the backend after each frame.

No BPF is involved: the backend is simnic, which the loop never asks to forward (with XDP
the kernel does the forwarding of hits).  So every packet must show up as an exception,
and flows must still be offloaded to the backend.  Also checks the Topology API the xdp
backend needs (``host_ifindex``, ``ns_ifindex``) and that ``SlowPath`` runs in a thread
and stops on ``stop()``.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from netns_util import (
    REMOTE_IP,
    UPLINK_IP,
    VM_A,
    VM_B,
    leftovers,
    listen_in,
    netns_unavailable_reason,
    new_tag,
    ns_run,
    policy_text,
    transfer,
)

from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime.afpacket import PacketPort
from hostsdn.runtime.daemon import SlowPath
from hostsdn.runtime.netns import Topology, in_netns

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(60)]


def test_exception_path_in_a_thread() -> None:
    tag = new_tag()
    reason = netns_unavailable_reason(tag)
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    policy = load_policy_text(policy_text(tag), f"{tag}.yaml")
    topo = Topology(policy, uplink_ns=f"hsdn-{tag}u", remote_ips=[REMOTE_IP])
    ports: dict[str, PacketPort] = {}
    slow: SlowPath | None = None
    thread: threading.Thread | None = None
    final: dict[str, Any] = {}
    try:
        topo.create()
        a, b = f"{tag}a", f"{tag}b"
        assert topo.ports == [a, b, "uplink"]
        for port in topo.ports:
            assert topo.host_ifindex(port) == socket.if_nametoindex(topo.host_ifname(port))
            eth0 = in_netns(topo.netns(port), lambda: socket.if_nametoindex("eth0"))
            assert topo.ns_ifindex(port) == eth0
        ports = {p: PacketPort(topo.host_ifname(p)) for p in topo.ports}
        dp = Datapath(policy, DatapathOptions(nic="simnic"))
        slow = SlowPath(dp, ports, exceptions_only=True, status_interval=0)
        runner = slow

        def run() -> None:
            final.update(runner.run(duration=40).to_json())

        thread = threading.Thread(target=run)
        thread.start()

        ping = ns_run(topo.netns(a), "ping", "-c", "3", "-i", "0.2", "-W", "1", VM_B)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        with listen_in(topo.netns(b), VM_B, 5002) as server:
            peer, data, _ = transfer(server, topo.netns(a), (VM_B, 5002), bytes(200_000))
        assert (peer[0], len(data)) == (VM_A, 200_000)
        with listen_in(topo.netns("uplink"), REMOTE_IP, 5004) as server:
            peer, data, reply = transfer(server, topo.netns(a), (REMOTE_IP, 5004), b"hi")
        assert (peer[0], data) == (UPLINK_IP, b"hi") and reply.startswith(b"done ")

        slow.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert final["packets"] > 100
        assert final["nic_hits"] == 0 and final["exceptions"] == final["packets"]
        assert final["flows_offloaded"] > 0          # flow ops reached the backend
        assert final["tx_errors"] == 0
    finally:
        if slow is not None:
            slow.stop()
        if thread is not None:
            thread.join(10)
        if slow is not None:
            slow.close()
        for sock in ports.values():
            sock.close()
        topo.destroy()
    assert leftovers(tag) == []
