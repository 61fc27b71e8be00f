"""Established flows and malformed mutations of their frames, for the offload-fidelity
tests of the XDP program against the host (tests/kernel/test_xdp_malformed.py).

``FLOWS``: one short trace per flow kind (TCP through a stateful ACL + SNAT, DNAT, UDP,
ICMP echo, VXLAN encap/decap, VM to VM, IPv6, a VLAN tag, IPv4 options), each with
its replies made by mirroring what the host actually emitted (so SNAT ports, the
tunnel and VLAN tags are whatever the switch chose).  The last frame of each direction
is a *probe*: a frame of an offloaded flow, the base of the mutations.

``mutations(frame)``: named mutations of a valid frame at every header of every level
(truncations at and between header boundaries, with and without the length fields made
to agree, length-field, IHL, data-offset, version, fragment and protocol changes,
VLAN nesting, VXLAN flags, trailing bytes).  Offsets come from the codec's header walk
of the *valid* frame; what the mutated frame means is left to the host and the NIC.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from scapy.all import (  # type: ignore
    ICMP,
    IP,
    TCP,
    UDP,
    VXLAN,
    Dot1Q,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPOption,
    IPv6,
    Raw,
)

from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.packet.fastpath import TUNNEL_VXLAN, _walk
from hostsdn.policy.loader import load_policy_text
from hostsdn.switch import UPLINK

WEB_MAC, DB_MAC, REMOTE_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:05"
UPLINK_MAC, ROUTER_MAC, VM_GW_MAC = "02:00:00:00:ff:01", "02:00:00:00:ee:01", "02:00:00:00:fe:fe"

POLICY_TEXT = f"""\
version: 1
uplink: {{mac: "{UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{ROUTER_MAC}"}}
ports:
  - {{name: web, mac: "{WEB_MAC}", ips: ["10.1.0.4/24", "fd00::4/64"], layers: [mark, acl, nat, vnet],
     vlans: [100]}}
  - {{name: db, mac: "{DB_MAC}", ips: ["10.1.0.6/24"], layers: [db-acl]}}
layers:
  - name: acl
    stateful: true
    default: block
    outbound:
      - {{priority: 100, match: {{proto: tcp, dst_port: [80, 443, 5432]}}, action: allow}}
      - {{priority: 100, match: {{proto: udp, dst_port: 53}}, action: allow}}
      - {{priority: 90, match: {{proto: icmp}}, action: allow}}
      - {{priority: 90, match: {{proto: icmpv6}}, action: allow}}
    inbound:
      - {{priority: 10, match: {{proto: tcp, dst_port: 80}}, action: allow}}
      - {{priority: 10, match: {{src_ip: ["10.1.0.0/16"], proto: tcp, dst_port: 22}}, action: allow}}
  - name: mark
    default: allow
    outbound:
      - {{priority: 10, match: {{proto: tcp, dst_port: 443}}, action: {{set_dscp: 46}}}}
  - name: nat
    default: allow
    outbound:
      - {{priority: 20, match: {{dst_ip: "10.0.0.0/8"}}, action: allow}}
      - {{priority: 10, match: {{dst_ip: "2001:db8::/32"}}, action: {{snat: {{ip: "2001:db8:ffff::7"}}}}}}
      - {{priority: 10, match: {{dst_ip: "0.0.0.0/0"}}, action: {{snat: {{ip: 203.0.113.7}}}}}}
    inbound:
      - {{priority: 10, match: {{dst_ip: 203.0.113.7, proto: tcp, dst_port: 8080}},
          action: {{dnat: {{ip: 10.1.0.4, port: 80}}}}}}
  - name: vnet
    default: allow
    outbound:
      - {{priority: 20, match: {{dst_ip: 10.1.0.6}}, action: allow}}
      - {{priority: 10, match: {{dst_ip: "10.1.0.0/16"}}, action: {{encap: {{vxlan: {{vni: 5001, map: vnet1}}}}}}}}
    inbound:
      - {{priority: 10, match: {{vni: 5001}}, action: decap}}
  - name: db-acl
    stateful: true
    default: block
    inbound:
      - {{priority: 10, match: {{src_ip: 10.1.0.4, proto: tcp, dst_port: 5432}}, action: allow}}
mappings:
  vnet1:
    "10.1.0.5": {{pa: 192.0.2.2, mac: "{REMOTE_MAC}"}}
