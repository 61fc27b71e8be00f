"""flow_key semantics (key.py / docs/design.md) and reply_key."""

from __future__ import annotations

import ipaddress

import pytest

from hostsdn.flows import keys
from hostsdn.flows.keys import normalize
from hostsdn.packet import (
    FRAG_NONE,
    NO_VNI,
    FlowKey,
    flow_key,
    frame_key,
    make_arp_reply,
    make_icmp_echo,
    make_icmpv6_echo,
    make_nvgre,
    make_tcp,
    make_udp,
    make_vxlan,
    parse_frame,
    reply_key,
)

M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
B1, B2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def n(address: str) -> int:
    return int(ipaddress.ip_address(address))


def test_tcp_key() -> None:
    data = make_tcp(M1, M2, "10.0.0.1", "10.0.0.2", 1234, 80, vlan=(100, 200), dscp=46, ecn=3)
    assert flow_key(data) == FlowKey((100, 200), B1, B2, 0x0800, 4, n("10.0.0.1"),
                                     n("10.0.0.2"), 6, 46, 1234, 80, FRAG_NONE)


def test_flow_key_accepts_bytearray_and_memoryview_and_is_hashable() -> None:
    data = make_udp(M1, M2, "10.0.0.1", "10.0.0.2", 1, 2)
    key = flow_key(data)
    assert flow_key(bytearray(data)) == key == flow_key(memoryview(data))
    assert hash(flow_key(bytearray(data))) == hash(key)
    assert type(flow_key(bytearray(data)).src_mac) is bytes


def test_udp6_key_and_dscp_from_traffic_class() -> None:
    data = make_udp(M1, M2, "2001:db8::1", "2001:db8::2", 53, 5353, b"q", dscp=10)
    key = flow_key(data)
    assert key[3:12] == (0x86DD, 6, n("2001:db8::1"), n("2001:db8::2"), 17, 10, 53, 5353,
                         FRAG_NONE)
    assert key.has_ports


@pytest.mark.parametrize("make, src, dst, request_type, reply_type", [
    (make_icmp_echo, "10.0.0.1", "10.0.0.2", 8, 0),
    (make_icmpv6_echo, "fe80::1", "fe80::2", 128, 129),
])
def test_icmp_echo_key_and_reply_key(make: object, src: str, dst: str, request_type: int,
                                     reply_type: int) -> None:
    request = make(M1, M2, src, dst, 0x77, 1)  # type: ignore[operator]
    reply = make(M2, M1, dst, src, 0x77, 1, reply=True)  # type: ignore[operator]
    key = flow_key(request)
    assert (key.src_port, key.dst_port) == (0x77, request_type << 8)
    assert not key.has_ports
    assert reply_key(key) == flow_key(reply)
    assert flow_key(reply).dst_port == reply_type << 8
    assert reply_key(reply_key(key)) == key


def test_reply_key_swaps_tcp() -> None:
    forward = make_tcp(M1, M2, "10.0.0.1", "10.0.0.2", 1234, 80, vlan=7)
    backward = make_tcp(M2, M1, "10.0.0.2", "10.0.0.1", 80, 1234, vlan=7)
    assert reply_key(flow_key(forward)) == flow_key(backward)


def test_reply_key_keeps_icmp_error_ports() -> None:
    key = FlowKey((), B1, B2, 0x0800, 4, 1, 2, 1, 0, 0, 3 << 8 | 1, FRAG_NONE)
    assert reply_key(key) == key._replace(src_mac=B2, dst_mac=B1, src_ip=2, dst_ip=1)


def test_arp_key_is_l2_only() -> None:
    data = make_arp_reply(M1, "10.0.0.1", M2, "10.0.0.2")
    assert flow_key(data) == FlowKey((), B1, B2, 0x0806, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE)


def test_vxlan_key_and_its_reply() -> None:
    inner = make_tcp(M1, M2, "192.168.1.1", "192.168.1.2", 5555, 443)
    data = make_vxlan("02:00:00:00:01:01", "02:00:00:00:01:02", "172.16.0.1", "172.16.0.2",
                      4242, inner, src_port=40000)
    key = flow_key(data)
    assert (key.proto, key.src_port, key.dst_port, key.vni) == (17, 40000, 4789, 4242)
    assert key.inner == flow_key(inner)
    assert key == frame_key(parse_frame(data))
    reply = reply_key(key)
    assert reply.vni == 4242
    assert reply.inner == reply_key(flow_key(inner))
    # The replying VTEP sends to port 4789 from a source port of its own choosing, which
    # a normalised key carries as 0: the reply key is what the host will look up.
    assert (reply.src_port, reply.dst_port) == (0, 4789)
    answer = make_vxlan("02:00:00:00:01:02", "02:00:00:00:01:01", "172.16.0.2", "172.16.0.1",
                        4242, make_tcp(M2, M1, "192.168.1.2", "192.168.1.1", 443, 5555),
                        src_port=61234)
    assert reply == normalize(flow_key(answer))
    assert reply_key(reply) == normalize(key)


def test_nvgre_reply_key_is_the_reply_frames_key() -> None:
    inner = make_udp(M1, M2, "10.0.0.1", "10.0.0.2", 1000, 53)
    data = make_nvgre("02:00:00:00:01:01", "02:00:00:00:01:02", "172.16.0.1", "172.16.0.2",
                      77, inner)
    answer = make_nvgre("02:00:00:00:01:02", "02:00:00:00:01:01", "172.16.0.2", "172.16.0.1",
                        77, make_udp(M2, M1, "10.0.0.2", "10.0.0.1", 53, 1000))
    assert reply_key(flow_key(data)) == flow_key(answer)


@pytest.mark.parametrize("version, proto, icmp_type", [
    (4, 1, 128),       # ICMPv6's echo request number inside ICMPv4: not an echo
    (6, 58, 8),        # ICMPv4's echo request number inside ICMPv6: not an echo
    (6, 1, 8),         # protocol 1 over IPv6 is not ICMPv6
])
def test_reply_key_knows_echo_only_of_the_right_icmp(version: int, proto: int,
                                                     icmp_type: int) -> None:
    key = FlowKey((), B1, B2, 0x0800 if version == 4 else 0x86DD, version, 1, 2, proto, 0, 0,
                  icmp_type << 8, FRAG_NONE)
    assert reply_key(key) == key._replace(src_mac=B2, dst_mac=B1, src_ip=2, dst_ip=1)


def test_flows_keys_reply_key_is_the_packet_one() -> None:
    assert keys.reply_key is reply_key


def test_nvgre_key() -> None:
    inner = make_udp(M1, M2, "2001:db8::1", "2001:db8::2", 1, 2)
    data = make_nvgre("02:00:00:00:01:01", "02:00:00:00:01:02", "172.16.0.1", "172.16.0.2",
                      0x10203, inner, flow_id=9)
    key = flow_key(data)
    assert (key.proto, key.vni, key.inner) == (47, 0x10203, flow_key(inner))
    assert (key.src_port, key.dst_port) == (0, 0)


def test_plain_frames_have_no_vni() -> None:
    key = flow_key(make_udp(M1, M2, "10.0.0.1", "10.0.0.2", 1, 4790))
    assert key.vni == NO_VNI and key.inner is None
