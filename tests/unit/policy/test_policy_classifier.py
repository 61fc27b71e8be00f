"""Classifier semantics, checked on the tuple-space classifier, on the same with every
rule forced onto the residual list, and on the linear reference."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import hostsdn.policy.classifier as classifier_module
from hostsdn.direction import Direction
from hostsdn.packet.key import FRAG_FIRST, FRAG_LATER, FRAG_NONE, NO_VNI, FlowKey
from hostsdn.policy.classifier import Classifier, LinearClassifier, port_range_blocks
from hostsdn.policy.loader import parse_match
from hostsdn.policy.model import ALLOW, IpPrefix, Match, Rule

Lookup = Callable[[FlowKey], Rule | None]

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def ip4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


BASE = FlowKey(vlans=(), src_mac=MAC_A, dst_mac=MAC_B, ethertype=0x0800, ip_version=4,
               src_ip=ip4("10.0.0.1"), dst_ip=ip4("10.0.0.2"), proto=6, dscp=0,
               src_port=1000, dst_port=80, frag=FRAG_NONE, vni=NO_VNI, inner=None)


def key(**fields: Any) -> FlowKey:
    """An IPv4 TCP key 10.0.0.1:1000 -> 10.0.0.2:80 unless overridden."""
    return BASE._replace(**fields)


ARP = key(ethertype=0x0806, ip_version=0, src_ip=0, dst_ip=0, proto=0, src_port=0,
          dst_port=0)
V6 = key(ethertype=0x86DD, ip_version=6, src_ip=0xFD00 << 112 | 1, dst_ip=0xFD00 << 112 | 2)


def rule(index: int, priority: int, layer: str = "acl", **match: Any) -> Rule:
    return Rule(layer, Direction.OUT, index, priority, parse_match(match), (ALLOW,))


def build(kind: str, rules: Sequence[Rule]) -> Lookup:
    if kind == "tss":
        return Classifier(rules).lookup
    if kind == "residual":
        classifier = Classifier(rules, max_expansion=0)
        assert classifier.stats().entries == 0
        return classifier.lookup
    return LinearClassifier(rules).lookup


@pytest.fixture(params=["tss", "residual", "linear"])
def make(request: pytest.FixtureRequest) -> Callable[[Sequence[Rule]], Lookup]:
    kind: str = request.param
    return lambda rules: build(kind, rules)


def test_no_rules(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    assert make([])(key()) is None


def test_highest_priority_wins(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    low = rule(0, 10, dst_ip="10.0.0.2")          # more specific, lower priority
    high = rule(1, 20, dst_ip="10.0.0.0/8")
    lookup = make([low, high])
    assert lookup(key()) is high
    assert lookup(key(dst_ip=ip4("10.9.9.9"))) is high
    assert lookup(key(dst_ip=ip4("11.0.0.2"))) is None


def test_ties_go_to_the_first_rule_in_the_file(
        make: Callable[[Sequence[Rule]], Lookup]) -> None:
    first = rule(0, 10, proto="tcp")
    second = rule(1, 10, dst_port=80)
    third = rule(2, 10)
    # Given out of file order: the index decides, not the position.
    lookup = make([third, second, first])
    assert lookup(key()) is first
    assert lookup(key(proto=17)) is second
    assert lookup(key(proto=1)) is third


def test_wildcard_matches_everything(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    anything = rule(0, 0)
    lookup = make([anything])
    for k in (key(), ARP, V6, key(frag=FRAG_LATER), key(vlans=(5,)), key(vni=7)):
        assert lookup(k) is anything


def test_port_ranges_and_lists(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    web = rule(0, 10, dst_port=["80-443", 8080])
    high = rule(1, 5, src_port="1024-65535")
    lookup = make([web, high])
    assert lookup(key(dst_port=79, src_port=1023)) is None
    assert lookup(key(dst_port=79, src_port=5000)) is high
    for port in (80, 81, 255, 256, 442, 443, 8080):
        assert lookup(key(dst_port=port, src_port=5)) is web
    for port in (444, 8079, 8081, 0, 65535):
        assert lookup(key(dst_port=port, src_port=5)) is None


def test_ports_need_tcp_udp_or_sctp(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    ssh = rule(0, 10, dst_port=22)
    lookup = make([ssh])
    assert lookup(key(dst_port=22)) is ssh
    assert lookup(key(dst_port=22, proto=17)) is ssh
    assert lookup(key(dst_port=22, proto=132)) is ssh
    # ICMP: dst_port holds (type << 8) | code, which a port rule must not see.
    assert lookup(key(dst_port=22, proto=1)) is None
    assert lookup(key(dst_port=22, proto=47)) is None


def test_non_first_fragments_do_not_match_port_rules(
        make: Callable[[Sequence[Rule]], Lookup]) -> None:
    ssh = rule(0, 10, proto="tcp", dst_port=22)
    tcp = rule(1, 5, proto="tcp")
    lookup = make([ssh, tcp])
    assert lookup(key(dst_port=22, frag=FRAG_FIRST)) is ssh
    assert lookup(key(dst_port=0, src_port=0, frag=FRAG_LATER)) is tcp
    assert lookup(key(dst_port=22, frag=FRAG_LATER)) is tcp


def test_full_port_range_still_needs_ports(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    any_port = rule(0, 10, dst_port="0-65535")
    lookup = make([any_port])
    assert lookup(key(dst_port=0)) is any_port
    assert lookup(key(proto=1)) is None
    assert lookup(key(frag=FRAG_LATER)) is None


def test_ipv6(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    v6 = rule(0, 10, dst_ip="fd00::/16")
    v6_host = rule(1, 20, src_ip="fd00::1", dst_ip="fd00::2")
    v4_all = rule(2, 30, dst_ip="0.0.0.0/0")
    lookup = make([v6, v6_host, v4_all])
    assert lookup(V6) is v6_host
    assert lookup(V6._replace(src_ip=0xFD00 << 112 | 3)) is v6
    assert lookup(V6._replace(dst_ip=0xFE80 << 112 | 2)) is None
    assert lookup(key()) is v4_all
    # An IPv4 rule never matches an IPv6 key whose integers happen to fit.
    assert make([rule(0, 1, dst_ip="0.0.0.2")])(V6._replace(dst_ip=2)) is None


def test_mixed_version_lists(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    both = rule(0, 10, src_ip=["10.0.0.0/8", "fd00::/8"], dst_ip=["fd00::2", "10.0.0.2"])
    lookup = make([both])
    assert lookup(key()) is both
    assert lookup(V6) is both
    assert lookup(key(dst_ip=ip4("10.0.0.3"))) is None


def test_contradictory_versions_never_match(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    # The loader rejects this; a Match built directly still behaves.
    never = Rule("x", Direction.OUT, 0, 1,
                 Match(src_ip=(IpPrefix(4, 0, 0),), dst_ip=(IpPrefix(6, 0, 0),)), (ALLOW,))
    lookup = make([never])
    assert lookup(key()) is None
    assert lookup(V6) is None


def test_vni(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    vnet = rule(0, 10, vni=[5001, 0])
    lookup = make([vnet])
    assert lookup(key(vni=5001)) is vnet
    assert lookup(key(vni=0)) is vnet
    assert lookup(key(vni=5002)) is None
    assert lookup(key()) is None  # not a tunnel frame


def test_vlan_is_the_outermost_tag(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    tagged = rule(0, 10, vlan=100)
    lookup = make([tagged])
    assert lookup(key(vlans=(100,))) is tagged
    assert lookup(key(vlans=(100, 200))) is tagged
    assert lookup(key(vlans=(200, 100))) is None
    assert lookup(key()) is None
    assert make([rule(0, 1, vlan=0)])(key()) is None  # untagged is not VID 0


def test_proto_and_dscp_need_ip(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    proto0 = rule(0, 10, proto=0)
    dscp0 = rule(1, 5, dscp=0)
    lookup = make([proto0, dscp0])
    assert lookup(ARP) is None
    assert lookup(key(proto=0)) is proto0
    assert lookup(key(dscp=0)) is dscp0
    assert lookup(key(dscp=46)) is None


def test_macs_and_ethertype(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    arp = rule(0, 10, ethertype="arp")
    from_a = rule(1, 5, src_mac="02:00:00:00:00:01",
                  dst_mac=["02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"])
    lookup = make([arp, from_a])
    assert lookup(ARP) is arp
    assert lookup(key()) is from_a
    assert lookup(key(dst_mac=b"\xff" * 6)) is from_a
    assert lookup(key(src_mac=MAC_B)) is None


def test_all_fields_together(make: Callable[[Sequence[Rule]], Lookup]) -> None:
    full = rule(0, 10, src_ip="10.0.0.0/24", dst_ip="10.0.0.2", src_port="1000-1999",
                dst_port=[80, 443], proto=["tcp", "udp"], src_mac="02:00:00:00:00:01",
                dst_mac="02:00:00:00:00:02", ethertype="ipv4", vlan=[7, 8], dscp=[0, 46],
                vni=42)
    lookup = make([full])
    hit = key(vlans=(8, 1), vni=42, dscp=46, proto=17, dst_port=443, src_port=1999)
    assert lookup(hit) is full
    changes: list[tuple[str, Any]] = [
        ("vlans", (9,)), ("vni", 43), ("dscp", 1), ("proto", 132), ("dst_port", 444),
        ("src_port", 2000), ("src_ip", ip4("10.0.1.1")), ("dst_ip", ip4("10.0.0.3")),
        ("src_mac", MAC_B), ("ethertype", 0x86DD)]
    for field, value in changes:
        assert lookup(hit._replace(**{field: value})) is None, field


def test_rules_from_several_layers_with_equal_index(
        make: Callable[[Sequence[Rule]], Lookup]) -> None:
    a = rule(0, 10, layer="a")
    b = rule(0, 10, layer="b")
    assert make([a, b])(key()) is a
    assert make([b, a])(key()) is b


def test_port_range_blocks_cover_exactly() -> None:
    for lo, hi in [(0, 65535), (80, 443), (1024, 65535), (0, 0), (65535, 65535), (1, 65534)]:
        for step in (1, 4, 8):
            covered: list[int] = []
            for start, plen in port_range_blocks(lo, hi, step):
                assert plen % step == 0
                size = 1 << (16 - plen)
                assert start % size == 0
                covered.extend(range(start, start + size))
            assert covered == list(range(lo, hi + 1))


def test_large_rule_goes_to_the_residual_list() -> None:
    big = rule(0, 10, src_port="1-65534", dst_port="1-65534")
    small = rule(1, 5, dst_port=80)
    classifier = Classifier([big, small])
    stats = classifier.stats()
    assert (stats.rules, stats.residual) == (2, 1)
    assert classifier.lookup(key()) is big
    assert classifier.lookup(key(src_port=0)) is small
    assert len(classifier) == 2
    assert classifier.rules == (big, small)


def test_stats() -> None:
    classifier = Classifier([rule(0, 1, dst_ip="10.0.0.0/8"), rule(1, 1, dst_ip="11.0.0.0/8"),
                             rule(2, 1, dst_ip="10.0.0.1")])
    assert classifier.stats().tuples == 2
    assert classifier.stats().entries == 3


def _random_rules(count: int, seed: int) -> list[Rule]:
    """Bench-like rules: random /16, /24, /32 networks, ports, protos and priorities."""
    rng = random.Random(seed)

    def net() -> str:
        plen = rng.choice((16, 24, 32))
        address = (10 << 24 | rng.getrandbits(24)) >> (32 - plen) << (32 - plen)
        return f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}" \
            f"/{plen}"

    rules = []
    for i in range(count):
        fields: dict[str, Any] = {}
        if rng.random() < 0.8:
            fields["dst_ip"] = net()
        if rng.random() < 0.4:
            fields["src_ip"] = net()
        if rng.random() < 0.7:
            fields["proto"] = rng.choice(("tcp", "udp"))
            if rng.random() < 0.8:
                low = rng.choice((22, 80, 443, rng.randrange(65536)))
                fields["dst_port"] = f"{low}-{min(65535, low + rng.choice((0, 9, 999)))}"
        rules.append(rule(i, rng.randrange(50), **fields))
    return rules


def _keys_near(rules: Sequence[Rule], count: int, seed: int) -> list[FlowKey]:
    """Keys inside some rule's networks and ports (or random), so that lookups hit."""
    rng = random.Random(seed)
    keys = []
    for _ in range(count):
        match = rng.choice(rules).match
        fields: dict[str, int] = {}
        for name, nets in (("src_ip", match.src_ip), ("dst_ip", match.dst_ip)):
            fields[name] = (nets[0].network | rng.getrandbits(32 - nets[0].prefixlen)
                            if nets and rng.random() < 0.9 else 10 << 24 | rng.getrandbits(24))
        if match.dst_port and rng.random() < 0.9:
            fields["dst_port"] = rng.randint(*match.dst_port[0])
        else:
            fields["dst_port"] = rng.randrange(65536)
        keys.append(key(proto=rng.choice((6, 17, 1)), src_port=rng.randrange(65536), **fields))
    return keys