"""


@cache
def policy():
    return load_policy_text(POLICY_TEXT, "malformed-fidelity.yaml")


# ----------------------------------------------------------------- replies by mirroring

def _swap(layer) -> None:
    layer.src, layer.dst = layer.dst, layer.src


def _mirror_l4(pkt, flags: str | None) -> None:
    """Swap the IP level at and below ``pkt`` (an IP/IPv6 layer), in place."""
    _swap(pkt)
    l4 = pkt.payload
    if isinstance(l4, TCP):
        l4.sport, l4.dport = l4.dport, l4.sport
        l4.seq, l4.ack = l4.ack, l4.seq
        if flags is not None:
            l4.flags = flags
        l4.chksum = None
    elif isinstance(l4, UDP):
        l4.sport, l4.dport = l4.dport, l4.sport
        l4.chksum = None
        l4.len = None
    elif isinstance(l4, ICMP):
        l4.type = 0 if l4.type == 8 else 8
        l4.chksum = None
    elif isinstance(l4, (ICMPv6EchoRequest, ICMPv6EchoReply)):
        # (scapy's ICMPv6EchoReply is a subclass of ICMPv6EchoRequest)
        cls = ICMPv6EchoRequest if isinstance(l4, ICMPv6EchoReply) else ICMPv6EchoReply
        pkt.remove_payload()
        pkt.add_payload(cls(id=l4.id, seq=l4.seq, data=l4.data))
    if isinstance(pkt, IP):
        pkt.chksum = None
        pkt.len = None
    else:
        pkt.plen = None


def mirror(frame: bytes, flags: str | None = None, payload: bytes | None = None) -> bytes:
    """The reply to ``frame`` (an output of the switch): MACs, IPs, ports swapped, echo
    request <-> reply; a VXLAN frame keeps its VNI and gets the inner reply; TCP gets
    ``flags``; ``payload`` replaces the innermost payload."""
    pkt = Ether(frame)
    _swap(pkt)
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    vx = pkt.getlayer(VXLAN)
    if vx is not None:
        udp = ip.payload
        _swap(ip)
        ip.chksum = None
        ip.len = None
        udp.sport, udp.dport = 51234, 4789
        udp.len = None
        inner = vx.payload
        _swap(inner)
        ip = inner.getlayer(IP) or inner.getlayer(IPv6)
    _mirror_l4(ip, flags)
    if payload is not None:
        last = pkt.lastlayer()
        if isinstance(last, Raw):
            last.load = payload
        else:
            last.add_payload(Raw(payload))
    return bytes(pkt)


# ----------------------------------------------------------------- the flows

@dataclass(frozen=True)
class Step:
    """One frame of a trace."""

    frame: bytes
    port: str
    probe: str = ""
    """Non-empty for a probe: ``"<flow>/out"`` or ``"<flow>/in"``."""


def _tcp(src_mac, dst_mac, src, dst, sport, dport, flags, load=b"", vlan=None, options=None):
    eth = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst, options=options or [])
    return bytes(eth / ip / TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=2000) /
                 Raw(load))


def _udp(src_mac, dst_mac, src, dst, sport, dport, load=b"q", options=None):
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst, options=options or [])
    return bytes(Ether(src=src_mac, dst=dst_mac) / ip / UDP(sport=sport, dport=dport) / Raw(load))


def _echo(src_mac, dst_mac, src, dst, ident):
    if ":" in src:
        return bytes(Ether(src=src_mac, dst=dst_mac) / IPv6(src=src, dst=dst) /
                     ICMPv6EchoRequest(id=ident, seq=1, data=b"ping6ping6"))
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) /
                 ICMP(type=8, id=ident, seq=1) / Raw(b"pingping"))


def _vxlan_in(inner: bytes) -> bytes:
    return bytes(Ether(src=ROUTER_MAC, dst=UPLINK_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") /
                 UDP(sport=51234, dport=4789) / VXLAN(vni=5001, flags=0x08) / Ether(inner))


def _only_output(dp: Datapath, frame: bytes, port: str, t: float) -> bytes:
    res = dp.receive(frame, port, t)
    assert len(res.outputs) == 1, (port, frame.hex(), res)
    return res.outputs[0][1]


def _two_way(name: str, first: bytes, port: str, dest_port: str, dp: Datapath) -> list[Step]:
    """A request, its reply, and one more of each (the probes)."""
    out = _only_output(dp, first, port, 1.0)
    reply = mirror(out)
    back = _only_output(dp, reply, dest_port, 1.01)
    again = mirror(back)
    _only_output(dp, again, port, 1.02)
    _only_output(dp, reply, dest_port, 1.03)
    return [Step(first, port), Step(reply, dest_port), Step(again, port, f"{name}/out"),
            Step(reply, dest_port, f"{name}/in")]


def _build_flows() -> dict[str, list[Step]]:
    """Each flow's trace, its replies made from what a host-only switch emits."""
    p = policy()
    builders: dict[str, Callable[[Datapath], list[Step]]] = {
        "tcp4_snat": lambda dp: _tcp_from(dp, "tcp4_snat", _tcp(
            WEB_MAC, VM_GW_MAC, "10.1.0.4", "93.184.216.34", 40000, 443, "S"), "web", UPLINK),
        "tcp4_vlan": lambda dp: _tcp_from(dp, "tcp4_vlan", _tcp(
            WEB_MAC, VM_GW_MAC, "10.1.0.4", "93.184.216.34", 40004, 443, "S", vlan=100),
            "web", UPLINK),
        "tcp4_vxlan": lambda dp: _tcp_from(dp, "tcp4_vxlan", _tcp(
            WEB_MAC, REMOTE_MAC, "10.1.0.4", "10.1.0.5", 40001, 80, "S"), "web", UPLINK),
        "tcp6": lambda dp: _tcp_from(dp, "tcp6", _tcp(
            WEB_MAC, VM_GW_MAC, "fd00::4", "2001:db8::80", 40003, 443, "S"), "web", UPLINK),
        "udp4_snat": lambda dp: _two_way("udp4_snat", _udp(
            WEB_MAC, VM_GW_MAC, "10.1.0.4", "8.8.8.8", 5353, 53), "web", UPLINK, dp),
        "udp4_options": lambda dp: _two_way("udp4_options", _udp(
            WEB_MAC, VM_GW_MAC, "10.1.0.4", "8.8.4.4", 5354, 53,
            options=[IPOption(b"\x94\x04\x00\x00")]), "web", UPLINK, dp),
        "udp6": lambda dp: _two_way("udp6", _udp(
            WEB_MAC, VM_GW_MAC, "fd00::4", "2001:db8::53", 5355, 53), "web", UPLINK, dp),
        "icmp4_snat": lambda dp: _two_way("icmp4_snat", _echo(
            WEB_MAC, VM_GW_MAC, "10.1.0.4", "8.8.8.8", 7), "web", UPLINK, dp),
        "icmp6": lambda dp: _two_way("icmp6", _echo(
            WEB_MAC, VM_GW_MAC, "fd00::4", "2001:db8::1", 8), "web", UPLINK, dp),
    }
    flows: dict[str, list[Step]] = {}
    for name, build in builders.items():
        with Datapath(p, DatapathOptions(nic="none")) as dp:
            flows[name] = build(dp)
    # Initiated from the other side: DNAT from the internet, VXLAN from the remote host,
    # and VM to VM (web -> db).
    with Datapath(p, DatapathOptions(nic="none")) as dp:
        flows["tcp4_dnat"] = _tcp_from(dp, "tcp4_dnat", _tcp(
            ROUTER_MAC, UPLINK_MAC, "198.51.100.1", "203.0.113.7", 50000, 8080, "S"),
            UPLINK, "web")
    with Datapath(p, DatapathOptions(nic="none")) as dp:
        flows["tcp4_vxlan_in"] = _tcp_from(dp, "tcp4_vxlan_in", _vxlan_in(_tcp(
            REMOTE_MAC, WEB_MAC, "10.1.0.5", "10.1.0.4", 50001, 22, "S")), UPLINK, "web")
    with Datapath(p, DatapathOptions(nic="none")) as dp:
        flows["tcp4_local"] = _tcp_from(dp, "tcp4_local", _tcp(
            WEB_MAC, DB_MAC, "10.1.0.4", "10.1.0.6", 40002, 5432, "S"), "web", "db")
    return flows


