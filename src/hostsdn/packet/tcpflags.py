"""Fast read of the TCP flags of the innermost TCP header (connection tracking input)."""

from __future__ import annotations

from .constants import (
    ETH_P_IPV4,
    ETH_P_IPV6,
    ETH_P_TEB,
    IPPROTO_GRE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    VLAN_TPIDS,
    VXLAN_PORT,
)

_EXT = {0, 43, 60, 51}


def innermost_tcp_flags(data: bytes, _depth: int = 0) -> int | None:
    """TCP flags of the frame's TCP header (inside VXLAN/NVGRE if tunnelled), else None.

    Never raises: a frame too short to hold the headers gives None (the codec has
    already validated frames that reach connection tracking).
    """
    n = len(data)
    off = 12
    if n < 14:
        return None
    et = (data[12] << 8) | data[13]
    off = 14
    while et in VLAN_TPIDS and n >= off + 4:
        et = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if et == ETH_P_IPV4:
        if n < off + 20:
            return None
        ihl = (data[off] & 0x0F) * 4
        frag = ((data[off + 6] & 0x1F) << 8) | data[off + 7]
        if frag:
            return None
        proto = data[off + 9]
        off += ihl
    elif et == ETH_P_IPV6:
        if n < off + 40:
            return None
        proto = data[off + 6]
        off += 40
        while proto in _EXT or proto == 44:
            if n < off + 8:
                return None
            if proto == 44:
                if ((data[off + 2] << 8) | data[off + 3]) & 0xFFF8:
                    return None
                nxt, ln = data[off], 8
            elif proto == 51:
                nxt, ln = data[off], (data[off + 1] + 2) * 4
            else:
                nxt, ln = data[off], (data[off + 1] + 1) * 8
            proto = nxt
            off += ln
    else:
        return None
    if proto == IPPROTO_TCP:
        return data[off + 13] if n >= off + 14 else None
    if _depth == 0 and proto == IPPROTO_UDP and n >= off + 16 and (
            (data[off + 2] << 8) | data[off + 3]) == VXLAN_PORT:
        return innermost_tcp_flags(data[off + 16:], 1)
    if _depth == 0 and proto == IPPROTO_GRE and n >= off + 4:
        flags = data[off]
        if ((data[off + 2] << 8) | data[off + 3]) == ETH_P_TEB:
            glen = 4 + (4 if flags & 0x80 else 0) + (4 if flags & 0x20 else 0) + (
                4 if flags & 0x10 else 0)
            return innermost_tcp_flags(data[off + glen:], 1)
    return None
