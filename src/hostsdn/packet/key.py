"""The exact flow key: every field any rule can match, extracted from a parsed frame.

A FlowKey is a plain NamedTuple of ints/bytes so that hashing it (flow-table and NIC
cache lookups) is cheap.  It is the *outermost* view of the frame; a tunnelled frame
(VXLAN, NVGRE) also carries ``vni`` and the ``inner`` key of the encapsulated frame.
"""

from __future__ import annotations

from typing import NamedTuple

from .constants import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    PORT_PROTOCOLS,
    VXLAN_PORT,
)

# Fragment states of an IP packet.
FRAG_NONE = 0
FRAG_FIRST = 1   # offset 0, more-fragments set: L4 header present
FRAG_LATER = 2   # offset > 0: no L4 header, ports are 0

NO_VNI = -1


class FlowKey(NamedTuple):
    """Exact match key of one frame (outermost headers) - see docs/design.md."""

    vlans: tuple[int, ...]
    """802.1Q VIDs, outermost first; () when untagged."""
    src_mac: bytes
    """Ethernet source, 6 bytes."""
    dst_mac: bytes
    """Ethernet destination, 6 bytes."""
    ethertype: int
    """Ethertype after any VLAN tags (0x0800, 0x86DD, 0x0806, 0x8915, ...)."""
    ip_version: int
    """0 for non-IP frames, else 4 or 6."""
    src_ip: int
    """IP source as an integer (0 for non-IP)."""
    dst_ip: int
    """IP destination as an integer (0 for non-IP)."""
    proto: int
    """L4 protocol (IPv4 protocol / IPv6 final next header); 0 for non-IP."""
    dscp: int
    """DSCP (IPv4 TOS >> 2, IPv6 traffic class >> 2); 0 for non-IP."""
    src_port: int
    """TCP/UDP/SCTP source port; ICMP/ICMPv6 echo: the identifier; else 0."""
    dst_port: int
    """TCP/UDP/SCTP destination port; ICMP/ICMPv6: (type << 8) | code; else 0."""
    frag: int
    """FRAG_NONE, FRAG_FIRST or FRAG_LATER."""
    vni: int = NO_VNI
    """VXLAN VNI or NVGRE VSID when the frame is a tunnel frame, else NO_VNI."""
    inner: FlowKey | None = None
    """Key of the encapsulated Ethernet frame for VXLAN/NVGRE, else None."""

    @property
    def has_ports(self) -> bool:
        """True when src_port/dst_port are real TCP/UDP/SCTP ports."""
        return self.proto in PORT_PROTOCOLS and self.frag != FRAG_LATER


_new_key = tuple.__new__
_ECHO_REPLY_TYPE = {
    (4, IPPROTO_ICMP, ICMP_ECHO_REQUEST): ICMP_ECHO_REPLY,
    (4, IPPROTO_ICMP, ICMP_ECHO_REPLY): ICMP_ECHO_REQUEST,
    (6, IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST): ICMPV6_ECHO_REPLY,
    (6, IPPROTO_ICMPV6, ICMPV6_ECHO_REPLY): ICMPV6_ECHO_REQUEST,
}
"""(IP version, protocol, echo type) -> the type of its reply."""


def _reply_level(k: FlowKey, inner: FlowKey | None) -> FlowKey:
    # Built directly rather than with ``_replace`` (a dict of keywords and a map per call):
    # every flow setup computes several reply keys.
    vlans, src_mac, dst_mac, ethertype, version, src_ip, dst_ip, proto, dscp, sp, dp, frag, \
        vni, _ = k
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        reply_type = _ECHO_REPLY_TYPE.get((version, proto, dp >> 8))
        if reply_type is not None:
            dp = (reply_type << 8) | (dp & 0xFF)
    else:
        sp, dp = dp, sp
    return _new_key(FlowKey, (vlans, dst_mac, src_mac, ethertype, version, dst_ip, src_ip, proto,
                              dscp, sp, dp, frag, vni, inner))


def reply_key(key: FlowKey) -> FlowKey:
    """The key of the reply direction of ``key``: the one definition (host, NIC, tests).

    Swaps MACs, IPs and ports.  ICMP (in IPv4) / ICMPv6 (in IPv6) echo: the identifier
    stays the ``src_port`` and the request type becomes the reply type (8<->0,
    128<->129) in ``dst_port``; every other ICMP message keeps its ports.  VLANs,
    ethertype, proto, DSCP and fragment state are kept.

    A tunnel key keeps its ``vni`` and gets the reply of its ``inner`` key.  A VXLAN
    reply goes to UDP port ``VXLAN_PORT`` from a source port the replying VTEP picks per
    flow (RFC 7348 section 5): that entropy is not part of a tunnel frame's identity, so
    the outer key has ``src_port`` 0, the form ``flows.keys.normalize`` gives received
    tunnel frames (``reply_key(k) == normalize(flow_key(reply frame))``).
    """
    inner = key.inner
    if inner is None:
        return _reply_level(key, None)
    reply = _reply_level(key, reply_key(inner))
    if key.proto == IPPROTO_UDP:
        reply = reply._replace(src_port=0, dst_port=VXLAN_PORT)
    return reply
