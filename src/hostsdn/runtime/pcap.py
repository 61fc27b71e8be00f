"""Reading packet traces (pcap / pcapng, any common link type) and writing pcap files.

dpkt does the file formats.  Frames of non-Ethernet link types are turned into Ethernet
frames so the switch can take them: raw IP (12, 14, 101, 228, 229) and BSD loopback (0)
get a synthetic header with zero MAC addresses; Linux cooked captures (113, 276) keep
their link-layer source address as the source MAC.  The pcap link-type field's upper
bits (FCS length) are masked off, as the pcap spec says.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dpkt

from hostsdn.errors import TraceError
from hostsdn.packet.constants import ETH_P_IPV4, ETH_P_IPV6

LINKTYPE_ETHERNET = 1
_RAW_IP = {12, 14, 101, 228, 229}
_ZERO_MAC = b"\x00" * 6
_NULL_AF_INET6 = {10, 24, 28, 30}


@dataclass(frozen=True, slots=True)
class TraceFrame:
    """One frame of a trace, as an Ethernet frame."""

    index: int
    """Position of the record in the trace, from 0 (skipped records count too)."""
    time: float
    data: bytes
    converted_from: int
    """The trace's link type (1 when the frame was Ethernet to begin with)."""
    interface: str | None = None
    """pcapng: the name (``if_name`` option) of the interface the frame was captured on;
    None for pcap files and interfaces without a name."""


@dataclass(frozen=True, slots=True)
class TraceWarning:
    """A record the trace lies about (cut short, longer than its snaplen, ...): reported
    and not replayed."""

    index: int
    """Index of the record (as ``TraceFrame.index``)."""
    message: str

    def __str__(self) -> str:
        return f"frame {self.index}: {self.message}"


def _eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def _ip_ethertype(payload: bytes) -> int:
    if payload and payload[0] >> 4 == 6:
        return ETH_P_IPV6
    return ETH_P_IPV4


def to_ethernet(linktype: int, buf: bytes) -> bytes:
    """The frame as Ethernet II; frames too short for their link header come back as-is
    (the switch then drops them as malformed)."""
    lt = linktype & 0xFFFF
    if lt == LINKTYPE_ETHERNET:
        return buf
    if lt in _RAW_IP:
        if lt == 228:
            et = ETH_P_IPV4
        elif lt == 229:
            et = ETH_P_IPV6
        else:
            et = _ip_ethertype(buf)
        return _eth(_ZERO_MAC, _ZERO_MAC, et, buf)
    if lt == 0:  # BSD loopback: 4-byte address family in the writer's byte order
        if len(buf) < 4:
            return buf
        af = struct.unpack("<I", buf[:4])[0]
        if af > 0xFFFF:
            af = struct.unpack(">I", buf[:4])[0]
        et = ETH_P_IPV6 if af in _NULL_AF_INET6 else ETH_P_IPV4
        return _eth(_ZERO_MAC, _ZERO_MAC, et, buf[4:])
    if lt == 113:  # Linux cooked v1: 16 bytes, protocol at 14
        if len(buf) < 16:
            return buf
        halen = struct.unpack("!H", buf[4:6])[0]
        src = buf[6:12] if halen == 6 else _ZERO_MAC
        return _eth(_ZERO_MAC, src, struct.unpack("!H", buf[14:16])[0], buf[16:])
    if lt == 276:  # Linux cooked v2: 20 bytes, protocol at 0
        if len(buf) < 20:
            return buf
        halen = buf[11]
        src = buf[12:18] if halen == 6 else _ZERO_MAC
        return _eth(_ZERO_MAC, src, struct.unpack("!H", buf[0:2])[0], buf[20:])
    raise TraceError(f"unsupported link type {linktype}")


MAX_SNAPLEN = 262144
"""libpcap's largest snapshot length; a pcap snaplen of 0 (some writers) means this."""
_PCAP_MAGIC = {0xA1B2C3D4: 1e6, 0xA1B23C4D: 1e9}
_PCAPNG_SHB, _PCAPNG_IDB, _PCAPNG_PB, _PCAPNG_SPB, _PCAPNG_EPB = (0x0A0D0D0A, 1, 2, 3, 6)
_PCAPNG_BOM = 0x1A2B3C4D
_OPT_END, _OPT_IF_NAME, _OPT_IF_TSRESOL, _OPT_IF_TSOFFSET = 0, 2, 9, 14
_SUPPORTED = "Ethernet, raw IP, BSD loopback or Linux cooked"


def _supported(linktype: int) -> bool:
    lt = linktype & 0xFFFF
    return lt == LINKTYPE_ETHERNET or lt in _RAW_IP or lt in (0, 113, 276)


@dataclass(slots=True)
class _Interface:
    """A pcapng interface (IDB): what its packet blocks need."""

    linktype: int
    snaplen: int
    name: str | None = None
    divisor: float = 1e6
    offset: int = 0


