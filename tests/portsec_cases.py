"""Port security fixture table (shared by the unit, property and kernel tests): a policy
with checked ports and the frames a VM may or may not send, with the expected drop reason
(OpenStack port security / OVS firewall driver rules, RFC 4861), and sequences where a
valid frame's flow must not carry a spoofed one."""

from __future__ import annotations

from scapy.all import (  # type: ignore
    ARP,
    IP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    Raw,
)

from frames import tcp, udp
from hostsdn.flows.table import DropReason
from hostsdn.policy.loader import load_policy_text
from hostsdn.switch import UPLINK

A_MAC, B_MAC, C_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
GW_MAC, UPLINK_MAC, ROUTER_MAC = "02:00:00:00:ee:01", "02:00:00:00:ff:01", "02:00:00:00:ee:01"
OTHER_MAC = "02:00:00:00:00:99"
A_LL = "fe80::ff:fe00:a"          # EUI-64 of 02:00:00:00:00:0a (U/L bit flipped)
POLICY = f"""\
version: 1
uplink: {{mac: "{UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{GW_MAC}"}}
ports:
  - {{name: a, mac: "{A_MAC}", ips: ["10.1.0.4/24", "fd00::4/64"], layers: [all]}}
  - {{name: b, mac: "{B_MAC}", ips: ["10.1.0.6/24"], layers: [all], vlans: [100, 200]}}
  - name: c
    mac: "{C_MAC}"
    ips: ["10.1.0.8/24"]
    layers: [all]
    allowed_addresses: ["10.9.0.0/16", "02:00:00:00:00:cc", {{ip: 10.8.0.1, mac: "02:00:00:00:00:cd"}}]
  - {{name: open, mac: "02:00:00:00:00:0f", layers: [all], port_security: false}}
layers:
  - {{name: all, stateful: true, default: allow}}
"""


def eth(src=A_MAC, dst=GW_MAC):
    return Ether(src=src, dst=dst)


def ns(src_ip, target, sll=None, src=A_MAC):
    pkt = eth(src, "33:33:ff:00:00:01") / IPv6(src=src_ip, dst="ff02::1:ff00:1", hlim=255) / \
        ICMPv6ND_NS(tgt=target)
    return pkt / ICMPv6NDOptSrcLLAddr(lladdr=sll) if sll else pkt


def na(src_ip, target, tll=None, src=A_MAC):
    pkt = eth(src, "33:33:00:00:00:01") / IPv6(src=src_ip, dst="ff02::1", hlim=255) / \
        ICMPv6ND_NA(tgt=target, R=0, S=0, O=1)
    return pkt / ICMPv6NDOptDstLLAddr(lladdr=tll) if tll else pkt


def arp(sender_mac=A_MAC, sender_ip="10.1.0.4", target="10.1.0.1", src=A_MAC, op=1,
        dst="ff:ff:ff:ff:ff:ff"):
    return Ether(src=src, dst=dst) / ARP(op=op, hwsrc=sender_mac, psrc=sender_ip, pdst=target)


