"""Reference test: ICMP errors through SNAT, hostsdn against Linux nftables masquerade.

Four namespaces: vm (10.1.0.4) - nat (nftables masquerade to 203.0.113.7) - rt (a router
whose link to far has MTU 1300) - far (198.51.100.10).  The vm sends a UDP datagram to a
closed port of far (far answers port unreachable) and a 1400-byte DF datagram (rt answers
frag-needed, MTU 1300).  AF_PACKET sockets in nat capture what Linux receives and sends on
both sides.  The same frames then go through a hostsdn Switch whose policy SNATs like the
masquerade: the ICMP message hostsdn gives the VM (type, code, MTU, the translated quote
with its checksums, the ICMP checksum) must be byte-identical to Linux's, and the outer
addresses the same (Linux's forwarding decrements the outer TTL; hostsdn is a switch)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess

import pytest

from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime.netns import in_netns
from hostsdn.switch import UPLINK, Switch

ETH_P_ALL = 0x0003


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def ns(name: str, *cmd: str) -> None:
    run("ip", "netns", "exec", name, *cmd)


def mac_of(netns: str, ifname: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", f"/sys/class/net/{ifname}/address"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip()


@pytest.fixture
def topology():
    tag = "hsdnt-i" + secrets.token_hex(2)
    names = {k: f"{tag}{k}" for k in ("vm", "nat", "rt", "far")}
    if subprocess.run(["nft", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("nft is not installed")
    try:
        for n in names.values():
            run("ip", "netns", "add", n)
        links = [("vm", "v0", "nat", "v1"), ("nat", "w0", "rt", "w1"), ("rt", "f0", "far", "f1")]
        for a, ia, b, ib in links:
            run("ip", "link", "add", ia + tag[-4:], "netns", names[a], "type", "veth", "peer",
                "name", ib + tag[-4:], "netns", names[b])
        s = tag[-4:]
        addr = {("vm", "v0"): "10.1.0.4/24", ("nat", "v1"): "10.1.0.1/24",
                ("nat", "w0"): "203.0.113.7/24", ("rt", "w1"): "203.0.113.1/24",
                ("rt", "f0"): "198.51.100.1/24", ("far", "f1"): "198.51.100.10/24"}
        for (n, i), a in addr.items():
            ns(names[n], "ip", "addr", "add", a, "dev", i + s)
            ns(names[n], "ip", "link", "set", i + s, "up")
            # full checksums on the wire (veth would leave them partial)
            ns(names[n], "ethtool", "-K", i + s, "tx", "off")
        ns(names["rt"], "ip", "link", "set", "f0" + s, "mtu", "1300")
        ns(names["far"], "ip", "link", "set", "f1" + s, "mtu", "1300")
        ns(names["vm"], "ip", "route", "add", "default", "via", "10.1.0.1")
        ns(names["nat"], "ip", "route", "add", "default", "via", "203.0.113.1")
        ns(names["far"], "ip", "route", "add", "default", "via", "198.51.100.1")
        for n in ("nat", "rt"):
            ns(names[n], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns(names["nat"], "nft", f"add table ip {tag}; add chain ip {tag} post "
           f"{{ type nat hook postrouting priority 100 ; }}; "
           f"add rule ip {tag} post oifname w0{s} masquerade")
        yield names, s
    finally:
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


def capture(netns: str, ifname: str) -> socket.socket:
    def make():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        sock.settimeout(0.2)
        return sock
    return in_netns(netns, make)


def drain(sock: socket.socket) -> list[tuple[bytes, int]]:
    """(frame, packet type) pairs: 0 host (received), 4 outgoing."""
    out = []
    with contextlib.suppress(TimeoutError, socket.timeout):
        while True:
            data, addr = sock.recvfrom(65535)
            out.append((data, addr[2]))
    return out


def send_udp(netns: str, size: int, dport: int) -> None:
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, 10, 2); s.bind(('10.1.0.4', 5353)); "
            f"s.sendto(b'q' * {size}, ('198.51.100.10', {dport}))")
    ns(netns, "python3", "-c", code)


def is_udp(frame: bytes) -> bool:
    return frame[12:14] == b"\x08\x00" and frame[23] == 17


def is_icmp_error(frame: bytes) -> bool:
    return frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] in (3, 11)


@pytest.mark.parametrize("case", ["port_unreachable", "frag_needed"])
def test_icmp_error_through_snat_is_what_linux_masquerade_gives(topology, case):
    names, s = topology
    lan = capture(names["nat"], "v1" + s)
    wan = capture(names["nat"], "w0" + s)
    try:
        # warm ARP/neighbours first, so the captures hold only the datagram and its error
        ns(names["vm"], "ping", "-c1", "-W2", "198.51.100.10")
        drain(lan)
        drain(wan)
        send_udp(names["vm"], 1400 if case == "frag_needed" else 20, 9)
        lan_frames, wan_frames = drain(lan), drain(wan)
    finally:
        lan.close()
        wan.close()
    vm_udp = [f for f, t in lan_frames if t == 0 and is_udp(f)]
    linux_out = [f for f, t in wan_frames if t == 4 and is_udp(f)]
    error_in = [f for f, t in wan_frames if t == 0 and is_icmp_error(f)]
    linux_error = [f for f, t in lan_frames if t == 4 and is_icmp_error(f)]
    assert len(vm_udp) == len(linux_out) == len(error_in) == len(linux_error) == 1, (
        len(vm_udp), len(linux_out), len(error_in), len(linux_error))
    expected_type = (3, 4) if case == "frag_needed" else (3, 3)
    assert (error_in[0][34], error_in[0][35]) == expected_type

    vm_mac = mac_of(names["vm"], "v0" + s)
    policy = load_policy_text(f"""\
version: 1
uplink: {{mac: "{mac_of(names['nat'], 'w0' + s)}", ip: 203.0.113.7,
         gateway_mac: "{mac_of(names['rt'], 'w1' + s)}"}}
ports:
  - {{name: vm, mac: "{vm_mac}", ips: ["10.1.0.4/24"], layers: [nat]}}
layers:
  - name: nat
    default: allow
    outbound:
      - {{priority: 1, match: {{dst_ip: "0.0.0.0/0"}}, action: {{snat: {{ip: 203.0.113.7}}}}}}
""", "masquerade.yaml")
    sw = Switch(policy)
    res = sw.receive(vm_udp[0], "vm", 1.0)
    [(port, ours_out)] = res.outputs
    assert port == UPLINK
    # the same translation of the datagram (addresses, port, UDP checksum); Linux routes
    # (TTL - 1, IP checksum), hostsdn switches
    assert ours_out[34:] == linux_out[0][34:]
    assert ours_out[26:34] == linux_out[0][26:34]
    res = sw.receive(error_in[0], UPLINK, 1.1)
    [(port, ours)] = res.outputs
    assert port == "vm"
    linux = linux_error[0]
    assert ours[26:34] == linux[26:34]                 # outer source and destination
    assert ours[34:] == linux[34:]                     # the whole ICMP message, byte for byte
