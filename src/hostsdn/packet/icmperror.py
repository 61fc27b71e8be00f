"""ICMP/ICMPv6 error messages: what they quote, and the rewrites a NAT owes them.

An error (destination unreachable incl. fragmentation needed / packet too big, time
exceeded, parameter problem, and for IPv4 source quench and redirect: the types Linux
``icmp_is_err`` / ``icmpv6_error`` treat as errors) quotes the start of the packet that
caused it: its IP header and at least 8 bytes of what follows (RFC 792, RFC 4443 2.4(c)
quotes as much as fits).  ``parse_icmp_error`` reads that quote leniently (it is
truncated by definition) into a ``FlowKey`` of the quoted packet; for a quoted VXLAN
packet with enough bytes, the key carries the inner packet too.

``translate_quote`` is Linux ``nf_nat_icmp_reply_translation``'s rewrite of the quoted
packet: its addresses and ports, its IPv4 header checksum, its L4 checksum where the
quote holds it (TCP: the whole 20-byte header, as Linux's ``tcp_manip_pkt`` asks; UDP
unless 0; ICMP/ICMPv6 echo), all with RFC 1624 incremental updates, then the outer ICMP
checksum by the difference of the quote's bytes (Linux recomputes it; for a correct
checksum both give the same bytes, and a wrong one stays as wrong).

``tunnel_pmtu_error`` builds, from an underlay frag-needed / packet-too-big about a VXLAN
packet, the error the inner sender is owed, as Linux ``iptunnel_pmtud_build_icmp(v6)``
does: from the inner destination to the inner source, with the inner packet's TTL / hop
limit, the MTU less the encapsulation overhead, quoting the inner packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .checksum import (
    csum_replace16,
    csum_replace32,
    csum_replace_bytes,
    internet_checksum,
    pseudo_header_sum,
)
from .constants import (
    ETH_P_IPV4,
    ETH_P_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VLAN_TPIDS,
    VXLAN_PORT,
)
from .key import FRAG_FIRST, FRAG_LATER, FRAG_NONE, NO_VNI, FlowKey

__all__ = [
    "ICMP_ERROR_TYPES",
    "PMTU_MIN",
    "IcmpError",
    "is_icmp_error",
    "parse_icmp_error",
    "translate_quote",
    "tunnel_pmtu_error",
]

ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
"""IPv4 error types (Linux ``icmp_is_err``): unreachable, source quench, redirect, time
exceeded, parameter problem.  ICMPv6: every type below 128 (RFC 4443 2.1)."""
ICMP_FRAG_NEEDED = (3, 4)
ICMPV6_PACKET_TOO_BIG = 2
PMTU_MIN = {4: 576, 6: 1280}
"""Below this inner MTU no frag-needed is built for the inner sender (Linux
``iptunnel_pmtud_check_icmp``: 576; IPv6: ``IPV6_MIN_MTU``)."""
_ZERO_MAC = b"\x00" * 6
_ECHO = {4: (0, 8), 6: (128, 129)}
_u16 = struct.Struct("!H")
_u32 = struct.Struct("!I")


def is_icmp_error(key: FlowKey) -> bool:
    """The key is an ICMP/ICMPv6 error message (not a fragment of one)."""
    if key.frag == FRAG_LATER:
        return False
    if key.proto == IPPROTO_ICMP and key.ip_version == 4:
        return key.dst_port >> 8 in ICMP_ERROR_TYPES
    return key.proto == IPPROTO_ICMPV6 and key.ip_version == 6 and key.dst_port >> 8 < 128


@dataclass(frozen=True, slots=True)
class IcmpError:
    """Where the parts of an error message are in its frame (absolute offsets)."""

    version: int
    """IP version of the error message."""
    l3: int
    """Offset of the error's IP header."""
    icmp: int
    """Offset of its ICMP header."""
    end: int
    """End of its IP datagram."""
    quote: int
    """Offset of the quoted IP header (``icmp + 8``)."""
    quoted: FlowKey
    """Key of the quoted packet (no MACs; ``inner`` for a quoted VXLAN packet)."""
    quoted_l4: int
    """Offset of the quoted L4 header (-1: none, a later fragment)."""
    inner_l3: int = -1
    """Quoted VXLAN packet: offset of its inner IP header (-1: none)."""


def parse_icmp_error(data: bytes | bytearray, l3: int, icmp: int, end: int,
                     version: int) -> IcmpError | None:
    """The error message whose IP header is at ``l3`` and ICMP header at ``icmp``; None
    when its quote is too short or not a packet a connection could own (an error about an
    error, a later fragment, a quote without 8 bytes of L4)."""
    quote = icmp + 8
    parsed = _quoted_ip(data, quote, end, version)
    if parsed is None:
        return None
    key, l4 = parsed
    if key.frag == FRAG_LATER:
        return None
    inner_l3 = -1
    if key.proto == IPPROTO_UDP and key.dst_port == VXLAN_PORT and end - l4 >= 16 \
            and data[l4 + 8] & 0x08:
        vni = _u32.unpack_from(data, l4 + 12)[0] >> 8
        inner = _quoted_frame(data, l4 + 16, end)
        if inner is not None:
            inner_key, inner_l3 = inner
            key = key._replace(vni=vni, inner=inner_key)
    return IcmpError(version, l3, icmp, end, quote, key, l4, inner_l3)


