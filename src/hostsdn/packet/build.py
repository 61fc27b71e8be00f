"""Convenience frame builders for tests, benchmarks and examples.

Addresses may be strings (``"10.0.0.1"``, ``"fe80::1"``, ``"02:00:00:00:00:01"``),
``ipaddress`` objects or, for MACs, 6 bytes.  The IP version follows the addresses.
Every builder returns finished bytes (``build_frame``: lengths and checksums computed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .constants import (
    ETH_P_ARP,
    ETH_P_IPV4,
    ETH_P_IPV6,
    ETH_P_TEB,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VXLAN_PORT,
)
from .ethernet import (
    ARP_REPLY,
    ARP_REQUEST,
    ArpPacket,
    EthernetHeader,
    VlanTag,
    mac_to_bytes,
)
from .frame import Frame, build_frame
from .ipv4 import IPV4_FLAG_DF, Ipv4Header
from .ipv6 import Ipv6Header
from .l4 import (
    IcmpHeader,
    SctpHeader,
    TcpHeader,
    UdpHeader,
    tcp_flags_from_letters,
)
from .tunnel import GreHeader, VxlanHeader

IpLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address
MacLike = str | bytes
VlanLike = int | Sequence[int] | None

BROADCAST_MAC = b"\xff" * 6

# A non-zero placeholder: build_frame keeps a zero UDP checksum over IPv4 as "no
# checksum" and computes any other.
_COMPUTE = 0xFFFF


def ip_to_int(address: IpLike) -> tuple[int, int]:
    """``(version, integer)`` of an address given as a string or ``ipaddress`` object."""
    parsed = ipaddress.ip_address(address) if isinstance(address, str) else address
    return parsed.version, int(parsed)


def _addresses(src_ip: IpLike, dst_ip: IpLike) -> tuple[int, int, int]:
    version, src = ip_to_int(src_ip)
    dst_version, dst = ip_to_int(dst_ip)
    if version != dst_version:
        raise ValueError(f"source {src_ip} and destination {dst_ip} differ in IP version")
    return version, src, dst


def _eth(src_mac: MacLike, dst_mac: MacLike, vlan: VlanLike, ethertype: int) -> EthernetHeader:
    if vlan is None:
        vids: Sequence[int] = ()
    elif isinstance(vlan, int):
        vids = (vlan,)
    else:
        vids = vlan
    tags = tuple(VlanTag(vid) for vid in vids)
    return EthernetHeader(mac_to_bytes(dst_mac), mac_to_bytes(src_mac), tags, ethertype)


def _ip(version: int, src: int, dst: int, proto: int, dscp: int, ttl: int,
        ecn: int = 0) -> Ipv4Header | Ipv6Header:
    if version == 4:
        return Ipv4Header(src=src, dst=dst, proto=proto, tos=dscp << 2 | ecn, ttl=ttl,
                          flags=IPV4_FLAG_DF)
    return Ipv6Header(src=src, dst=dst, proto=proto, traffic_class=dscp << 2 | ecn,
                      hop_limit=ttl)


def _ip_frame(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike, proto: int,
              vlan: VlanLike, dscp: int, ttl: int, ecn: int = 0) -> tuple[EthernetHeader,
                                                                          Ipv4Header
                                                                          | Ipv6Header]:
    version, src, dst = _addresses(src_ip, dst_ip)
    eth = _eth(src_mac, dst_mac, vlan, ETH_P_IPV4 if version == 4 else ETH_P_IPV6)
    return eth, _ip(version, src, dst, proto, dscp, ttl, ecn)


def make_tcp(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike, sport: int,
             dport: int, flags: str | int = "S", payload: bytes = b"", *,
             vlan: VlanLike = None, dscp: int = 0, ecn: int = 0, ttl: int = 64, seq: int = 0,
             ack: int = 0, window: int = 65535, options: bytes = b"") -> bytes:
    """An Ethernet/IP/TCP frame; ``flags`` as letters (``"SA"``) or a TCP_* bit mask."""
    eth, ip = _ip_frame(src_mac, dst_mac, src_ip, dst_ip, IPPROTO_TCP, vlan, dscp, ttl, ecn)
    bits = tcp_flags_from_letters(flags) if isinstance(flags, str) else flags
    tcp = TcpHeader(sport, dport, seq=seq, ack=ack, flags=bits, window=window, options=options)
    return build_frame(Frame(eth, ip, tcp, payload=payload))


def make_udp(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike, sport: int,
             dport: int, payload: bytes = b"", *, vlan: VlanLike = None, dscp: int = 0,
             ecn: int = 0, ttl: int = 64, checksum: bool = True) -> bytes:
    """An Ethernet/IP/UDP frame; ``checksum=False`` sends 0 (IPv4 only)."""
    eth, ip = _ip_frame(src_mac, dst_mac, src_ip, dst_ip, IPPROTO_UDP, vlan, dscp, ttl, ecn)
    udp = UdpHeader(sport, dport, checksum=_COMPUTE if checksum else 0)
    return build_frame(Frame(eth, ip, udp, payload=payload))


def make_sctp(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike, sport: int,
              dport: int, chunks: bytes = b"", *, verification_tag: int = 0,
              vlan: VlanLike = None, dscp: int = 0, ttl: int = 64) -> bytes:
    """An Ethernet/IP/SCTP packet: the common header (CRC32c computed), then ``chunks``
    as given (raw chunk bytes; none by default)."""
    eth, ip = _ip_frame(src_mac, dst_mac, src_ip, dst_ip, IPPROTO_SCTP, vlan, dscp, ttl)
    sctp = SctpHeader(sport, dport, verification_tag)
    return build_frame(Frame(eth, ip, sctp, payload=chunks))


def make_icmp_echo(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
                   identifier: int = 1, sequence: int = 1, payload: bytes = b"", *,
                   reply: bool = False, vlan: VlanLike = None, dscp: int = 0,
                   ttl: int = 64) -> bytes:
    """An ICMP echo request/reply, or ICMPv6 when the addresses are IPv6."""
    version, _, _ = _addresses(src_ip, dst_ip)
    v6 = version == 6
    proto = IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP
    eth, ip = _ip_frame(src_mac, dst_mac, src_ip, dst_ip, proto, vlan, dscp, ttl)
    if v6:
        icmp_type = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    else:
        icmp_type = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
    icmp = IcmpHeader(icmp_type, 0, identifier, sequence, v6)
    return build_frame(Frame(eth, ip, icmp, payload=payload))


def make_icmpv6_echo(src_mac: MacLike, dst_mac: MacLike, src_ip: IpLike, dst_ip: IpLike,
                     identifier: int = 1, sequence: int = 1, payload: bytes = b"", *,
                     reply: bool = False, vlan: VlanLike = None, dscp: int = 0,
                     ttl: int = 64) -> bytes:
    """An ICMPv6 echo request/reply (the addresses must be IPv6)."""
    if _addresses(src_ip, dst_ip)[0] != 6:
        raise ValueError("make_icmpv6_echo needs IPv6 addresses")
    return make_icmp_echo(src_mac, dst_mac, src_ip, dst_ip, identifier, sequence, payload,
                          reply=reply, vlan=vlan, dscp=dscp, ttl=ttl)


def _arp(opcode: int, src_mac: MacLike, dst_mac: MacLike, sender_ip: IpLike,
         target_mac: MacLike, target_ip: IpLike, vlan: VlanLike) -> bytes:
    version, sender, target = _addresses(sender_ip, target_ip)
    if version != 4:
        raise ValueError("ARP needs IPv4 addresses")
    eth = _eth(src_mac, dst_mac, vlan, ETH_P_ARP)
    arp = ArpPacket(opcode, mac_to_bytes(src_mac), sender.to_bytes(4, "big"),
                    mac_to_bytes(target_mac), target.to_bytes(4, "big"))
    return build_frame(Frame(eth, arp))


def make_arp_request(src_mac: MacLike, src_ip: IpLike, target_ip: IpLike, *,
                     vlan: VlanLike = None) -> bytes:
    """A broadcast ARP who-has ``target_ip`` (no padding)."""
    return _arp(ARP_REQUEST, src_mac, BROADCAST_MAC, src_ip, bytes(6), target_ip, vlan)


def make_arp_reply(src_mac: MacLike, src_ip: IpLike, dst_mac: MacLike, dst_ip: IpLike, *,
                   vlan: VlanLike = None) -> bytes:
    """An ARP reply ``src_ip is-at src_mac`` sent to ``dst_mac``/``dst_ip``."""
    return _arp(ARP_REPLY, src_mac, dst_mac, src_ip, dst_mac, dst_ip, vlan)


def make_vxlan(outer_src_mac: MacLike, outer_dst_mac: MacLike, outer_src_ip: IpLike,
               outer_dst_ip: IpLike, vni: int, inner: bytes, *, src_port: int = 49152,
               vlan: VlanLike = None, ttl: int = 64, udp_checksum: bool = False) -> bytes:
    """``inner`` (an Ethernet frame) in Ethernet/IP/UDP/VXLAN.

    The outer UDP checksum is 0 over IPv4 unless ``udp_checksum``; over IPv6 it is
    always computed.
    """
    eth, ip = _ip_frame(outer_src_mac, outer_dst_mac, outer_src_ip, outer_dst_ip,
                        IPPROTO_UDP, vlan, 0, ttl)
    checksum = _COMPUTE if udp_checksum or isinstance(ip, Ipv6Header) else 0
    udp = UdpHeader(src_port, VXLAN_PORT, checksum=checksum)
    return build_frame(Frame(eth, ip, udp, VxlanHeader(vni), payload=inner))


def make_nvgre(outer_src_mac: MacLike, outer_dst_mac: MacLike, outer_src_ip: IpLike,
               outer_dst_ip: IpLike, vsid: int, inner: bytes, *, flow_id: int = 0,
               vlan: VlanLike = None, ttl: int = 64) -> bytes:
    """``inner`` (an Ethernet frame) in Ethernet/IP/GRE(key = vsid << 8 | flow_id)."""
    eth, ip = _ip_frame(outer_src_mac, outer_dst_mac, outer_src_ip, outer_dst_ip,
                        IPPROTO_GRE, vlan, 0, ttl)
    gre = GreHeader(protocol=ETH_P_TEB, key=(vsid & 0xFFFFFF) << 8 | (flow_id & 0xFF))
    return build_frame(Frame(eth, ip, tunnel=gre, payload=inner))
