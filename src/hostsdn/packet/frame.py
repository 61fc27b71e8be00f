"""A whole frame: ``parse_frame`` (bytes -> Frame) and ``build_frame`` (Frame -> bytes).

This is the slow, complete path (dataclasses for every header).  The per-packet fast
path is ``hostsdn.packet.fastpath`` (flow keys) and ``hostsdn.packet.rewrite``
(transpositions); both raise the same ``PacketError`` for the same input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hostsdn.errors import PacketError

from . import malformed
from .checksum import internet_checksum, pseudo_header_sum, sctp_checksum
from .constants import (
    ETH_P_ARP,
    ETH_P_IPV4,
    ETH_P_IPV6,
    ETH_P_TEB,
    IPPROTO_GRE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VXLAN_PORT,
)
from .ethernet import (
    ArpPacket,
    EthernetHeader,
    pull_arp,
    pull_ethernet,
    push_arp,
    push_ethernet,
)
from .ipv4 import Ipv4Header, pull_ipv4, push_ipv4
from .ipv6 import IPV6_HEADER_LEN, Ipv6Header, pull_ipv6, push_ipv6
from .key import FRAG_FIRST, FRAG_LATER, FRAG_NONE, NO_VNI, FlowKey
from .l4 import (
    IcmpHeader,
    SctpHeader,
    TcpHeader,
    UdpHeader,
    pull_icmp,
    pull_sctp,
    pull_tcp,
    pull_udp,
    push_icmp,
    push_sctp,
    push_tcp,
    push_udp,
)
from .tunnel import GreHeader, VxlanHeader, pull_gre, pull_vxlan, push_gre, push_vxlan

L3Header = Ipv4Header | Ipv6Header | ArpPacket
L4Header = TcpHeader | UdpHeader | SctpHeader | IcmpHeader
TunnelHeader = VxlanHeader | GreHeader


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed Ethernet frame.

    Wire layout: ``eth | l3 | l4 | tunnel | inner (built) | payload | trailer``.
    Offsets are positions in the parsed bytes (those of an inner frame are relative to
    the inner frame's first byte, which is the outer ``payload_offset``); they are
    derived data and take no part in ``==``.
    """

    eth: EthernetHeader
    """Ethernet header and VLAN tags."""
    l3: L3Header | None = None
    """IPv4/IPv6 header or ARP packet; None for other ethertypes (L2-only frames)."""
    l4: L4Header | None = None
    """TCP/UDP/SCTP/ICMP(v6) header; None without one (non-first fragments, other
    protocols)."""
    tunnel: TunnelHeader | None = None
    """VXLAN header (after the UDP header) or GRE header (the IP payload)."""
    inner: Frame | None = None
    """The encapsulated Ethernet frame of VXLAN/GRE-TEB, parsed one level deep."""
    payload: bytes = b""
    """Bytes after the last parsed header, up to the end of the UDP/IP datagram (or of
    the frame for L2-only frames); empty when ``inner`` holds the encapsulated frame."""
    trailer: bytes = b""
    """Bytes after the IP datagram / UDP datagram / ARP packet (Ethernet padding)."""
    l3_offset: int = field(default=0, compare=False)
    """Offset of the L3 header (after the VLAN tags)."""
    l4_offset: int = field(default=0, compare=False)
    """Offset of the L3 payload: the L4 header, GRE header or opaque bytes."""
    payload_offset: int = field(default=0, compare=False)
    """Offset of ``payload`` (of the encapsulated frame when ``inner`` is set)."""

    @property
    def frag(self) -> int:
        """Fragment state of the IP packet (FRAG_NONE for non-IP frames)."""
        if isinstance(self.l3, Ipv4Header | Ipv6Header):
            return self.l3.frag
        return FRAG_NONE

    @property
    def ip_end(self) -> int:
        """Offset just past the IP datagram (ARP packet, or frame for L2-only frames)."""
        if isinstance(self.l3, Ipv4Header):
            return self.l3_offset + self.l3.total_length
        if isinstance(self.l3, Ipv6Header):
            return self.l3_offset + IPV6_HEADER_LEN + self.l3.payload_length
        if isinstance(self.l3, ArpPacket):
            return self.l3_offset + self.l3.length
        return self.l3_offset + len(self.payload)

    @property
    def is_tunnel(self) -> bool:
        """True for VXLAN and version-0 GRE carrying Ethernet (NVGRE) frames."""
        return is_ethernet_tunnel(self.tunnel)


