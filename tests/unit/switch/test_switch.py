"""The sans-IO switch on the example policy: layers, NAT, VNET, meters, conntrack, steering."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, TCP, UDP, VXLAN, Ether  # type: ignore

from frames import (
    DB,
    DB_MAC,
    PUBLIC,
    REMOTE,
    REMOTE_MAC,
    REMOTE_PA,
    ROUTER_MAC,
    UPLINK_IP,
    UPLINK_MAC,
    VM_GW_MAC,
    WEB,
    WEB_MAC,
    arp_request,
    checksums_ok,
    icmp_echo,
    tcp,
    udp,
    vxlan_from_remote,
)
from hostsdn.flows.table import DropReason
from hostsdn.switch import UPLINK, Switch

INTERNET = "93.184.216.34"
CLIENT = "198.51.100.10"


@pytest.fixture
def sw(example_policy):
    return Switch(example_policy)


def only_output(res):
    assert len(res.outputs) == 1, res
    return res.outputs[0]


def test_snat_outbound_and_reply_unsnat(sw):
    port, out = only_output(sw.receive(tcp(WEB_MAC, VM_GW_MAC, WEB, INTERNET, 40001, 443, "S"),
                                       "web", 1.0))
    assert port == UPLINK
    p = Ether(out)
    assert (p[IP].src, p[TCP].sport, p[IP].dst) == (PUBLIC, 40001, INTERNET)
    assert (p.src, p.dst) == (UPLINK_MAC, ROUTER_MAC)
    assert checksums_ok(out)
    reply = tcp(ROUTER_MAC, UPLINK_MAC, INTERNET, PUBLIC, 443, 40001, "SA")
    port, back = only_output(sw.receive(reply, UPLINK, 1.1))
    q = Ether(back)
    assert port == "web"
    assert (q[IP].dst, q[TCP].dport, q.dst, q.src) == (WEB, 40001, WEB_MAC, VM_GW_MAC)
    assert checksums_ok(back)


def test_snat_keeps_port_unless_taken(sw):
    a = Ether(only_output(sw.receive(udp(WEB_MAC, VM_GW_MAC, WEB, "8.8.4.4", 5000, 53),
                                     "web", 1.0))[1])
    assert a[UDP].sport == 5000


def test_stateful_acl_blocks_unsolicited_and_explicit_block(sw):
    res = sw.receive(tcp(WEB_MAC, REMOTE_MAC, WEB, REMOTE, 40003, 25, "S"), "web", 1.0)
    assert res.drop_reason is DropReason.BLOCKED
    assert any("acl/outbound/0" in d for d in res.decided_by)
    # unsolicited inbound to a port the ACL does not open, over the VNET
    inner = tcp(REMOTE_MAC, WEB_MAC, REMOTE, WEB, 33001, 23, "S")
    res = sw.receive(vxlan_from_remote(inner), UPLINK, 1.0)
    assert res.drop_reason is DropReason.BLOCKED
    assert "web/in:acl:default" in res.decided_by[0] or any("acl:default" in d
                                                            for d in res.decided_by)


def test_vxlan_encap_with_mapping_and_decap_of_reply(sw):
    syn = tcp(WEB_MAC, REMOTE_MAC, WEB, REMOTE, 40000, 80, "S")
    port, out = only_output(sw.receive(syn, "web", 1.0))
    assert port == UPLINK
    p = Ether(out)
    assert (p.src, p.dst) == (UPLINK_MAC, ROUTER_MAC)
    assert (p[IP].src, p[IP].dst, p[UDP].dport, p[VXLAN].vni) == (UPLINK_IP, REMOTE_PA, 4789, 5001)
    assert p[UDP].chksum == 0
    inner = p[VXLAN].payload
    assert (inner.src, inner.dst) == (WEB_MAC, REMOTE_MAC)
    assert bytes(inner) == syn
    assert checksums_ok(out)
    synack = tcp(REMOTE_MAC, WEB_MAC, REMOTE, WEB, 80, 40000, "SA")
    port, back = only_output(sw.receive(vxlan_from_remote(synack, sport=60001), UPLINK, 1.1))
    assert port == "web" and back == synack


def test_dnat_port_forward_and_reply(sw):
    syn = tcp(ROUTER_MAC, UPLINK_MAC, CLIENT, PUBLIC, 50000, 8080, "S")
    port, out = only_output(sw.receive(syn, UPLINK, 1.0))
    p = Ether(out)
    assert port == "web"
    assert (p[IP].dst, p[TCP].dport, p.dst) == (WEB, 80, WEB_MAC)
    assert checksums_ok(out)
    synack = tcp(WEB_MAC, VM_GW_MAC, WEB, CLIENT, 80, 50000, "SA")
    port, back = only_output(sw.receive(synack, "web", 1.1))
    q = Ether(back)
    assert port == UPLINK
    assert (q[IP].src, q[TCP].sport, q.src, q.dst) == (PUBLIC, 8080, UPLINK_MAC, ROUTER_MAC)


def test_local_vm_to_vm_through_both_acls(sw):
    syn = tcp(WEB_MAC, DB_MAC, WEB, DB, 40002, 5432, "S")
    port, out = only_output(sw.receive(syn, "web", 1.0))
    assert port == "db" and out == syn
    synack = tcp(DB_MAC, WEB_MAC, DB, WEB, 5432, 40002, "SA")
    port, back = only_output(sw.receive(synack, "db", 1.1))
    assert port == "web" and back == synack
    # db's ACL does not let web reach another port
    res = sw.receive(tcp(WEB_MAC, DB_MAC, WEB, DB, 40009, 80, "S"), "web", 1.2)
    assert res.drop_reason is DropReason.BLOCKED
    assert any(d.startswith("db/in:db-acl:default") for d in res.decided_by)


def test_meter_drops_excess(sw):
    verdicts = []
    for i in range(10):
        r = sw.receive(udp(WEB_MAC, VM_GW_MAC, WEB, "8.8.8.8", 53000, 53), "web", 1.0 + i * 0.005)
        verdicts.append(r.drop_reason)
    assert verdicts[:3] == [None, None, None]          # burst 3
    assert verdicts.count(DropReason.METER) == 7        # 5 pps: nothing refills in 45 ms
    r = sw.receive(udp(WEB_MAC, VM_GW_MAC, WEB, "8.8.8.8", 53000, 53), "web", 2.0)
    assert r.drop_reason is None                       # refilled after a second


def test_broadcast_arp_flooded(sw):
    res = sw.receive(arp_request(WEB_MAC, WEB, REMOTE), "web", 1.0)
    assert sorted(p for p, _ in res.outputs) == ["db", UPLINK]


def test_unknown_destination_from_wire_is_no_port(sw):
    res = sw.receive(tcp(ROUTER_MAC, UPLINK_MAC, CLIENT, PUBLIC, 50001, 22, "S"), UPLINK, 1.0)
    assert res.drop_reason is DropReason.NO_PORT
    res = sw.receive(tcp(ROUTER_MAC, "02:99:99:99:99:99", CLIENT, PUBLIC, 1, 2), UPLINK, 1.0)
    assert res.drop_reason is DropReason.NO_PORT


def test_malformed_frames_are_counted_drops(sw):
    for bad in (b"", b"\x00" * 5, bytes(Ether(src=WEB_MAC, dst=VM_GW_MAC, type=0x800)) + b"\x45",
                bytes(Ether(src=WEB_MAC, dst=VM_GW_MAC, type=0x800)) + b"\x46" + b"\x00" * 19):
        res = sw.receive(bad, UPLINK if len(bad) < 12 else "web", 1.0)
        assert res.drop_reason is DropReason.MALFORMED
    assert sw.drop_reasons["malformed"] == 4


def test_spoofed_source_mac_dropped(sw):
    res = sw.receive(tcp(DB_MAC, VM_GW_MAC, WEB, "1.1.1.1", 1, 80, "S"), "web", 1.0)
    assert res.drop_reason is DropReason.SPOOFED_SRC_MAC


def test_icmp_echo_reply_matches_request_by_id(sw):
    port, out = only_output(sw.receive(icmp_echo(WEB_MAC, VM_GW_MAC, WEB, "8.8.8.8", 77),
                                       "web", 1.0))
    p = Ether(out)
    assert p[IP].src == PUBLIC and p[ICMP].id == 77 and checksums_ok(out)
    port, back = only_output(sw.receive(icmp_echo(ROUTER_MAC, UPLINK_MAC, "8.8.8.8", PUBLIC, 77,
                                                  reply=True), UPLINK, 1.1))
    assert port == "web" and Ether(back)[IP].dst == WEB
    # a reply with another id belongs to no connection
    res = sw.receive(icmp_echo(ROUTER_MAC, UPLINK_MAC, "8.8.8.8", PUBLIC, 78, reply=True),
                     UPLINK, 1.2)
    assert res.drop_reason is DropReason.NO_PORT


def test_udp_flow_times_out_and_reply_is_then_refused(sw):
    sw.receive(udp(WEB_MAC, VM_GW_MAC, WEB, "9.9.9.9", 5555, 53), "web", 1.0)
    assert sw.next_timeout() == pytest.approx(31.0)
    reply = udp(ROUTER_MAC, UPLINK_MAC, "9.9.9.9", PUBLIC, 53, 5555)
    assert sw.receive(reply, UPLINK, 20.0).outputs
    # the reply made it a stream: 120 s idle timeout from the last packet
    assert sw.handle_timeout(100.0) == 0
    assert sw.handle_timeout(140.1) >= 1
    assert sw.receive(reply, UPLINK, 141.0).drop_reason is DropReason.NO_PORT


def test_tcp_states_drive_timeouts(sw):
    from hostsdn.flows.conntrack import TcpState

    sw.receive(tcp(WEB_MAC, VM_GW_MAC, WEB, "1.2.3.4", 4000, 80, "S"), "web", 1.0)
    flow = next(f for f in sw.flows() if f.port == "web" and f.direction.value == "out")
    assert flow.conn.tcp_state is TcpState.SYN_SENT
    sw.receive(tcp(ROUTER_MAC, UPLINK_MAC, "1.2.3.4", PUBLIC, 80, 4000, "SA"), UPLINK, 1.1)
    assert flow.conn.tcp_state is TcpState.SYN_RECV
    sw.receive(tcp(WEB_MAC, VM_GW_MAC, WEB, "1.2.3.4", 4000, 80, "A"), "web", 1.2)
    assert flow.conn.tcp_state is TcpState.ESTABLISHED
    assert flow.conn.expires_at() == pytest.approx(1.2 + 432000)
    sw.receive(tcp(WEB_MAC, VM_GW_MAC, WEB, "1.2.3.4", 4000, 80, "FA"), "web", 2.0)
    sw.receive(tcp(ROUTER_MAC, UPLINK_MAC, "1.2.3.4", PUBLIC, 80, 4000, "FA"), UPLINK, 2.1)
    sw.receive(tcp(WEB_MAC, VM_GW_MAC, WEB, "1.2.3.4", 4000, 80, "A"), "web", 2.2)
    assert flow.conn.tcp_state is TcpState.TIME_WAIT
    assert sw.handle_timeout(2.2 + 121) >= 1
    assert flow.removed


def test_policy_replacement_reevaluates_flows(sw, example_policy):
    from pathlib import Path

    from hostsdn.policy.loader import load_policy_text

    syn = tcp(WEB_MAC, DB_MAC, WEB, DB, 40002, 5432, "S")
    assert sw.receive(syn, "web", 1.0).outputs
    text = (Path(example_policy.source).read_text()
            .replace("dst_port: [80, 443, 5432]", "dst_port: [80, 443]"))
    sw.replace_policy(load_policy_text(text, "new.yaml"))
    res = sw.receive(tcp(WEB_MAC, DB_MAC, WEB, DB, 40002, 5432, "A"), "web", 1.1)
    assert res.drop_reason is DropReason.BLOCKED


NVGRE_POLICY = """version: 1
uplink: {mac: "02:00:00:00:ff:01", ip: 192.0.2.1, gateway_mac: "02:00:00:00:ee:01"}
ports:
  - {name: vm1, mac: "02:00:00:00:00:01", ips: ["10.1.0.4/24", "fd00::4/64"], layers: [vnet, nat6]}
