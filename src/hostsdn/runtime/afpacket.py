"""AF_PACKET raw sockets on the host-side veth ends: whole Ethernet frames in and out.

One ``PacketPort`` per switch port.  The socket is bound to one interface with
``ETH_P_ALL`` and ``PACKET_IGNORE_OUTGOING`` (we do not read back what we send).  The
kernel strips a received VLAN tag into packet metadata; ``PACKET_AUXDATA`` gives it back
and ``recv_batch`` re-inserts it, so the switch sees the frame as it was on the wire.

With an XDP program on the interface only the frames it ``XDP_PASS``es reach the socket:
this socket is then exactly the NIC's exception path.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import Counter
from typing import Self

from hostsdn.packet.constants import ETH_P_8021Q

__all__ = ["ETH_P_ALL", "PacketPort"]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 0x08
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

_AUXDATA = struct.Struct("=IIIHHHH")
"""struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid."""
MAX_FRAME = 65536 + 64
"""Receive buffer: the largest frame a veth can hand us (with GRO off, one MTU)."""
DEFAULT_RCVBUF = 4 << 20
_ANC_SIZE = socket.CMSG_SPACE(_AUXDATA.size)
_SEND_DROPS = (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE, errno.ENETDOWN, errno.ENXIO)


class PacketPort:
    """A non-blocking AF_PACKET socket bound to ``ifname``."""

    def __init__(self, ifname: str, *, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self.ifname = ifname
        self.counters: Counter[str] = Counter()
        # protocol 0 at creation: the socket receives nothing until bound to the interface
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                    break
                except PermissionError:
                    continue
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._buf = bytearray(MAX_FRAME)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        """Up to ``limit`` frames that are waiting (none: an empty list)."""
        out: list[bytes] = []
        buf = self._buf
        for _ in range(limit):
            try:
                n, anc, flags, _addr = self.sock.recvmsg_into([buf], _ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            frame = bytes(buf[:n])
            for level, kind, data in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUXDATA.size:
                    status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(data)
                    if status & TP_STATUS_CSUMNOTREADY:
                        # a partial checksum the switch cannot complete: see PLATFORM.md
                        self.counters["rx_csum_partial"] += 1
                    if status & TP_STATUS_VLAN_VALID and n >= 12:
                        tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                        frame = frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
            if flags & socket.MSG_TRUNC:
                self.counters["rx_truncated"] += 1
                continue
            out.append(frame)
        self.counters["rx"] += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        """Send one frame; a full queue or an oversized frame is counted, not raised."""
        try:
            self.sock.send(frame)
        except OSError as exc:
            if exc.errno not in _SEND_DROPS:
                raise
            self.counters[f"tx_error_{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
            self.counters["tx_errors"] += 1
            return False
        self.counters["tx"] += 1
        return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
