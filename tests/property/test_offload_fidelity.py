"""Offload fidelity (hypothesis): random policies and traces give the same frames per port
(bytes and order) and the same drops with no NIC, simnic at any cache size, every
eviction policy, both exception paths, the guest flow list on or off, and a NIC without
SCTP."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, fragment  # type: ignore

from fidelity import assert_same
from frames import (
    DB_MAC,
    PUBLIC,
    REMOTE,
    REMOTE_MAC,
    ROUTER_MAC,
    UPLINK_MAC,
    VM_GW_MAC,
    WEB_MAC,
    icmp_echo,
    sctp,
    tcp,
    udp,
    vxlan_from_remote,
)
from hostsdn.policy.loader import load_policy_text

VM1, VM2 = "10.1.0.4", "10.1.0.6"
ROUTER2_MAC = "02:00:00:00:ee:02"
INTERNET = ["8.8.8.8", "1.1.1.1"]

MATCHES = ["{}", "{proto: tcp}", "{proto: udp}", "{proto: icmp}", "{proto: tcp, dst_port: 80}",
           "{proto: tcp, dst_port: \"1-1024\"}", "{dst_ip: \"10.1.0.0/16\"}",
           "{dst_ip: 8.8.8.8}", "{src_ip: \"10.1.0.0/16\"}", "{proto: udp, dst_port: 53}",
           "{vni: 5001}", "{dst_ip: 203.0.113.7, proto: tcp, dst_port: 8080}",
           "{proto: sctp}", "{proto: sctp, dst_port: 80}"]
# NAT rules must be restricted to the NAT address's IP version (the loader insists)
V4_MATCHES = ["{dst_ip: \"0.0.0.0/0\"}", "{dst_ip: 8.8.8.8}", "{dst_ip: \"0.0.0.0/0\", proto: tcp}"]
DNAT_MATCHES = ["{dst_ip: 203.0.113.7, proto: tcp, dst_port: 8080}", "{dst_ip: 203.0.113.7, proto: tcp}"]
OUT_ACTIONS = ["allow", "block", "{snat: {ip: 203.0.113.7}}", "{set_dscp: 10}",
               "{snat: {ip: 203.0.113.7, ports: \"1000-1001\"}}",
               "{meter: {rate: 20pps, burst: 2}}", "{encap: {vxlan: {vni: 5001, map: vnet1}}}",
               "[{meter: {rate: 2mbps, burst: 3000}}, {set_dscp: 46}]"]
IN_ACTIONS = ["allow", "block", "decap", "{dnat: {ip: 10.1.0.4, port: 80}}", "{set_dscp: 0}",
              "{meter: {rate: 10pps, burst: 3}}"]


@st.composite
def policies(draw):
    layers = []
    for n in range(draw(st.integers(1, 3))):
        rules = {}
        for direction, actions in (("outbound", OUT_ACTIONS), ("inbound", IN_ACTIONS)):
            rs = []
            for _ in range(draw(st.integers(0, 3))):
                action = draw(st.sampled_from(actions))
                matches = (V4_MATCHES if "snat" in action else
                           DNAT_MATCHES if "dnat" in action else MATCHES)
                rs.append(f"      - {{priority: {draw(st.integers(1, 5))}, "
                          f"match: {draw(st.sampled_from(matches))}, action: {action}}}")
            rules[direction] = "\n".join(rs) if rs else "      []"
        layers.append(
            f"  - name: l{n}\n    stateful: {str(draw(st.booleans())).lower()}\n"
            f"    default: {draw(st.sampled_from(['allow', 'allow', 'block']))}\n"
            f"    outbound:\n{rules['outbound']}\n    inbound:\n{rules['inbound']}")
    names = [f"l{n}" for n in range(len(layers))]
    l1 = draw(st.permutations(names))
    l2 = draw(st.lists(st.sampled_from(names), min_size=0, max_size=2, unique=True))
    text = f"""version: 1
uplink: {{mac: "{UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{ROUTER_MAC}"}}
ports:
  - {{name: vm1, mac: "{WEB_MAC}", ips: ["10.1.0.4/24"], layers: [{", ".join(l1)}]}}
  - {{name: vm2, mac: "{DB_MAC}", ips: ["10.1.0.6/24"], layers: [{", ".join(l2)}]}}
layers:
{chr(10).join(layers)}
mappings:
  vnet1:
    "10.1.0.5": {{pa: 192.0.2.2, mac: "{REMOTE_MAC}"}}
