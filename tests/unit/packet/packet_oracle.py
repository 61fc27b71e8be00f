"""Test helpers: scapy as an independent oracle, and the capture corpus reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dpkt
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN  # noqa: F401  (binds UDP port 4789)
from scapy.packet import NoPayload, Packet

_CHECKSUMMED = (IP, TCP, UDP, ICMP, GRE, SCTP)


def _link_type(path: str | Path) -> int:
    with open(path, "rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = (dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a"
                  else dpkt.pcap.Reader(handle))
        return int(reader.datalink())


def by_link_type(paths: list[Path], *, ethernet: bool = True) -> list[Path]:
    """The captures whose link type (low 16 bits) is Ethernet, or all others."""
    return [p for p in paths if (_link_type(p) & 0xFFFF == 1) == ethernet]


def read_frames(path: str | Path) -> Iterator[bytes]:
    """Frames of a pcap/pcapng file (dpkt)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = (dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a"
                  else dpkt.pcap.Reader(handle))
        for _, buf in reader:
            yield bytes(buf)


def _layers(packet: Packet) -> Iterator[Packet]:
    layer: Packet = packet
    while not isinstance(layer, NoPayload):
        yield layer
        layer = layer.payload


def scapy_rechecksum(data: bytes) -> bytes:
    """Dissect ``data`` with scapy, drop every checksum it carries, let scapy rebuild.

    A UDP checksum of 0 (no checksum) and an absent GRE checksum are left as they are.
    Returns scapy's bytes: equal to ``data`` iff all of data's checksums are right.
    """
    packet = Ether(data)
    for layer in _layers(packet):
        kind = type(layer)
        if kind in _CHECKSUMMED:
            if kind is UDP and layer.chksum == 0:
                continue
            if kind is GRE and not layer.chksum_present:
                continue
            layer.chksum = None
        elif kind.__name__.startswith("ICMPv6") and "cksum" in layer.fields:
            layer.cksum = None
    return bytes(packet)
