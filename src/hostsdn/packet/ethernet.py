"""Ethernet II with any number of 802.1Q / 802.1ad tags, and ARP."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    ETH_P_8021Q,
    ETH_P_IPV4,
    VLAN_TPIDS,
)
from .malformed import Reason, truncated

ETH_HEADER_LEN = 14

ARP_REQUEST = 1
ARP_REPLY = 2

_TAG = struct.Struct("!HH")
_ARP_FIXED = struct.Struct("!HHBBH")


@dataclass(frozen=True, slots=True)
class VlanTag:
    """One 802.1Q (C-tag) or 802.1ad (S-tag) VLAN tag."""

    vid: int
    """VLAN identifier, 12 bits."""
    pcp: int = 0
    """Priority code point, 3 bits."""
    dei: int = 0
    """Drop eligible indicator, 1 bit."""
    tpid: int = ETH_P_8021Q
    """Tag protocol identifier: 0x8100 (802.1Q) or 0x88A8 (802.1ad)."""


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """Ethernet II header with its VLAN tags."""

    dst: bytes
    """Destination MAC, 6 bytes."""
    src: bytes
    """Source MAC, 6 bytes."""
    tags: tuple[VlanTag, ...] = ()
    """VLAN tags, outermost first."""
    ethertype: int = ETH_P_IPV4
    """Ethertype after the tags."""

    @property
    def header_length(self) -> int:
        """14 bytes plus 4 per tag."""
        return ETH_HEADER_LEN + 4 * len(self.tags)


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An ARP packet (RFC 826); addresses kept as bytes of their declared lengths."""

    opcode: int
    """1 = request, 2 = reply."""
    sender_hw: bytes
    """Sender hardware address (6 bytes for Ethernet)."""
    sender_proto: bytes
    """Sender protocol address (4 bytes for IPv4)."""
    target_hw: bytes
    """Target hardware address."""
    target_proto: bytes
    """Target protocol address."""
    hw_type: int = 1
    """Hardware type, 1 = Ethernet."""
    proto_type: int = ETH_P_IPV4
    """Protocol type, 0x0800 = IPv4."""

    @property
    def length(self) -> int:
        """Bytes on the wire."""
        return 8 + 2 * (len(self.sender_hw) + len(self.sender_proto))


def mac_to_bytes(mac: str | bytes) -> bytes:
    """``"aa:bb:cc:dd:ee:ff"`` (or ``-`` separated, or 6 bytes) -> 6 bytes."""
    if isinstance(mac, bytes | bytearray):
        if len(mac) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
        return bytes(mac)
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def mac_to_str(mac: bytes) -> str:
    """6 bytes -> ``"aa:bb:cc:dd:ee:ff"``."""
    return mac.hex(":")


def pull_ethernet(data: bytes, end: int) -> tuple[EthernetHeader, int]:
    """Parse the Ethernet header and tags of ``data[:end]``; return it and the L3 offset."""
    if end < ETH_HEADER_LEN:
        raise truncated("Ethernet header", end, ETH_HEADER_LEN, Reason.TRUNCATED_ETHERNET)
    (ethertype,) = struct.unpack_from("!H", data, 12)
    offset = ETH_HEADER_LEN
    tags: list[VlanTag] = []
    while ethertype in VLAN_TPIDS:
        if end - offset < 4:
            raise truncated("VLAN tag", end - offset, 4, Reason.TRUNCATED_VLAN)
        tci, next_type = _TAG.unpack_from(data, offset)
        tags.append(VlanTag(vid=tci & 0xFFF, pcp=tci >> 13, dei=(tci >> 12) & 1, tpid=ethertype))
        ethertype = next_type
        offset += 4
    return EthernetHeader(bytes(data[0:6]), bytes(data[6:12]), tuple(tags), ethertype), offset


def push_ethernet(header: EthernetHeader) -> bytes:
    """Serialise the Ethernet header and its tags."""
    if len(header.dst) != 6 or len(header.src) != 6:
        raise ValueError("Ethernet addresses are 6 bytes")
    parts = [header.dst, header.src]
    for tag in header.tags:
        tci = (tag.pcp & 7) << 13 | (tag.dei & 1) << 12 | (tag.vid & 0xFFF)
        parts.append(struct.pack("!HH", tag.tpid, tci))
    parts.append(struct.pack("!H", header.ethertype))
    return b"".join(parts)


def pull_arp(data: bytes, offset: int, end: int) -> tuple[ArpPacket, int]:
    """Parse an ARP packet at ``offset``; return it and the offset just past it."""
    available = end - offset
    if available < 8:
        raise truncated("ARP header", available, 8, Reason.TRUNCATED_ARP)
    hw_type, proto_type, hw_len, proto_len, opcode = _ARP_FIXED.unpack_from(data, offset)
    need = 8 + 2 * (hw_len + proto_len)
    if available < need:
        raise truncated("ARP packet", available, need, Reason.TRUNCATED_ARP)
    p = offset + 8
    sender_hw = bytes(data[p:p + hw_len])
    p += hw_len
    sender_proto = bytes(data[p:p + proto_len])
    p += proto_len
    target_hw = bytes(data[p:p + hw_len])
    p += hw_len
    target_proto = bytes(data[p:p + proto_len])
    arp = ArpPacket(opcode, sender_hw, sender_proto, target_hw, target_proto, hw_type, proto_type)
    return arp, offset + need


def push_arp(arp: ArpPacket) -> bytes:
    """Serialise an ARP packet (lengths from the address fields)."""
    hw_len, proto_len = len(arp.sender_hw), len(arp.sender_proto)
    if len(arp.target_hw) != hw_len or len(arp.target_proto) != proto_len:
        raise ValueError("ARP sender and target addresses differ in length")
    return (_ARP_FIXED.pack(arp.hw_type, arp.proto_type, hw_len, proto_len, arp.opcode)
            + arp.sender_hw + arp.sender_proto + arp.target_hw + arp.target_proto)
