"""Frames for tests, built with scapy (an independent oracle of header layout)."""

from __future__ import annotations

from scapy.all import ARP, ICMP, IP, SCTP, TCP, UDP, VXLAN, Ether, Raw  # type: ignore
from scapy.layers.sctp import SCTPChunkData  # type: ignore

WEB_MAC, DB_MAC, REMOTE_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:05"
UPLINK_MAC, ROUTER_MAC, VM_GW_MAC = "02:00:00:00:ff:01", "02:00:00:00:ee:01", "02:00:00:00:fe:fe"
WEB, DB, REMOTE = "10.1.0.4", "10.1.0.6", "10.1.0.5"
UPLINK_IP, REMOTE_PA, PUBLIC = "192.0.2.1", "192.0.2.2", "203.0.113.7"


def tcp(src_mac, dst_mac, src, dst, sport, dport, flags="A", load=b"", **ip):
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst, **ip) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=1) / Raw(load))


def udp(src_mac, dst_mac, src, dst, sport, dport, load=b"q", **ip):
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst, **ip) /
                 UDP(sport=sport, dport=dport) / Raw(load))


def sctp(src_mac, dst_mac, src, dst, sport, dport, load=b"q", tag=0x5C7B0001, **ip):
    """An SCTP packet with one DATA chunk (scapy computes the CRC32c)."""
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst, **ip) /
                 SCTP(sport=sport, dport=dport, tag=tag) / SCTPChunkData(tsn=1, data=load))


def icmp_echo(src_mac, dst_mac, src, dst, ident, seq=0, reply=False):
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) /
                 ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(b"abcd"))


def vxlan_from_remote(inner: bytes, vni: int = 5001, sport: int = 51234) -> bytes:
    return bytes(Ether(src=ROUTER_MAC, dst=UPLINK_MAC) / IP(src=REMOTE_PA, dst=UPLINK_IP) /
                 UDP(sport=sport, dport=4789) / VXLAN(vni=vni, flags=0x08) / Ether(inner))


def arp_request(src_mac, src_ip, target_ip):
    return bytes(Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") /
                 ARP(op=1, hwsrc=src_mac, psrc=src_ip, pdst=target_ip))


def checksums_ok(frame: bytes) -> bool:
    """scapy recomputes every length and checksum (inner headers too): nothing may change.

    A UDP checksum of 0 over IPv4 means "none" and is kept as 0.
    """
    pkt = Ether(frame)
    lay = pkt
    while lay is not None and lay.name != "NoPayload" and not isinstance(lay, Raw):
        if isinstance(lay, (IP, TCP, ICMP, SCTP)):
            lay.chksum = None
        if isinstance(lay, UDP):
            if lay.chksum != 0:
                lay.chksum = None
            lay.len = None
        if isinstance(lay, IP):
            lay.len = None
        lay = lay.payload
    return bytes(pkt) == frame


def parse(frame: bytes):
    return Ether(frame)


def error_checksums_ok(frame: bytes) -> bool:
    """An ICMP/ICMPv6 error's own checksums (IPv4 header, ICMP; ICMPv6 with its
    pseudo-header), computed by scapy.  ``checksums_ok`` does not fit errors: scapy would
    recompute the quoted (truncated) headers' lengths and checksums too."""
    from scapy.layers.inet6 import IPv6, in6_chksum  # type: ignore
    from scapy.utils import checksum  # type: ignore

    pkt = Ether(frame)
    if IP in pkt:
        ip = pkt[IP]
        header = bytes(ip)[:ip.ihl * 4]
        icmp = bytes(ip)[ip.ihl * 4:ip.len]
        return checksum(header) == 0 and checksum(icmp) == 0
    ip6 = pkt[IPv6]
    body = bytes(ip6)[40:40 + ip6.plen]
    return in6_chksum(58, ip6, body) == 0