layers:
  - name: vnet
    default: allow
    inbound:
      - {priority: 10, match: {vni: 7001}, action: decap}
      - {priority: 5, match: {vni: 7002}, action: block}
  - name: nat6
    stateful: true
    default: allow
    outbound:
      - {priority: 10, match: {dst_ip: "2001:db8::/32"}, action: {snat: {ip: "2001:db8:ffff::7"}}}
mappings:
  peers:
    "10.1.0.5": {pa: 192.0.2.2, mac: "02:00:00:00:00:05"}
"""


def test_nvgre_decap_by_vsid_and_ipv6_snat():
    from hostsdn.packet import make_nvgre, make_tcp
    from hostsdn.policy.loader import load_policy_text

    sw = Switch(load_policy_text(NVGRE_POLICY, "nvgre.yaml"))
    inner = make_tcp("02:00:00:00:00:05", "02:00:00:00:00:01", "10.1.0.5", "10.1.0.4", 1000, 80,
                     "A")
    outer = make_nvgre(ROUTER_MAC, UPLINK_MAC, "192.0.2.2", "192.0.2.1", 7001, inner)
    assert sw.receive(outer, UPLINK, 1.0).outputs == [("vm1", inner)]
    other = make_nvgre(ROUTER_MAC, UPLINK_MAC, "192.0.2.2", "192.0.2.1", 7002, inner)
    assert sw.receive(other, UPLINK, 1.0).drop_reason is DropReason.BLOCKED
    v6 = make_tcp(WEB_MAC, VM_GW_MAC, "fd00::4", "2001:db8::1", 4000, 443, "S")
    port, out = only_output(sw.receive(v6, "vm1", 1.0))
    from scapy.all import IPv6  # type: ignore
    p = Ether(out)
    assert port == UPLINK and p[IPv6].src == "2001:db8:ffff::7" and p[TCP].sport == 4000
    assert checksums_ok(out)
    reply = make_tcp(ROUTER_MAC, UPLINK_MAC, "2001:db8::1", "2001:db8:ffff::7", 443, 4000, "SA")
    port, back = only_output(sw.receive(reply, UPLINK, 1.1))
    assert port == "vm1" and Ether(back)[IPv6].dst == "fd00::4" and checksums_ok(back)
