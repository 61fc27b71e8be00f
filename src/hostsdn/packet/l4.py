"""TCP, UDP, SCTP, ICMP and ICMPv6 headers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import malformed
from .constants import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
)
from .malformed import Reason

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
TCP_AE = 0x100
"""Accurate-ECN (formerly NS) flag."""
TCP_FLAG_LETTERS = {"F": TCP_FIN, "S": TCP_SYN, "R": TCP_RST, "P": TCP_PSH, "A": TCP_ACK,
                    "U": TCP_URG, "E": TCP_ECE, "C": TCP_CWR, "N": TCP_AE}

ICMP_ECHO_TYPES = (ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST)
ICMPV6_ECHO_TYPES = (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)

_TCP = struct.Struct("!HHIIHHHH")
_UDP = struct.Struct("!HHHH")
_SCTP = struct.Struct("!HHII")
SCTP_HEADER_LEN = 12
_ICMP = struct.Struct("!BBH")
_ECHO = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class TcpHeader:
    """A TCP header; the data offset follows from ``options``."""

    src_port: int
    """Source port."""
    dst_port: int
    """Destination port."""
    seq: int = 0
    """Sequence number."""
    ack: int = 0
    """Acknowledgement number."""
    flags: int = 0
    """The 12 bits after the data offset: 3 reserved bits, AE, CWR ... FIN (TCP_* masks)."""
    window: int = 65535
    """Receive window."""
    urgent: int = 0
    """Urgent pointer."""
    options: bytes = b""
    """Options, a multiple of 4 bytes (at most 40)."""
    checksum: int = 0
    """Checksum as received (recomputed by build_frame unless the packet is a fragment)."""

    @property
    def header_length(self) -> int:
        """Data offset * 4."""
        return 20 + len(self.options)

    @property
    def flag_letters(self) -> str:
        """Set flags as letters in ``FSRPAUECN`` order, e.g. ``"SA"``."""
        return "".join(letter for letter, bit in TCP_FLAG_LETTERS.items() if self.flags & bit)


@dataclass(frozen=True, slots=True)
class UdpHeader:
    """A UDP header; length and checksum are recomputed by build_frame."""

    src_port: int
    """Source port."""
    dst_port: int
    """Destination port."""
    length: int = 0
    """Length as received (header + payload)."""
    checksum: int = 0
    """Checksum as received; 0 = no checksum (kept 0 by build_frame and rewrites)."""


@dataclass(frozen=True, slots=True)
class SctpHeader:
    """The SCTP common header (RFC 4960 s. 3.1); the chunks are ``Frame.payload``."""

    src_port: int
    """Source port."""
    dst_port: int
    """Destination port."""
    verification_tag: int = 0
    """Verification tag (the peer's Initiate Tag; 0 in an INIT)."""
    checksum: int = 0
    """CRC32c as received, the 4 wire bytes read big-endian (``checksum.sctp_checksum``);
    recomputed by build_frame unless the packet is a fragment."""


@dataclass(frozen=True, slots=True)
class IcmpHeader:
    """An ICMP (``v6=False``) or ICMPv6 (``v6=True``) header.

    Echo request/reply headers are 8 bytes and carry ``identifier``/``sequence``; any
    other message's header is the 4 bytes type/code/checksum and the rest of its
    header (unused word, MTU, ...) is part of ``Frame.payload``.
    """

    type: int
    """Message type."""
    code: int
    """Message code."""
    identifier: int | None = None
    """Echo identifier; None for non-echo messages."""
    sequence: int | None = None
    """Echo sequence number; None for non-echo messages."""
    v6: bool = False
    """True for ICMPv6 (protocol 58, checksum over the IPv6 pseudo-header)."""
    checksum: int = 0
    """Checksum as received."""

    @property
    def is_echo(self) -> bool:
        """True for echo request/reply."""
        return is_echo_type(self.type, self.v6)

    @property
    def header_length(self) -> int:
        """8 for echo request/reply, else 4."""
        return 8 if self.is_echo else 4


def is_echo_type(icmp_type: int, v6: bool) -> bool:
    """True when ``icmp_type`` is an echo request/reply of ICMP (or ICMPv6 if ``v6``)."""
    return icmp_type in (ICMPV6_ECHO_TYPES if v6 else ICMP_ECHO_TYPES)


def tcp_flags_from_letters(letters: str) -> int:
    """``"SA"`` -> TCP_SYN | TCP_ACK."""
    flags = 0
    for letter in letters.upper():
        if letter not in TCP_FLAG_LETTERS:
            raise ValueError(f"unknown TCP flag letter {letter!r} (use FSRPAUECN)")
        flags |= TCP_FLAG_LETTERS[letter]
    return flags


def pull_tcp(data: bytes, offset: int, end: int) -> tuple[TcpHeader, int]:
    """Parse a TCP header at ``offset``; return it and the payload offset."""
    available = end - offset
    if available < 20:
        raise malformed.truncated("TCP header", available, 20, Reason.TRUNCATED_TCP)
    sport, dport, seq, ack, word, window, checksum, urgent = _TCP.unpack_from(data, offset)
    data_offset = word >> 12
    if data_offset < 5:
        raise malformed.tcp_bad_data_offset(data_offset)
    header_length = data_offset * 4
    if header_length > available:
        raise malformed.tcp_long_header(header_length, available)
    options = bytes(data[offset + 20:offset + header_length])
    return TcpHeader(sport, dport, seq, ack, word & 0xFFF, window, urgent, options,
                     checksum), offset + header_length


def push_tcp(header: TcpHeader, checksum: int) -> bytes:
    """Serialise with the given checksum."""
    if len(header.options) % 4 or len(header.options) > 40:
        raise ValueError("TCP options must be a multiple of 4 bytes, at most 40")
    word = (header.header_length // 4) << 12 | (header.flags & 0xFFF)
    return _TCP.pack(header.src_port, header.dst_port, header.seq, header.ack, word,
                     header.window, checksum, header.urgent) + header.options


def pull_udp(data: bytes, offset: int, end: int, *,
             first_fragment: bool = False) -> tuple[UdpHeader, int]:
    """Parse a UDP header at ``offset``; return it and the end of the UDP datagram.

    In a first fragment the length is that of the whole datagram (it may exceed
    ``end``): the fragment's UDP payload runs to ``end``, which is returned.
    """
    available = end - offset
    if available < 8:
        raise malformed.truncated("UDP header", available, 8, Reason.TRUNCATED_UDP)
    sport, dport, length, checksum = _UDP.unpack_from(data, offset)
    if length < 8:
        raise malformed.udp_short_length(length)
    if first_fragment:
        return UdpHeader(sport, dport, length, checksum), end
    if length > available:
        raise malformed.udp_long_length(length, available)
    return UdpHeader(sport, dport, length, checksum), offset + length


def push_udp(header: UdpHeader, length: int, checksum: int) -> bytes:
    """Serialise with the given length and checksum."""
    return _UDP.pack(header.src_port, header.dst_port, length, checksum)


def pull_sctp(data: bytes, offset: int, end: int) -> tuple[SctpHeader, int]:
    """Parse the SCTP common header at ``offset``; return it and the offset of the chunks."""
    available = end - offset
    if available < SCTP_HEADER_LEN:
        raise malformed.truncated("SCTP header", available, SCTP_HEADER_LEN,
                                  Reason.TRUNCATED_SCTP)
    sport, dport, tag, checksum = _SCTP.unpack_from(data, offset)
    return SctpHeader(sport, dport, tag, checksum), offset + SCTP_HEADER_LEN


def push_sctp(header: SctpHeader, checksum: int) -> bytes:
    """Serialise with the given checksum (the field's big-endian value)."""
    return _SCTP.pack(header.src_port, header.dst_port, header.verification_tag, checksum)


def pull_icmp(data: bytes, offset: int, end: int, *, v6: bool) -> tuple[IcmpHeader, int]:
    """Parse an ICMP/ICMPv6 header at ``offset``; return it and the payload offset."""
    name = "ICMPv6" if v6 else "ICMP"
    available = end - offset
    if available < 4:
        raise malformed.truncated(f"{name} header", available, 4, Reason.TRUNCATED_ICMP)
    icmp_type, code, checksum = _ICMP.unpack_from(data, offset)
    if not is_echo_type(icmp_type, v6):
        return IcmpHeader(icmp_type, code, None, None, v6, checksum), offset + 4
    if available < 8:
        raise malformed.truncated(f"{name} echo header", available, 8, Reason.TRUNCATED_ICMP)
    identifier, sequence = _ECHO.unpack_from(data, offset + 4)
    return IcmpHeader(icmp_type, code, identifier, sequence, v6, checksum), offset + 8


def push_icmp(header: IcmpHeader, checksum: int) -> bytes:
    """Serialise with the given checksum (echo fields when the type is echo)."""
    raw = _ICMP.pack(header.type, header.code, checksum)
    if header.is_echo:
        raw += _ECHO.pack(header.identifier or 0, header.sequence or 0)
    return raw