CASES = [
    # (description, port, frame, expected drop reason or None)
    ("own IPv4 address", "a", udp(A_MAC, GW_MAC, "10.1.0.4", "8.8.8.8", 5000, 53), None),
    ("another address of the same /24", "a",
     udp(A_MAC, GW_MAC, "10.1.0.5", "8.8.8.8", 5000, 53), DropReason.SPOOFED_SRC_IP),
    ("the /24 network address", "a",
     udp(A_MAC, GW_MAC, "10.1.0.0", "8.8.8.8", 5000, 53), DropReason.SPOOFED_SRC_IP),
    ("another port's address", "a",
     udp(A_MAC, GW_MAC, "10.1.0.6", "8.8.8.8", 5000, 53), DropReason.SPOOFED_SRC_IP),
    ("spoofed source MAC", "a",
     udp(OTHER_MAC, GW_MAC, "10.1.0.4", "8.8.8.8", 5000, 53), DropReason.SPOOFED_SRC_MAC),
    ("another port's MAC", "a",
     udp(B_MAC, GW_MAC, "10.1.0.6", "8.8.8.8", 5000, 53), DropReason.SPOOFED_SRC_MAC),
    ("DHCP discover from 0.0.0.0", "a",
     udp(A_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 68, 67), None),
    ("0.0.0.0 but not DHCP client->server", "a",
     udp(A_MAC, "ff:ff:ff:ff:ff:ff", "0.0.0.0", "255.255.255.255", 67, 68),
     DropReason.SPOOFED_SRC_IP),
    ("0.0.0.0 TCP", "a", tcp(A_MAC, GW_MAC, "0.0.0.0", "8.8.8.8", 68, 67, "S"),
     DropReason.SPOOFED_SRC_IP),
    ("0.0.0.0 non-first fragment (no ports to check)", "a",
     bytes(eth() / IP(src="0.0.0.0", dst="8.8.8.8", proto=17, frag=100) / Raw(b"x" * 16)),
     DropReason.SPOOFED_SRC_IP),
    ("own IPv6 address", "a",
     bytes(eth() / IPv6(src="fd00::4", dst="2001:db8::1") / UDP(sport=1, dport=2)), None),
    ("IPv6 on-link neighbour", "a",
     bytes(eth() / IPv6(src="fd00::5", dst="2001:db8::1") / UDP(sport=1, dport=2)),
     DropReason.SPOOFED_SRC_IP),
    ("EUI-64 link-local of the port MAC", "a",
     bytes(eth() / IPv6(src=A_LL, dst="fe80::1") / ICMPv6EchoRequest()), None),
    ("another link-local", "a",
     bytes(eth() / IPv6(src="fe80::1234", dst="fe80::1") / ICMPv6EchoRequest()),
     DropReason.SPOOFED_SRC_IP),
    ("DAD: NS from ::", "a", bytes(ns("::", "fd00::4")), None),
    ("MLDv2 report from ::", "a",
     bytes(eth(A_MAC, "33:33:00:00:00:16") / IPv6(src="::", dst="ff02::16", hlim=1)
           / ICMPv6MLReport2()), None),
    ("echo from ::", "a",
     bytes(eth() / IPv6(src="::", dst="fe80::1") / ICMPv6EchoRequest()),
     DropReason.SPOOFED_SRC_IP),
    ("UDP from ::", "a",
     bytes(eth() / IPv6(src="::", dst="ff02::1:2") / UDP(sport=546, dport=547)),
     DropReason.SPOOFED_SRC_IP),
    # ARP
    ("ARP request as itself", "a", bytes(arp()), None),
    ("ARP probe (sender 0.0.0.0)", "a", bytes(arp(sender_ip="0.0.0.0", target="10.1.0.4")),
     None),
    ("gratuitous ARP for another address", "a",
     bytes(arp(sender_ip="10.1.0.1", target="10.1.0.1")), DropReason.SPOOFED_ARP),
    ("ARP reply claiming another port's address", "a",
     bytes(arp(sender_ip="10.1.0.6", op=2, dst=B_MAC)), DropReason.SPOOFED_ARP),
    ("ARP sender MAC not the frame's", "a", bytes(arp(sender_mac=OTHER_MAC)),
     DropReason.SPOOFED_ARP),
    ("ARP for a non-Ethernet hardware type", "a",
     bytes(arp())[:14] + b"\x00\x06" + bytes(arp())[16:], DropReason.SPOOFED_ARP),
    # IPv6 ND
    ("NS with its own source link-layer option", "a", bytes(ns("fd00::4", "fd00::1", A_MAC)),
     None),
    ("NS with another source link-layer option", "a",
     bytes(ns("fd00::4", "fd00::1", OTHER_MAC)), DropReason.SPOOFED_ND),
    ("NA for its own address", "a", bytes(na("fd00::4", "fd00::4", A_MAC)), None),
    ("NA for its link-local address", "a", bytes(na(A_LL, A_LL)), None),
    ("NA for another address (neighbour cache poisoning)", "a",
     bytes(na("fd00::4", "fd00::1", A_MAC)), DropReason.SPOOFED_ND),
    ("NA with another target link-layer option", "a",
     bytes(na("fd00::4", "fd00::4", OTHER_MAC)), DropReason.SPOOFED_ND),
    ("NA with a zero-length option (RFC 4861 4.6)", "a",
     bytes(na("fd00::4", "fd00::4") / Raw(b"\x02\x00" + bytes(6))), DropReason.SPOOFED_ND),
    ("NA with an option running past the packet", "a",
     bytes(na("fd00::4", "fd00::4") / Raw(b"\x02\x02" + bytes(6))), DropReason.SPOOFED_ND),
    ("router advertisement from a VM", "a",
     bytes(eth(A_MAC, "33:33:00:00:00:01") / IPv6(src=A_LL, dst="ff02::1", hlim=255)
           / ICMPv6ND_RA()), DropReason.SPOOFED_ND),
    # VLANs
    ("tagged frame from a port without vlans", "a",
     bytes(eth() / Dot1Q(vlan=100) / IP(src="10.1.0.4", dst="8.8.8.8") / UDP()),
     DropReason.VLAN_NOT_ALLOWED),
    ("declared VLAN", "b",
     bytes(eth(B_MAC) / Dot1Q(vlan=100) / IP(src="10.1.0.6", dst="8.8.8.8") / UDP()), None),
    ("undeclared VLAN", "b",
     bytes(eth(B_MAC) / Dot1Q(vlan=300) / IP(src="10.1.0.6", dst="8.8.8.8") / UDP()),
     DropReason.VLAN_NOT_ALLOWED),
    ("QinQ with declared VIDs", "b",
     bytes(eth(B_MAC) / Dot1Q(vlan=100) / Dot1Q(vlan=200) / IP(src="10.1.0.6", dst="8.8.8.8")
           / UDP()), DropReason.VLAN_NOT_ALLOWED),
    ("declared VLAN, spoofed source", "b",
     bytes(eth(B_MAC) / Dot1Q(vlan=100) / IP(src="10.1.0.7", dst="8.8.8.8") / UDP()),
     DropReason.SPOOFED_SRC_IP),
    # allowed_addresses
    ("allowed CIDR with the port MAC", "c",
     udp(C_MAC, GW_MAC, "10.9.200.1", "8.8.8.8", 1, 2), None),
    ("allowed MAC with the port's address", "c",
     udp("02:00:00:00:00:cc", GW_MAC, "10.1.0.8", "8.8.8.8", 1, 2), None),
    ("allowed MAC with an address of another pair", "c",
     udp("02:00:00:00:00:cc", GW_MAC, "10.9.0.1", "8.8.8.8", 1, 2), DropReason.SPOOFED_SRC_IP),
    ("the pair's IP with its MAC", "c", udp("02:00:00:00:00:cd", GW_MAC, "10.8.0.1", "8.8.8.8",
                                            1, 2), None),
    ("the pair's IP with the port MAC", "c",
     udp(C_MAC, GW_MAC, "10.8.0.1", "8.8.8.8", 1, 2), DropReason.SPOOFED_SRC_IP),
    ("ARP for an allowed CIDR", "c",
     bytes(arp(C_MAC, "10.9.0.7", "10.9.0.1", src=C_MAC)), None),
    ("port_security: false sends as anyone", "open",
     udp(OTHER_MAC, GW_MAC, "10.1.0.4", "8.8.8.8", 1, 2), None),
    ("port_security: false sends ARP as anyone", "open", bytes(arp(src=OTHER_MAC,
                                                                   sender_mac=OTHER_MAC)), None),
]