def is_ethernet_tunnel(tunnel: TunnelHeader | None) -> bool:
    """VXLAN, or version-0 GRE with protocol 0x6558 (transparent Ethernet bridging)."""
    if isinstance(tunnel, VxlanHeader):
        return True
    return isinstance(tunnel, GreHeader) and tunnel.protocol == ETH_P_TEB and tunnel.version == 0


def parse_frame(data: bytes | bytearray | memoryview, *, inner: bool = True) -> Frame:
    """Parse an Ethernet frame.

    Tunnel headers (VXLAN on UDP port 4789, GRE) are always parsed; with ``inner`` the
    Ethernet frame they carry is parsed too (with ``inner=False``: one level only),
    else it stays in ``payload``.  Checksums are not verified.  Raises ``PacketError``
    (see ``malformed.Reason``) on malformed or truncated input; errors of the inner
    frame carry the prefix ``"inner frame: "``.
    """
    data = bytes(data)
    end = len(data)
    eth, l3_offset = pull_ethernet(data, end)
    ethertype = eth.ethertype
    if ethertype == ETH_P_ARP:
        arp, arp_end = pull_arp(data, l3_offset, end)
        return Frame(eth, arp, trailer=data[arp_end:], l3_offset=l3_offset,
                     l4_offset=arp_end, payload_offset=arp_end)
    if ethertype not in (ETH_P_IPV4, ETH_P_IPV6):
        return Frame(eth, payload=data[l3_offset:], l3_offset=l3_offset, l4_offset=l3_offset,
                     payload_offset=l3_offset)

    ip: Ipv4Header | Ipv6Header
    if ethertype == ETH_P_IPV4:
        ip, ip_end = pull_ipv4(data, l3_offset, end)
        l4_offset = l3_offset + ip.header_length
        icmp_proto = IPPROTO_ICMP
    else:
        ip, l4_offset, ip_end = pull_ipv6(data, l3_offset, end)
        icmp_proto = IPPROTO_ICMPV6
    frag = ip.frag
    proto = ip.proto
    l4: L4Header | None = None
    tunnel: TunnelHeader | None = None
    payload_offset = l4_offset
    body_end = ip_end
    if frag != FRAG_LATER:
        if proto == IPPROTO_TCP:
            l4, payload_offset = pull_tcp(data, l4_offset, ip_end)
        elif proto == IPPROTO_UDP:
            l4, body_end = pull_udp(data, l4_offset, ip_end, first_fragment=frag == FRAG_FIRST)
            payload_offset = l4_offset + 8
            if frag == FRAG_NONE and l4.dst_port == VXLAN_PORT:
                tunnel, payload_offset = pull_vxlan(data, payload_offset, body_end)
        elif proto == IPPROTO_SCTP:
            l4, payload_offset = pull_sctp(data, l4_offset, ip_end)
        elif proto == icmp_proto:
            l4, payload_offset = pull_icmp(data, l4_offset, ip_end, v6=icmp_proto == 58)
        elif proto == IPPROTO_GRE and frag == FRAG_NONE:
            parsed = pull_gre(data, l4_offset, ip_end)
            if parsed is not None:
                tunnel, payload_offset = parsed
    inner_frame: Frame | None = None
    payload = data[payload_offset:body_end]
    if inner and is_ethernet_tunnel(tunnel):
        try:
            inner_frame = parse_frame(payload, inner=False)
        except PacketError as error:
            raise malformed.inner(error) from None
        payload = b""
    return Frame(eth, ip, l4, tunnel, inner_frame, payload, data[body_end:], l3_offset,
                 l4_offset, payload_offset)