class TraceReader:
    """Iterates a pcap or pcapng file as ``TraceFrame``s; ``progress`` is bytes read.

    Both formats are read here (dpkt's readers replay a record cut short by the end of the
    file as if it were whole and know one pcapng interface only).  A record that lies -
    cut short by the end of the file, longer than the snaplen of its file/interface - is
    not yielded: it becomes a ``TraceWarning`` in ``warnings`` (the last one ends the
    file).  pcapng: every interface's link type, timestamp resolution/offset and name
    (``TraceFrame.interface``) are honoured, sections of either byte order too.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace: {exc.strerror}") from exc
        self.size = os.fstat(self._f.fileno()).st_size
        self.warnings: list[TraceWarning] = []
        self._index = 0
        self._interfaces: list[_Interface] = []
        self._endian = "<"
        try:
            magic = self._f.read(4)
            if magic == b"\x0a\x0d\x0d\x0a":
                self._pcapng = True
                self._open_pcapng()
            else:
                self._pcapng = False
                self._open_pcap(magic)
        except TraceError:
            self._f.close()
            raise
        if not _supported(self.linktype):
            self._f.close()
            raise TraceError(f"{self.path}: unsupported link type {self.linktype}")

    def _fail(self, why: str) -> TraceError:
        return TraceError(f"{self.path}: not a pcap or pcapng file ({why})")

    # -- classic pcap ------------------------------------------------------------------
    def _open_pcap(self, magic: bytes) -> None:
        if len(magic) < 4:
            raise self._fail("shorter than a file header")
        for endian in (">", "<"):
            divisor = _PCAP_MAGIC.get(struct.unpack(endian + "I", magic)[0])
            if divisor is not None:
                break
        else:
            raise self._fail(f"unknown magic number 0x{magic.hex()}")
        header = self._f.read(20)
        if len(header) < 20:
            raise self._fail("file header cut short")
        self._endian = endian
        self._divisor = divisor
        _, _, _, _, snaplen, self.linktype = struct.unpack(endian + "HHiIII", header)
        self.snaplen = snaplen or MAX_SNAPLEN

    def _pcap_records(self) -> Iterator[TraceFrame]:
        record = struct.Struct(self._endian + "IIII")
        while True:
            header = self._f.read(16)
            if not header:
                return
            if len(header) < 16:
                self._warn(f"record header cut short ({len(header)} of 16 bytes)")
                return
            sec, frac, caplen, _ = record.unpack(header)
            if caplen > max(self.snaplen, MAX_SNAPLEN):
                self._warn(f"record length {caplen} exceeds the snaplen {self.snaplen}; "
                           "the rest of the file is not read")
                return
            data = self._f.read(caplen)
            if len(data) < caplen:
                self._warn(f"record cut short ({len(data)} of {caplen} bytes)")
                return
            if caplen > self.snaplen:
                self._warn(f"record length {caplen} exceeds the snaplen {self.snaplen}")
                self._index += 1
                continue
            yield self._frame(sec + frac / self._divisor, data, self.linktype, None)

    # -- pcapng ------------------------------------------------------------------------
    def _open_pcapng(self) -> None:
        self._f.seek(0)
        first = self._block()
        if first is None or first[0] != _PCAPNG_SHB:
            raise self._fail("pcapng file without a section header")
        while not self._interfaces:
            block = self._block()
            if block is None:
                raise self._fail("pcapng file without an interface description")
            self._handle_block(*block)
        self.linktype = self._interfaces[0].linktype
        self.snaplen = self._interfaces[0].snaplen

    def _block(self) -> tuple[int, bytes] | None:
        """The next block's type and body (None at the end of the file or of what can be
        read: the reason is a warning)."""
        head = self._f.read(8)
        if not head:
            return None
        if len(head) < 8:
            self._warn(f"block header cut short ({len(head)} of 8 bytes)")
            return None
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            bom = self._f.read(4)
            if len(bom) < 4:
                self._warn("section header cut short")
                return None
            if bom == b"\x1a\x2b\x3c\x4d":
                self._endian = ">"
            elif bom == b"\x4d\x3c\x2b\x1a":
                self._endian = "<"
            else:
                raise TraceError(f"{self.path}: pcapng section with a bad byte-order magic")
            self._interfaces = []      # interface ids are per section
            self._f.seek(-4, os.SEEK_CUR)
        kind, total = struct.unpack(self._endian + "II", head)
        if total < 12 or total % 4:
            self._warn(f"block of type {kind} has an invalid length {total}; "
                       "the rest of the file is not read")
            return None
        body = self._f.read(total - 8)
        if len(body) < total - 8:
            what = "record" if kind in (_PCAPNG_EPB, _PCAPNG_SPB, _PCAPNG_PB) else \
                f"block of type {kind}"
            self._warn(f"{what} cut short ({len(body) + 8} of {total} bytes)")
            return None
        if struct.unpack(self._endian + "I", body[-4:])[0] != total:
            self._warn(f"block of type {kind}: trailing length differs from {total}; "
                       "the rest of the file is not read")
            return None
        return kind, body[:-4]

    def _options(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        at = 0
        while at + 4 <= len(data):
            code, size = struct.unpack_from(self._endian + "HH", data, at)
            if code == _OPT_END:
                return
            yield code, data[at + 4:at + 4 + size]
            at += 4 + (size + 3) // 4 * 4

    def _handle_block(self, kind: int, body: bytes) -> TraceFrame | None:
        e = self._endian
        if kind == _PCAPNG_IDB:
            if len(body) < 8:
                raise TraceError(f"{self.path}: pcapng interface description too short")
            linktype, _, snaplen = struct.unpack_from(e + "HHI", body)
            iface = _Interface(linktype, snaplen)
            for code, value in self._options(body[8:]):
                if code == _OPT_IF_NAME:
                    iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
                elif code == _OPT_IF_TSRESOL and value:
                    exp = value[0] & 0x7F
                    iface.divisor = float((2 if value[0] & 0x80 else 10) ** exp)
                elif code == _OPT_IF_TSOFFSET and len(value) == 8:
                    iface.offset = struct.unpack(e + "q", value)[0]
            if not _supported(linktype):
                raise TraceError(f"{self.path}: unsupported link type {linktype} "
                                 f"(interface {len(self._interfaces)}; {_SUPPORTED} only)")
            self._interfaces.append(iface)
            return None
        if kind == _PCAPNG_EPB or kind == _PCAPNG_PB:
            if kind == _PCAPNG_EPB:
                fixed = 20
                if len(body) < fixed:
                    self._warn("enhanced packet block too short")
                    self._index += 1
                    return None
                if_id, hi, lo, caplen, _ = struct.unpack_from(e + "IIIII", body)
            else:
                fixed = 20
                if len(body) < fixed:
                    self._warn("packet block too short")
                    self._index += 1
                    return None
                if_id, _, hi, lo, caplen, _ = struct.unpack_from(e + "HHIIII", body)
            return self._packet(if_id, (hi << 32) | lo, body[fixed:], caplen)
        if kind == _PCAPNG_SPB:
            if len(body) < 4:
                self._warn("simple packet block too short")
                self._index += 1
                return None
            (orig,) = struct.unpack_from(e + "I", body)
            snap = self._interfaces[0].snaplen if self._interfaces else 0
            caplen = min(orig, snap) if snap else orig
            return self._packet(0, None, body[4:], caplen)
        return None                     # other blocks (statistics, name resolution, ...)

    def _packet(self, if_id: int, ts: int | None, room: bytes, caplen: int) -> TraceFrame | None:
        if if_id >= len(self._interfaces):
            self._warn(f"packet for interface {if_id}, which the section does not describe")
            self._index += 1
            return None
        iface = self._interfaces[if_id]
        if caplen > len(room):
            self._warn(f"record length {caplen} exceeds its block ({len(room)} bytes)")
            self._index += 1
            return None
        if iface.snaplen and caplen > iface.snaplen:
            self._warn(f"record length {caplen} exceeds the snaplen {iface.snaplen}")
            self._index += 1
            return None
        time = 0.0 if ts is None else ts / iface.divisor + iface.offset
        return self._frame(time, room[:caplen], iface.linktype, iface.name)

    def _pcapng_records(self) -> Iterator[TraceFrame]:
        while True:
            block = self._block()
            if block is None:
                return
            frame = self._handle_block(*block)
            if frame is not None:
                yield frame

    # -- common ------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.warnings.append(TraceWarning(self._index, message))

    def _frame(self, time: float, data: bytes, linktype: int, name: str | None) -> TraceFrame:
        frame = TraceFrame(self._index, time, to_ethernet(linktype, data), linktype & 0xFFFF,
                           name)
        self._index += 1
        return frame

    @property
    def progress(self) -> int:
        try:
            return self._f.tell()
        except ValueError:
            return self.size

    def __iter__(self) -> Iterator[TraceFrame]:
        try:
            yield from (self._pcapng_records() if self._pcapng else self._pcap_records())
        except struct.error as exc:    # pragma: no cover - every read is length-checked
            raise TraceError(f"{self.path}: trace is corrupt after frame {self._index}: "
                             f"{exc}") from exc
        finally:
            self._f.close()

    def close(self) -> None:
        self._f.close()


class PcapWriter:
    """Writes Ethernet frames to a pcap file (microsecond timestamps, link type 1)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._f = open(path, "wb")
        self._w = dpkt.pcap.Writer(self._f, linktype=LINKTYPE_ETHERNET, snaplen=262144)
        self.count = 0

    def write(self, frame: bytes, time: float) -> None:
        self._w.writepkt(frame, ts=time)
        self.count += 1

    def close(self) -> None:
        self._f.close()


def read_frames(path: str | os.PathLike[str]) -> list[TraceFrame]:
    """All frames of a trace (small traces, tests)."""
    return list(TraceReader(path))