def portsec_policy():
    return load_policy_text(POLICY, "portsec.yaml")


def case_frames():
    """The whole table twice (second copies can hit NIC entries): (time, frame, port)."""
    return [(1.0 + i * 0.01, bytes(f), port) for i, (_, port, f, _) in enumerate(CASES * 2)]


def expected_case_drops():
    expected: dict[str, int] = {}
    for _, _, _, reason in CASES:
        if reason is not None:
            expected[reason.value] = expected.get(reason.value, 0) + 2
    return expected


ARP_GOOD = bytes(arp(sender_ip="10.1.0.4", op=2, dst=B_MAC))
ARP_BAD = bytes(arp(sender_ip="10.1.0.6", op=2, dst=B_MAC))
NA_GOOD = bytes(eth(A_MAC, B_MAC) / IPv6(src="fd00::4", dst="fd00::9", hlim=255)
                / ICMPv6ND_NA(tgt="fd00::4", S=1) / ICMPv6NDOptDstLLAddr(lladdr=A_MAC))
NA_BAD = bytes(eth(A_MAC, B_MAC) / IPv6(src="fd00::4", dst="fd00::9", hlim=255)
               / ICMPv6ND_NA(tgt="fd00::1", S=1) / ICMPv6NDOptDstLLAddr(lladdr=A_MAC))
ARP_SEQUENCE = [(1.0 + i * 0.01, f, "a")
                for i, f in enumerate([ARP_GOOD, ARP_GOOD, ARP_GOOD, ARP_BAD, ARP_GOOD, ARP_BAD])]
NA_SEQUENCE = [(1.0 + i * 0.01, f, "a")
               for i, f in enumerate([NA_GOOD, NA_GOOD, NA_BAD, NA_GOOD, NA_BAD])]
# An uplink frame to a's MAC for an address a does not own makes an eager reply flow from
# that address: it must drop like the host's check would, on the NIC too.
_INBOUND = udp(ROUTER_MAC, A_MAC, "8.8.8.8", "10.1.0.77", 53, 5000)
_REPLY = udp(A_MAC, ROUTER_MAC, "10.1.0.77", "8.8.8.8", 5000, 53)
EAGER_REPLY_SEQUENCE = [(1.0, _INBOUND, UPLINK), (1.1, _REPLY, "a"), (1.2, _REPLY, "a"),
                        (1.3, _REPLY, "a")]
