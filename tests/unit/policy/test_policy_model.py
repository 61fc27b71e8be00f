"""Model values: invariants, formatting, Match.matches edge cases."""

from __future__ import annotations

import dataclasses

import pytest

from hostsdn.direction import Direction
from hostsdn.packet.key import FRAG_LATER, FRAG_NONE, NO_VNI, FlowKey
from hostsdn.policy.model import (
    ALLOW,
    BLOCK,
    MATCH_ALL,
    IpInterface,
    IpPrefix,
    Match,
    Meter,
    MeterUnit,
    Rule,
    SetDscp,
    ip_to_str,
    mac_to_str,
)

KEY = FlowKey(vlans=(), src_mac=b"\x02" + bytes(5), dst_mac=b"\x04" + bytes(5),
              ethertype=0x0800, ip_version=4, src_ip=0x0A000001, dst_ip=0x0A000002, proto=17,
              dscp=0, src_port=5000, dst_port=53, frag=FRAG_NONE)


def test_rule_id_and_blocks() -> None:
    rule = Rule("acl", Direction.IN, 3, 10, MATCH_ALL, (Meter(5.0, 3.0, MeterUnit.PPS),
                                                              BLOCK))
    assert rule.id == "acl/inbound/3"
    assert rule.blocks
    assert not dataclasses.replace(rule, actions=(SetDscp(1), ALLOW)).blocks


def test_values_are_frozen_and_hashable() -> None:
    rule = Rule("acl", Direction.OUT, 0, 1, Match(proto=frozenset({6})), (ALLOW,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.priority = 2  # type: ignore[misc]
    assert hash(rule) == hash(dataclasses.replace(rule))
    assert not hasattr(rule, "__dict__")


def test_formatting() -> None:
    assert str(IpPrefix(4, 0x0A010000, 16)) == "10.1.0.0/16"
    assert str(IpPrefix(6, 0xFD00 << 112, 8)) == "fd00::/8"
    assert str(IpInterface(4, 0x0A010004, 24)) == "10.1.0.4/24"
    assert ip_to_str(6, 1) == "::1"
    assert mac_to_str(bytes.fromhex("02000000ff01")) == "02:00:00:00:ff:01"


@pytest.mark.parametrize(("args", "message"), [
    ((5, 0, 0), "IP version must be 4 or 6, not 5"),
    ((4, 0, 33), "prefix length 33 out of range for IPv4"),
    ((4, 0x0A000001, 24), "network 0xa000001/24 has host bits set"),
])
def test_ip_prefix_invariants(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IpPrefix(*args)


def test_match_invariants() -> None:
    with pytest.raises(ValueError, match="Match.src_ip is empty"):
        Match(src_ip=())
    with pytest.raises(ValueError, match="Match.dst_port range 9-8 is invalid"):
        Match(dst_port=((9, 8),))
    with pytest.raises(ValueError, match="Match.dscp value 64 out of range 0..63"):
        Match(dscp=frozenset({64}))
    with pytest.raises(ValueError, match="Match.vni value -1 out of range"):
        Match(vni=frozenset({NO_VNI}))
    with pytest.raises(ValueError, match="6-byte MACs"):
        Match(src_mac=frozenset({b"\x00"}))


def test_match_all() -> None:
    assert MATCH_ALL.is_wildcard
    assert MATCH_ALL.matches(KEY)
    assert not Match(proto=frozenset({17})).is_wildcard


def test_prefix_zero_still_needs_the_version() -> None:
    any_v4 = Match(dst_ip=(IpPrefix(4, 0, 0),))
    assert any_v4.matches(KEY)
    assert not any_v4.matches(KEY._replace(ip_version=6, ethertype=0x86DD))
    assert not any_v4.matches(KEY._replace(ip_version=0, ethertype=0x0806, src_ip=0,
                                           dst_ip=0, proto=0))


def test_port_match_and_fragments() -> None:
    dns = Match(dst_port=((53, 53),))
    assert dns.matches(KEY)
    assert not dns.matches(KEY._replace(frag=FRAG_LATER))
    assert not dns.matches(KEY._replace(proto=1))
    assert Match(proto=frozenset({17})).matches(KEY._replace(frag=FRAG_LATER))