def _tcp_from(dp: Datapath, name: str, first: bytes, port: str, dest: str) -> list[Step]:
    """Handshake from ``port``, then data both ways (the probes)."""
    t = 1.0
    out = _only_output(dp, first, port, t)
    synack = mirror(out, "SA")
    back = _only_output(dp, synack, dest, t + 0.01)
    ack = mirror(back, "A")
    _only_output(dp, ack, port, t + 0.02)
    data_out = mirror(back, "PA", b"request bytes")
    out2 = _only_output(dp, data_out, port, t + 0.03)
    data_in = mirror(out2, "PA", b"response bytes!")
    _only_output(dp, data_in, dest, t + 0.04)
    return [Step(first, port), Step(synack, dest), Step(ack, port),
            Step(data_out, port, f"{name}/out"), Step(data_in, dest, f"{name}/in")]


@cache
def flows() -> dict[str, list[Step]]:
    return _build_flows()


@cache
def probes() -> dict[str, tuple[str, list[Step], Step]]:
    """probe name -> (flow name, the flow's trace, the probe step)."""
    out = {}
    for name, steps in flows().items():
        for s in steps:
            if s.probe:
                out[s.probe] = (name, steps, s)
    return out


# ----------------------------------------------------------------- mutations

@dataclass(frozen=True)
class Level:
    """Offsets of one level of headers of the valid frame (inner: of a VXLAN frame)."""

    eth: int
    l3: int
    l4: int
    ip_end: int
    end: int
    version: int
    proto: int
    dst_port: int


