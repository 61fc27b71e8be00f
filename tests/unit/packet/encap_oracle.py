"""An independent reference for what an encap fills in per packet (RFC 7348 sec. 5
entropy, RFC 6040 ECN, DSCP copy): fields read with scapy, FNV-1a written out from its
definition (http://www.isthe.com/chongo/tech/comp/fnv/), nothing shared with hostsdn."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP


def fnv1a_32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h ^= b
        h = (h * 16777619) % 2**32
    return h


def expected_outer(inner: bytes) -> tuple[int, int]:
    """(outer UDP source port, outer TOS / traffic class) for encapsulating ``inner``."""
    p = Ether(inner)
    if IP in p:
        ip = p[IP]
        src, dst, proto, tos = (int.from_bytes(bytes(map(int, a.split("."))), "big")
                                for a in (ip.src, ip.dst)), None, ip.proto, ip.tos
        src, dst = src
        fragment = ip.flags.MF or ip.frag
    elif IPv6 in p:
        ip6 = p[IPv6]
        import ipaddress
        src, dst = int(ipaddress.IPv6Address(ip6.src)), int(ipaddress.IPv6Address(ip6.dst))
        tos = ip6.tc
        fragment = IPv6ExtHdrFragment in p
        proto = p[IPv6ExtHdrFragment].nh if fragment else ip6.nh
    else:
        data = bytes.fromhex(p.dst.replace(":", "")) + bytes.fromhex(p.src.replace(":", "")) \
            + p.type.to_bytes(2, "big")
        return 49152 + fnv1a_32(data) * 16384 // 2**32, 0
    ports = (0, 0)
    if not fragment:
        for layer in (TCP, UDP, SCTP):
            if layer in p:
                ports = (p[layer].sport, p[layer].dport)
    data = (src.to_bytes(16, "big") + dst.to_bytes(16, "big") + bytes([proto])
            + ports[0].to_bytes(2, "big") + ports[1].to_bytes(2, "big"))
    return 49152 + fnv1a_32(data) * 16384 // 2**32, tos