"""
    return load_policy_text(text, "random.yaml")


def quoted_packet(proto, src, dst, sport, dport):
    layer = {"tcp": TCP(sport=sport, dport=dport, flags="A"), "udp": UDP(sport=sport, dport=dport),
             "icmp": ICMP(type=8, id=7)}[proto]
    return bytes(IP(src=src, dst=dst) / layer / Raw(b"p" * 100))


def icmp_error(src_mac, dst_mac, src, dst, icmp_type, code, quoted):
    return bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst) /
                 ICMP(type=icmp_type, code=code) / Raw(quoted))


FLAGS = ["S", "SA", "A", "A", "PA", "FA", "R"]


@st.composite
def events(draw):
    kind = draw(st.integers(0, 13))
    flags = draw(st.sampled_from(FLAGS))
    sport = draw(st.sampled_from([40000, 40001, 53000]))
    dport = draw(st.sampled_from([80, 53, 8080, 22]))
    far = draw(st.sampled_from(INTERNET))
    if kind == 0:
        f = tcp(WEB_MAC, VM_GW_MAC, VM1, far, sport, dport, flags, b"x" * draw(st.integers(0, 40)))
    elif kind == 1:
        f = tcp(ROUTER_MAC, UPLINK_MAC, far, PUBLIC, dport, sport, flags)
    elif kind == 2:
        f = udp(WEB_MAC, VM_GW_MAC, VM1, far, sport, 53) if draw(st.booleans()) else \
            udp(ROUTER_MAC, UPLINK_MAC, far, PUBLIC, 53, sport)
    elif kind == 3:
        f = tcp(WEB_MAC, DB_MAC, VM1, VM2, sport, dport, flags) if draw(st.booleans()) else \
            tcp(DB_MAC, WEB_MAC, VM2, VM1, dport, sport, flags)
    elif kind == 4:
        f = tcp(WEB_MAC, REMOTE_MAC, VM1, REMOTE, sport, dport, flags)
    elif kind == 5:
        f = vxlan_from_remote(tcp(REMOTE_MAC, WEB_MAC, REMOTE, VM1, dport, sport, flags),
                              sport=draw(st.sampled_from([1000, 2000])))
    elif kind == 6:
        f = icmp_echo(WEB_MAC, VM_GW_MAC, VM1, far, 7) if draw(st.booleans()) else \
            icmp_echo(ROUTER_MAC, UPLINK_MAC, far, PUBLIC, 7, reply=True)
    elif kind == 7:
        f = tcp(ROUTER_MAC, UPLINK_MAC, far, PUBLIC, sport, 8080, flags)
    elif kind == 9:
        # a reply with another DSCP, or from a second router of the uplink
        router = draw(st.sampled_from([ROUTER_MAC, ROUTER2_MAC]))
        tos = draw(st.sampled_from([0, 0x04, 0xB8]))
        f = tcp(router, UPLINK_MAC, far, PUBLIC, dport, draw(st.sampled_from([sport, 1000])),
                flags, tos=tos) if draw(st.booleans()) else \
            udp(router, UPLINK_MAC, far, PUBLIC, 53, sport, tos=tos)
    elif kind == 11:
        # the VM answering a connection made to it (inbound), with any DSCP
        f = tcp(WEB_MAC, VM_GW_MAC, VM1, far, dport, sport, flags,
                tos=draw(st.sampled_from([0, 8])))
    elif kind == 12:
        # an ICMP error about a packet of a connection: from a router of the wire, about
        # what left SNATed or not, or from the VM about what it received
        icmp_type, code = draw(st.sampled_from([(3, 4), (3, 3), (11, 0), (12, 0), (3, 13)]))
        proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
        who = draw(st.integers(0, 2))
        src = [PUBLIC, VM1, far][who]
        dst = far if who < 2 else VM1
        quoted = quoted_packet(proto, src, dst, sport, dport)[:draw(st.sampled_from([28, 48, 200]))]
        if who == 0:
            f = icmp_error(ROUTER_MAC, UPLINK_MAC, "198.51.100.1", PUBLIC, icmp_type, code, quoted)
        elif who == 1:
            f = icmp_error(ROUTER_MAC, WEB_MAC, "198.51.100.1", VM1, icmp_type, code, quoted)
        else:
            f = icmp_error(WEB_MAC, VM_GW_MAC, VM1, far, icmp_type, code, quoted)
    elif kind == 13:
        # one fragment (any of three, so first-fragment-last happens) of a UDP datagram
        # from the wire to the public address or from the VM
        ident = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            packet = IP(src=far, dst=PUBLIC, id=ident) / UDP(sport=53, dport=sport)
            macs = (ROUTER_MAC, UPLINK_MAC)
        else:
            packet = IP(src=VM1, dst=far, id=ident) / UDP(sport=sport, dport=53)
            macs = (WEB_MAC, VM_GW_MAC)
        piece = fragment(packet / Raw(b"f" * 900), 400)[draw(st.integers(0, 2))]
        f = bytes(Ether(src=macs[0], dst=macs[1]) / piece)
    elif kind == 10:
        # an inbound connection to a VM's own address, sent to the uplink's MAC
        f = tcp(draw(st.sampled_from([ROUTER_MAC, ROUTER2_MAC])), UPLINK_MAC, far,
                draw(st.sampled_from([VM1, VM2])), sport, dport, flags,
                tos=draw(st.sampled_from([0, 0x28])))
    else:
        assert kind == 8
        reply_port = draw(st.sampled_from([sport, 1000, 1001]))
        f = sctp(WEB_MAC, VM_GW_MAC, VM1, far, sport, dport) if draw(st.booleans()) else \
            sctp(ROUTER_MAC, UPLINK_MAC, far, PUBLIC, dport, reply_port)
    gap = draw(st.sampled_from([0.0, 0.001, 0.01, 0.2, 1.0, 40.0, 200.0]))
    return gap, f


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(policy=policies(), evs=st.lists(events(), min_size=1, max_size=40))
def test_outputs_identical_whatever_the_offload(policy, evs):
    t = 1000.0
    frames = []
    for gap, f in evs:
        t += gap
        frames.append((t, f, None))
    assert_same(policy, frames)