def _quoted_frame(data: bytes | bytearray, off: int, end: int) -> tuple[FlowKey, int] | None:
    """An Ethernet frame quoted inside a quoted VXLAN packet: (key, offset of its IP)."""
    if end - off < 14:
        return None
    dst, src = bytes(data[off:off + 6]), bytes(data[off + 6:off + 12])
    ethertype = _u16.unpack_from(data, off + 12)[0]
    at = off + 14
    vlans = []
    while ethertype in VLAN_TPIDS:
        if end - at < 4:
            return None
        vlans.append(_u16.unpack_from(data, at)[0] & 0xFFF)
        ethertype = _u16.unpack_from(data, at + 2)[0]
        at += 4
    version = {ETH_P_IPV4: 4, ETH_P_IPV6: 6}.get(ethertype)
    if version is None:
        return None
    parsed = _quoted_ip(data, at, end, version)
    if parsed is None or parsed[0].frag == FRAG_LATER:
        return None
    return parsed[0]._replace(vlans=tuple(vlans), src_mac=src, dst_mac=dst), at


def _quoted_ip(data: bytes | bytearray, q: int, end: int,
               version: int) -> tuple[FlowKey, int] | None:
    """The key of a quoted IP packet (truncated after 8 bytes of L4 at least) and the
    offset of its L4 header."""
    if version == 4:
        if end - q < 20 or data[q] >> 4 != 4:
            return None
        ihl = (data[q] & 0xF) * 4
        if ihl < 20 or end - q < ihl:
            return None
        dscp = data[q + 1] >> 2
        frag_word = _u16.unpack_from(data, q + 6)[0]
        proto = data[q + 9]
        src = _u32.unpack_from(data, q + 12)[0]
        dst = _u32.unpack_from(data, q + 16)[0]
        frag = FRAG_LATER if frag_word & 0x1FFF else FRAG_FIRST if frag_word & 0x2000 \
            else FRAG_NONE
        l4 = q + ihl
        ethertype, icmp_proto = ETH_P_IPV4, IPPROTO_ICMP
    else:
        if end - q < 40 or data[q] >> 4 != 6:
            return None
        dscp = (_u16.unpack_from(data, q)[0] >> 6) & 0x3F
        proto = data[q + 6]
        src = int.from_bytes(data[q + 8:q + 24], "big")
        dst = int.from_bytes(data[q + 24:q + 40], "big")
        l4 = q + 40
        frag = FRAG_NONE
        while proto in (0, 43, 44, 60):
            if end - l4 < 8:
                return None
            if proto == 44:
                offset_word = _u16.unpack_from(data, l4 + 2)[0]
                proto = data[l4]
                l4 += 8
                if offset_word & 0xFFF8:
                    frag = FRAG_LATER
                    break
                if offset_word & 1:
                    frag = FRAG_FIRST
                continue
            proto, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
        ethertype, icmp_proto = ETH_P_IPV6, IPPROTO_ICMPV6
    sport = dport = 0
    if frag != FRAG_LATER:
        if end - l4 < 8:
            return None                      # RFC 792: at least 8 bytes of the datagram
        if proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP):
            sport, dport = struct.unpack_from("!HH", data, l4)
        elif proto == icmp_proto:
            icmp_type = data[l4]
            if icmp_type not in _ECHO[version]:
                return None                  # an error about an error (or other ICMP)
            dport = icmp_type << 8 | data[l4 + 1]
            sport = _u16.unpack_from(data, l4 + 4)[0]
    key = FlowKey((), _ZERO_MAC, _ZERO_MAC, ethertype, version, src, dst, proto, dscp, sport,
                  dport, frag, NO_VNI, None)
    return key, l4


def _replace_field(buf: bytearray, at: int, new: bytes, csums: list[tuple[int, bool]]) -> None:
    """Write ``new`` at ``at`` and update each ``(checksum offset, is_udp)``."""
    old = bytes(buf[at:at + len(new)])
    if old == new:
        return
    for csum_at, is_udp in csums:
        value = _u16.unpack_from(buf, csum_at)[0]
        if is_udp and value == 0:
            continue                         # no UDP checksum: stays none
        if len(new) == 2:
            value = csum_replace16(value, _u16.unpack_from(old)[0], _u16.unpack_from(new)[0])
        elif len(new) == 4:
            value = csum_replace32(value, _u32.unpack_from(old)[0], _u32.unpack_from(new)[0])
        else:
            value = csum_replace_bytes(value, old, new)
        _u16.pack_into(buf, csum_at, 0xFFFF if is_udp and value == 0 else value)
    buf[at:at + len(new)] = new


