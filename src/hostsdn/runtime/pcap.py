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
    time: float
    data: bytes
    converted_from: int
    """The trace's link type (1 when the frame was Ethernet to begin with)."""


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


class TraceReader:
    """Iterates a pcap or pcapng file as ``TraceFrame``s; ``progress`` is bytes read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace: {exc.strerror}") from exc
        self.size = os.fstat(self._f.fileno()).st_size
        magic = self._f.read(4)
        self._f.seek(0)
        try:
            if magic == b"\x0a\x0d\x0d\x0a":
                self._reader: dpkt.pcap.Reader | dpkt.pcapng.Reader = dpkt.pcapng.Reader(self._f)
            else:
                self._reader = dpkt.pcap.Reader(self._f)
        except (ValueError, dpkt.dpkt.Error, struct.error) as exc:
            self._f.close()
            raise TraceError(f"{self.path}: not a pcap or pcapng file ({exc})") from exc
        self.linktype = int(self._reader.datalink())
        lt = self.linktype & 0xFFFF
        if lt != LINKTYPE_ETHERNET and lt not in _RAW_IP and lt not in (0, 113, 276):
            self._f.close()
            raise TraceError(f"{self.path}: unsupported link type {self.linktype}")

    @property
    def progress(self) -> int:
        try:
            return self._f.tell()
        except ValueError:
            return self.size

    def __iter__(self) -> Iterator[TraceFrame]:
        index = 0
        try:
            for ts, buf in self._reader:
                yield TraceFrame(index, float(ts), to_ethernet(self.linktype, bytes(buf)),
                                 self.linktype & 0xFFFF)
                index += 1
        except (ValueError, dpkt.dpkt.Error, struct.error) as exc:
            raise TraceError(f"{self.path}: trace is corrupt after frame {index}: {exc}") from exc
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