def _l4_checksum(header: bytes, body: bytes, ip: Ipv4Header | Ipv6Header, proto: int) -> int:
    length = len(header) + len(body)
    if isinstance(ip, Ipv4Header):
        initial = pseudo_header_sum(ip.src, ip.dst, proto, length, 4)
    else:
        initial = pseudo_header_sum(ip.src, ip.final_dst, proto, length, 6)
    return internet_checksum(header + body, initial)


def build_frame(frame: Frame, *, recompute: bool = True) -> bytes:
    """Serialise a frame.

    With ``recompute`` (the default) every length and checksum is computed: IPv4 total
    length and header checksum, IPv6 payload length, UDP length, TCP/UDP/ICMP/ICMPv6
    checksums (pseudo-headers included), the SCTP CRC32c, the GRE checksum when the C
    bit is present.
    Exceptions, where the stored value is kept: a UDP checksum of 0 over IPv4 (no
    checksum); the L4 checksum of any fragment and the UDP length of a first fragment
    (they cover the whole datagram).  A computed UDP checksum of 0 is sent as 0xFFFF.
    With ``recompute=False`` the stored fields are written as they are, so that
    ``build_frame(parse_frame(b), recompute=False) == b`` for every parseable ``b``.
    """
    body = (build_frame(frame.inner, recompute=recompute) if frame.inner is not None
            else b"") + frame.payload
    tunnel = frame.tunnel
    if isinstance(tunnel, VxlanHeader):
        body = push_vxlan(tunnel) + body
    elif isinstance(tunnel, GreHeader):
        checksum = None
        if recompute and tunnel.checksum is not None:
            checksum = internet_checksum(push_gre(tunnel, 0) + body)
        body = push_gre(tunnel, checksum) + body

    ip = frame.l3
    l4 = frame.l4
    if l4 is not None:
        if not isinstance(ip, Ipv4Header | Ipv6Header):
            raise ValueError("an L4 header needs an IPv4 or IPv6 header")
        whole = recompute and ip.frag == FRAG_NONE
        if isinstance(l4, TcpHeader):
            checksum = l4.checksum
            if whole:
                checksum = _l4_checksum(push_tcp(l4, 0), body, ip, IPPROTO_TCP)
            body = push_tcp(l4, checksum) + body
        elif isinstance(l4, UdpHeader):
            length = 8 + len(body) if whole else l4.length
            checksum = l4.checksum
            if whole and not (checksum == 0 and isinstance(ip, Ipv4Header)):
                checksum = _l4_checksum(push_udp(l4, length, 0), body, ip, IPPROTO_UDP) or 0xFFFF
            body = push_udp(l4, length, checksum) + body
        elif isinstance(l4, SctpHeader):
            checksum = l4.checksum
            if whole:
                checksum = sctp_checksum(push_sctp(l4, 0) + body)
            body = push_sctp(l4, checksum) + body
        else:
            checksum = l4.checksum
            if whole:
                if l4.v6:
                    checksum = _l4_checksum(push_icmp(l4, 0), body, ip, IPPROTO_ICMPV6)
                else:
                    checksum = internet_checksum(push_icmp(l4, 0) + body)
            body = push_icmp(l4, checksum) + body

    if isinstance(ip, Ipv4Header):
        l3 = push_ipv4(ip, len(body), recompute=recompute)
    elif isinstance(ip, Ipv6Header):
        l3 = push_ipv6(ip, len(body), recompute=recompute)
    elif isinstance(ip, ArpPacket):
        l3 = push_arp(ip)
    else:
        l3 = b""
    return push_ethernet(frame.eth) + l3 + body + frame.trailer


def verify_checksums(data: bytes | bytearray | memoryview) -> dict[str, bool]:
    """Check every checksum a frame carries: ``{"ipv4": True, "tcp": False, ...}``.

    Keys: ``ipv4``, ``tcp``, ``udp``, ``sctp`` (CRC32c), ``icmp``, ``icmpv6``, ``gre``
    (when the C bit is set), and the same prefixed ``inner.`` for the encapsulated frame.  L4 checksums of
    fragments are not checked.  A UDP checksum of 0 counts as valid over IPv4 only.
    """
    data = bytes(data)
    return _verify(data, parse_frame(data), "")