def levels(frame: bytes) -> list[Level]:
    """The outer level and, for a VXLAN frame, the inner one."""
    key, l3, l4, ip_end, tunnel, inner_off, inner_end, _ = _walk(frame, 0, len(frame), False)
    out = [Level(0, l3, l4, ip_end, len(frame), key.ip_version, key.proto, key.dst_port)]
    if tunnel == TUNNEL_VXLAN:
        ik, il3, il4, iip_end, *_ = _walk(frame, inner_off, inner_end, True)
        out.append(Level(inner_off, il3, il4, iip_end, inner_end, ik.ip_version, ik.proto,
                         ik.dst_port))
    return out


def _put16(buf: bytearray, at: int, value: int) -> None:
    struct.pack_into("!H", buf, at, value & 0xFFFF)


def fix_lengths(buf: bytearray, outer: list[Level], upto: int) -> bytearray:
    """Make the IP total/payload and UDP length fields of the levels *enclosing* byte
    ``upto`` (the frame's new end) agree with it, so only the level below is broken."""
    for lv in outer:
        if lv.l3 + (20 if lv.version == 4 else 40) > upto:
            break
        if lv.version == 4:
            _put16(buf, lv.l3 + 2, upto - lv.l3)
        else:
            _put16(buf, lv.l3 + 4, upto - lv.l3 - 40)
        if lv.proto == 17 and lv.l4 + 8 <= upto:
            _put16(buf, lv.l4 + 4, upto - lv.l4)
    return buf


def _set16(frame: bytes, at: int, value: int) -> bytes:
    buf = bytearray(frame)
    _put16(buf, at, value)
    return bytes(buf)


def _set8(frame: bytes, at: int, value: int) -> bytes:
    buf = bytearray(frame)
    buf[at] = value & 0xFF
    return bytes(buf)