def test_pruned_lookups_equal_linear_on_many_rules() -> None:
    rules = _random_rules(400, seed=1)
    fast, slow = Classifier(rules), LinearClassifier(rules)
    assert fast.stats().tuples >= 20  # enough shapes that pruning matters
    keys = _keys_near(rules, 1500, seed=2)
    assert sum(slow.lookup(k) is not None for k in keys) > 500
    for k in keys:
        assert fast.lookup(k) is slow.lookup(k), k


def test_signature_cache_overflow_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier_module, "MAX_SIGNATURES", 2)
    rules = _random_rules(200, seed=3)
    fast, slow = Classifier(rules), LinearClassifier(rules)
    for k in _keys_near(rules, 500, seed=4):
        assert fast.lookup(k) is slow.lookup(k), k
    assert all(len(plan.pruned) <= 2 for plan in fast._plans.values())


def test_few_tuples_are_probed_without_a_signature() -> None:
    rules = [rule(0, 1, dst_ip="10.0.0.0/8"), rule(1, 2, dst_ip="10.0.0.2", dst_port=80)]
    classifier = Classifier(rules)
    assert classifier.lookup(key()) is rules[1]
    assert classifier.lookup(key(dst_port=81)) is rules[0]
    assert classifier.lookup(key(dst_ip=ip4("11.0.0.2"))) is None
    assert all(plan.sets == () for plan in classifier._plans.values())
