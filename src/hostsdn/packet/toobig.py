"""Path-MTU signalling the host sends to a VM: ICMP "fragmentation needed" (RFC 792 /
RFC 1191) and ICMPv6 "packet too big" (RFC 4443 / RFC 8201), quoting the VM's packet.

``l3_length(frame)`` is what an MTU limits: the frame without its Ethernet header and
VLAN tags.  ``too_big_reply`` builds the whole Ethernet frame of the answer.
"""

from __future__ import annotations

import struct

from .checksum import internet_checksum, pseudo_header_sum

ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED = 3, 4
ICMPV6_PACKET_TOO_BIG = 2
IPV4_QUOTE_LIMIT = 576
"""RFC 1812 4.3.2.3: an ICMPv4 error is at most 576 bytes (IP header included)."""
IPV6_MIN_MTU = 1280
"""RFC 4443 2.4(c): an ICMPv6 error quotes as much as fits in the minimum MTU."""
_TPIDS = (0x8100, 0x88A8)


def l2_length(frame: bytes) -> int:
    """Ethernet header length of ``frame``: 14 plus 4 per VLAN tag."""
    at = 12
    while len(frame) >= at + 2 and struct.unpack_from("!H", frame, at)[0] in _TPIDS:
        at += 4
    return at + 2


def l3_length(frame: bytes) -> int:
    """Bytes an MTU counts: the frame after its Ethernet header and tags."""
    return max(0, len(frame) - l2_length(frame))


def dont_fragment(frame: bytes) -> bool:
    """True for an IPv4 packet with DF set and for IPv6 (routers never fragment it)."""
    at = l2_length(frame)
    ethertype = struct.unpack_from("!H", frame, at - 2)[0]
    if ethertype == 0x86DD:
        return True
    return ethertype == 0x0800 and len(frame) >= at + 8 and bool(frame[at + 6] & 0x40)


def too_big_reply(frame: bytes, mtu: int, src_mac: bytes, src_ip: int | None) -> bytes | None:
    """The ICMP(v6) too-big answer to ``frame`` (sent by a VM) telling it ``mtu``: from
    ``src_mac`` to the frame's source MAC, from ``src_ip`` (None: the packet's own
    destination address) to its source address, untagged.  None for non-IP frames."""
    at = l2_length(frame)
    ethertype = struct.unpack_from("!H", frame, at - 2)[0]
    packet = frame[at:]
    eth = frame[6:12] + src_mac
    if ethertype == 0x0800 and len(packet) >= 20:
        src, dst = struct.unpack_from("!II", packet, 12)
        quote = packet[:IPV4_QUOTE_LIMIT - 28]
        icmp = struct.pack("!BBHHH", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0,
                           min(mtu, 0xFFFF)) + quote
        icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
        me = dst if src_ip is None else src_ip
        header = struct.pack("!BBHHHBBHII", 0x45, 0xC0, 20 + len(icmp), 0, 0, 64, 1, 0, me,
                             src)
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        return eth + b"\x08\x00" + header + icmp
    if ethertype == 0x86DD and len(packet) >= 40:
        src = int.from_bytes(packet[8:24], "big")
        dst = int.from_bytes(packet[24:40], "big")
        me = dst if src_ip is None else src_ip
        quote = packet[:IPV6_MIN_MTU - 48]
        icmp = struct.pack("!BBHI", ICMPV6_PACKET_TOO_BIG, 0, 0, mtu) + quote
        csum = internet_checksum(icmp, pseudo_header_sum(me, src, 58, len(icmp), 6))
        icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
        header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 64) + me.to_bytes(16, "big") \
            + src.to_bytes(16, "big")
        return eth + b"\x86\xdd" + header + icmp
    return None