def mutations(frame: bytes) -> Iterator[tuple[str, bytes]]:
    """Named mutations of a valid frame (see the module docstring)."""
    lvs = levels(frame)
    for depth, lv in enumerate(lvs):
        p = "inner " if depth else ""
        enclosing = lvs[:depth]
        # --- truncations at and between every header boundary of this level
        l4_len = {6: 20, 17: 8, 1: 8, 58: 8}.get(lv.proto, 4)
        cuts = {lv.eth + 1, lv.eth + 13, lv.eth + 14, lv.l3 - 2, lv.l3 + 1, lv.l3 + 10,
                lv.l3 + 19, lv.l3 + 20, lv.l3 + 39, lv.l4 - 1, lv.l4, lv.l4 + 1, lv.l4 + 4,
                lv.l4 + 7, lv.l4 + 8, lv.l4 + 13, lv.l4 + 15, lv.l4 + 16, lv.l4 + 19,
                lv.l4 + l4_len - 1, (lv.l4 + l4_len + lv.ip_end) // 2, lv.ip_end - 1}
        for cut in sorted(c for c in cuts if lv.eth < c < lv.end):
            yield f"{p}truncated at {cut}", frame[:cut]
            if enclosing:
                fixed = bytes(fix_lengths(bytearray(frame[:cut]), enclosing, cut))
                yield f"{p}truncated at {cut}, outer lengths fixed", fixed
            if lv.l3 < cut:
                own = bytes(fix_lengths(bytearray(frame[:cut]), enclosing + [lv], cut))
                yield f"{p}truncated at {cut}, lengths fixed", own
        # --- VLAN: nesting, tag type, a tag cut short
        tagged = lv.l3 - lv.eth > 14
        if tagged:
            yield (f"{p}second VLAN tag",
                   frame[:lv.eth + 16] + b"\x81\x00\x00\xc8" + frame[lv.eth + 16:])
            yield f"{p}802.1ad outer tag", _set16(frame, lv.eth + 12, 0x88A8)
            yield f"{p}tag ethertype is 802.1Q again", _set16(frame, lv.eth + 16, 0x8100)
        else:
            yield (f"{p}VLAN tag 0 added",
                   frame[:lv.eth + 12] + b"\x81\x00\x00\x00" + frame[lv.eth + 12:])
        yield f"{p}ethertype 802.1Q, tag cut", frame[:lv.eth + 12] + b"\x81\x00\x00"
        # --- IP header fields
        if lv.version == 4:
            total = lv.ip_end - lv.l3
            ihl = (frame[lv.l3] & 0xF) * 4
            for value in (0, 19, ihl - 1, ihl, total - 1, total + 1, total + 4, 0xFFFF):
                yield f"{p}IPv4 total length {value} (was {total})", _set16(frame, lv.l3 + 2,
                                                                            value)
            yield (f"{p}IPv4 total length +4, 4 trailing bytes",
                   _set16(frame, lv.l3 + 2, total + 4)[:lv.end] + b"\0" * 4 + frame[lv.end:])
            for new_ihl in (0, 1, 4, 6, 7, 15):
                yield f"{p}IPv4 IHL {new_ihl}", _set8(frame, lv.l3, 0x40 | new_ihl)
            for version in (0, 6, 15):
                yield (f"{p}IP version {version} in IPv4",
                       _set8(frame, lv.l3, version << 4 | frame[lv.l3] & 0xF))
            flags = struct.unpack_from("!H", frame, lv.l3 + 6)[0]
            for name, word in (("MF", 0x2000), ("DF", 0x4000), ("reserved flag", 0x8000),
                               ("offset 1", 0x0001), ("offset 8191", 0x1FFF),
                               ("MF + offset 1", 0x2001)):
                yield f"{p}IPv4 {name}", _set16(frame, lv.l3 + 6, flags | word)
            proto_at = lv.l3 + 9
        else:
            plen = lv.ip_end - lv.l3 - 40
            for value in (0, 1, 7, plen - 1, plen + 1, 0xFFFF):
                yield f"{p}IPv6 payload length {value} (was {plen})", _set16(frame, lv.l3 + 4,
                                                                             value)
            for version in (0, 4, 15):
                yield (f"{p}IP version {version} in IPv6",
                       _set8(frame, lv.l3, version << 4 | frame[lv.l3] & 0xF))
            for nh in (0, 43, 44, 60, 51, 59):
                yield f"{p}IPv6 next header {nh}", _set8(frame, lv.l3 + 6, nh)
            # a real hop-by-hop header (PadN): the same key for the host
            hbh = bytes([frame[lv.l3 + 6], 0, 1, 4, 0, 0, 0, 0])
            buf = bytearray(frame[:lv.l3 + 40] + hbh + frame[lv.l3 + 40:])
            buf[lv.l3 + 6] = 0
            _put16(buf, lv.l3 + 4, plen + 8)
            yield f"{p}IPv6 hop-by-hop header inserted", bytes(buf)
            proto_at = lv.l3 + 6
        for proto in (0, 1, 6, 17, 47, 58, 132, 255):
            if proto != lv.proto:
                yield f"{p}IP protocol {proto}", _set8(frame, proto_at, proto)
        # --- L4
        room = lv.ip_end - lv.l4
        if lv.proto == 6:
            for doff in (0, 1, 4, 6, 15):
                yield (f"{p}TCP data offset {doff}",
                       _set8(frame, lv.l4 + 12, doff << 4 | frame[lv.l4 + 12] & 0xF))
            doff = min(15, room // 4 + 1)
            yield (f"{p}TCP data offset {doff} past the IP payload, trailer bytes",
                   _set8(frame, lv.l4 + 12, doff << 4)[:lv.end] + b"\0" * 64 + frame[lv.end:])
        elif lv.proto == 17:
            ulen = struct.unpack_from("!H", frame, lv.l4 + 4)[0]
            for value in (0, 7, 8, 15, ulen - 1, ulen + 1, room + 1, 0xFFFF):
                yield f"{p}UDP length {value} (was {ulen})", _set16(frame, lv.l4 + 4, value)
            if lv.dst_port == 4789:
                yield f"{p}VXLAN I flag clear", _set8(frame, lv.l4 + 8, 0)
                yield f"{p}VXLAN flags 0xff", _set8(frame, lv.l4 + 8, 0xFF)
                for keep in (0, 4, 7):
                    cut = lv.l4 + 8 + keep
                    yield (f"{p}VXLAN header cut to {keep} bytes, lengths fixed",
                           bytes(fix_lengths(bytearray(frame[:cut]), enclosing + [lv], cut)))
                cut = lv.l4 + 16 + 10
                yield ("inner Ethernet cut to 10 bytes, lengths fixed",
                       bytes(fix_lengths(bytearray(frame[:cut]), enclosing + [lv], cut)))
        elif lv.proto in (1, 58):
            for keep in (3, 4, 7):
                cut = lv.l4 + keep
                yield (f"{p}ICMP cut to {keep} bytes, lengths fixed",
                       bytes(fix_lengths(bytearray(frame[:cut]), enclosing + [lv], cut)))
        # --- valid frames of the same key with another layout
        yield from _same_key_layouts(frame, p, enclosing, lv)
    # --- bytes after the frame (an Ethernet trailer)
    for extra in (b"\0", b"\0" * 4, b"\xff" * 46):
        yield f"{len(extra)} trailing bytes", frame + extra


def _grow(frame: bytes, at: int, extra: bytes, lengths: list[Level]) -> bytearray:
    """Insert ``extra`` at ``at`` and grow the IP/UDP length fields of ``lengths``."""
    buf = bytearray(frame[:at] + extra + frame[at:])
    for lv in lengths:
        if lv.version == 4:
            _put16(buf, lv.l3 + 2, struct.unpack_from("!H", buf, lv.l3 + 2)[0] + len(extra))
        else:
            _put16(buf, lv.l3 + 4, struct.unpack_from("!H", buf, lv.l3 + 4)[0] + len(extra))
        if lv.proto == 17 and lv.l4 < at:
            _put16(buf, lv.l4 + 4, struct.unpack_from("!H", buf, lv.l4 + 4)[0] + len(extra))
    return buf


def _same_key_layouts(frame: bytes, p: str, enclosing: list[Level],
                      lv: Level) -> Iterator[tuple[str, bytes]]:
    """Valid frames whose key is the probe's but whose headers sit elsewhere."""
    if lv.version == 4:
        buf = _grow(frame, lv.l4, b"\x01\x01\x01\x00", enclosing + [lv])
        buf[lv.l3] += 1                                   # IHL + 1: four option bytes
        yield f"{p}IPv4 options NOP NOP NOP EOL inserted", bytes(buf)
    if lv.proto == 6:
        buf = _grow(frame, lv.l4 + 20, b"\x01\x01\x01\x01", enclosing + [lv])
        buf[lv.l4 + 12] += 0x10                           # data offset + 1
        yield f"{p}TCP options NOP x4 inserted", bytes(buf)
    if lv.proto == 17:
        yield f"{p}UDP checksum 0", _set16(frame, lv.l4 + 6, 0)
        yield f"{p}UDP checksum 0xffff", _set16(frame, lv.l4 + 6, 0xFFFF)
    # a priority and DEI on the tag, or ECN bits: not part of the key
    if lv.l3 - lv.eth > 14:
        yield f"{p}VLAN PCP 7 DEI 1", _set8(frame, lv.eth + 14, frame[lv.eth + 14] | 0xF0)
    if lv.version == 4:
        yield f"{p}IPv4 ECN CE", _set8(frame, lv.l3 + 1, frame[lv.l3 + 1] | 3)


# TCP flag changes: valid frames that change connection state (run last).
def flag_mutations(frame: bytes) -> Iterator[tuple[str, bytes]]:
    lvs = levels(frame)
    lv = lvs[-1]
    if lv.proto != 6:
        return
    for name, flags in (("none", 0), ("URG", 0x20), ("ECE|CWR", 0xD0), ("SYN", 0x02),
                        ("FIN|ACK", 0x11), ("RST", 0x04)):
        yield f"TCP flags {name}", _set8(frame, lv.l4 + 13, flags)