def _verify(data: bytes, frame: Frame, prefix: str) -> dict[str, bool]:
    result: dict[str, bool] = {}
    ip = frame.l3
    if not isinstance(ip, Ipv4Header | Ipv6Header):
        return result
    l3, l4, ip_end = frame.l3_offset, frame.l4_offset, frame.ip_end
    if isinstance(ip, Ipv4Header):
        result[prefix + "ipv4"] = internet_checksum(data[l3:l3 + ip.header_length]) == 0
    if ip.frag == FRAG_NONE:
        header = frame.l4
        if isinstance(header, TcpHeader):
            result[prefix + "tcp"] = _l4_checksum(data[l4:ip_end], b"", ip, IPPROTO_TCP) == 0
        elif isinstance(header, UdpHeader):
            if header.checksum == 0:
                result[prefix + "udp"] = isinstance(ip, Ipv4Header)
            else:
                segment = data[l4:l4 + header.length]
                result[prefix + "udp"] = _l4_checksum(segment, b"", ip, IPPROTO_UDP) == 0
        elif isinstance(header, SctpHeader):
            result[prefix + "sctp"] = sctp_checksum(data[l4:ip_end]) == header.checksum
        elif isinstance(header, IcmpHeader):
            if header.v6:
                ok = _l4_checksum(data[l4:ip_end], b"", ip, IPPROTO_ICMPV6) == 0
                result[prefix + "icmpv6"] = ok
            else:
                result[prefix + "icmp"] = internet_checksum(data[l4:ip_end]) == 0
    if isinstance(frame.tunnel, GreHeader) and frame.tunnel.checksum is not None:
        result[prefix + "gre"] = internet_checksum(data[l4:ip_end]) == 0
    if frame.inner is not None and not prefix:
        inner_end = l4 + frame.l4.length if isinstance(frame.l4, UdpHeader) else ip_end
        inner_data = data[frame.payload_offset:inner_end]
        result.update(_verify(inner_data, frame.inner, "inner."))
    return result


def frame_key(frame: Frame, *, nested: bool = False) -> FlowKey:
    """The FlowKey of a parsed frame: the slow reference for ``fastpath.flow_key``.

    ``nested`` builds the key of an inner frame (its own tunnel is not followed).
    """
    vlans = tuple(tag.vid for tag in frame.eth.tags)
    eth = frame.eth
    ip = frame.l3
    if not isinstance(ip, Ipv4Header | Ipv6Header):
        return FlowKey(vlans, eth.src, eth.dst, eth.ethertype, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE)
    version = 4 if isinstance(ip, Ipv4Header) else 6
    dscp = ip.tos >> 2 if isinstance(ip, Ipv4Header) else ip.traffic_class >> 2
    src_port = dst_port = 0
    l4 = frame.l4
    if isinstance(l4, TcpHeader | UdpHeader | SctpHeader):
        src_port, dst_port = l4.src_port, l4.dst_port
    elif isinstance(l4, IcmpHeader):
        src_port = l4.identifier if l4.identifier is not None else 0
        dst_port = l4.type << 8 | l4.code
    vni = NO_VNI
    inner = None
    if not nested and is_ethernet_tunnel(frame.tunnel):
        tunnel = frame.tunnel
        if isinstance(tunnel, VxlanHeader):
            vni = tunnel.vni
        elif isinstance(tunnel, GreHeader):
            vni = 0 if tunnel.key is None else tunnel.key >> 8
        if frame.inner is not None:
            inner = frame_key(frame.inner, nested=True)
    return FlowKey(vlans, eth.src, eth.dst, eth.ethertype, version, ip.src, ip.dst, ip.proto,
                   dscp, src_port, dst_port, ip.frag, vni, inner)