def translate_quote(data: bytes | bytearray, err: IcmpError, *, src_ip: int, dst_ip: int,
                    src_port: int, dst_port: int) -> bytearray:
    """The error with its quoted packet's addresses and ports (echo: the identifier is
    ``src_port``) replaced, every checksum updated incrementally (see module doc)."""
    buf = bytearray(data)
    q, l4, end, version = err.quote, err.quoted_l4, err.end, err.quoted.ip_version
    before = bytes(buf[q:min(end, max(l4, q) + 20)])
    proto = err.quoted.proto
    # the quoted L4 checksum, where the quote holds it
    l4_csum: list[tuple[int, bool]] = []
    pseudo = False
    if proto == IPPROTO_TCP and end - l4 >= 20:
        l4_csum, pseudo = [(l4 + 16, False)], True
    elif proto == IPPROTO_UDP:
        l4_csum, pseudo = [(l4 + 6, True)], True
    elif proto == IPPROTO_ICMP and version == 4:
        l4_csum = [(l4 + 2, False)]
    elif proto == IPPROTO_ICMPV6:
        l4_csum, pseudo = [(l4 + 2, False)], True
    size = 4 if version == 4 else 16
    src_at, dst_at = (q + 12, q + 16) if version == 4 else (q + 8, q + 24)
    ip_csums = [(q + 10, False)] if version == 4 else []
    for at, value in ((src_at, src_ip), (dst_at, dst_ip)):
        _replace_field(buf, at, value.to_bytes(size, "big"),
                       ip_csums + (l4_csum if pseudo else []))
    if proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP):
        # SCTP's CRC32c covers the whole (absent) packet: left as it was
        csums = l4_csum if proto != IPPROTO_SCTP else []
        _replace_field(buf, l4, _u16.pack(src_port), csums)
        _replace_field(buf, l4 + 2, _u16.pack(dst_port), csums)
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        _replace_field(buf, l4 + 4, _u16.pack(src_port), l4_csum)
    after = bytes(buf[q:q + len(before)])
    if before != after:
        if len(before) & 1:
            before, after = before + b"\0", after + b"\0"
        icmp_csum = err.icmp + 2
        value = _u16.unpack_from(buf, icmp_csum)[0]
        _u16.pack_into(buf, icmp_csum, csum_replace_bytes(value, before, after))
    return buf


def tunnel_pmtu_error(data: bytes | bytearray, err: IcmpError) -> bytes | str:
    """The frag-needed / packet-too-big the sender of the quoted VXLAN packet's inner
    packet is owed, as an Ethernet frame (from the inner destination's MAC to the inner
    source's); or why there is none: ``"not_pmtu"`` (another error: Linux's VXLAN does not
    pass those on either), ``"below_minimum"`` (the inner MTU is under ``PMTU_MIN``, or an
    IPv4 inner packet without DF, as Linux ``iptunnel_pmtud_check_icmp``)."""
    icmp_type, code = data[err.icmp], data[err.icmp + 1]
    if err.version == 4 and (icmp_type, code) == ICMP_FRAG_NEEDED:
        mtu = _u16.unpack_from(data, err.icmp + 6)[0]
    elif err.version == 6 and icmp_type == ICMPV6_PACKET_TOO_BIG:
        mtu = _u32.unpack_from(data, err.icmp + 4)[0]
    else:
        return "not_pmtu"
    inner = err.quoted.inner
    assert inner is not None and err.inner_l3 >= 0
    ip = err.inner_l3
    mtu -= ip - err.quote                    # outer IP + UDP + VXLAN + inner Ethernet
    version = inner.ip_version
    if mtu < PMTU_MIN[version]:
        return "below_minimum"
    quoted = bytes(data[ip:err.end])
    eth = inner.src_mac + inner.dst_mac      # to the inner source, from its destination
    if version == 4:
        if _u16.unpack_from(data, ip + 6)[0] != 0x4000:
            return "below_minimum"           # Linux: frag_off must be exactly DF
        quoted = quoted[:576 - 28]
        icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted)
        _u16.pack_into(icmp, 2, internet_checksum(icmp))
        header = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(icmp), 0, 0x4000,
                                       data[ip + 8], IPPROTO_ICMP, 0, inner.dst_ip,
                                       inner.src_ip))
        _u16.pack_into(header, 10, internet_checksum(header))
        return eth + _u16.pack(ETH_P_IPV4) + bytes(header) + bytes(icmp)
    quoted = quoted[:1280 - 48]
    icmp = bytearray(struct.pack("!BBHI", ICMPV6_PACKET_TOO_BIG, 0, 0, mtu) + quoted)
    _u16.pack_into(icmp, 2, internet_checksum(
        icmp, pseudo_header_sum(inner.dst_ip, inner.src_ip, IPPROTO_ICMPV6, len(icmp), 6)))
    header6 = struct.pack("!IHBB", 6 << 28, len(icmp), IPPROTO_ICMPV6, data[ip + 7]) + \
        inner.dst_ip.to_bytes(16, "big") + inner.src_ip.to_bytes(16, "big")
    return eth + _u16.pack(ETH_P_IPV6) + header6 + bytes(icmp)
