"""Tuple-space classifier == linear reference on random rule lists and random keys.

Like OVS tests/test-classifier.c: rules draw their values from small pools so that
rules overlap, keys are drawn mostly from the values of the rules (so that lookups
hit, tie and just miss range edges), and every lookup is compared with the brute force.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsdn.direction import Direction
from hostsdn.packet.key import FRAG_FIRST, FRAG_LATER, FRAG_NONE, NO_VNI, FlowKey
from hostsdn.policy.classifier import Classifier, LinearClassifier
from hostsdn.policy.loader import parse_match
from hostsdn.policy.model import (
    ALLOW,
    IP_WIDTH,
    MAX_VNI,
    IpPrefix,
    Match,
    PortRange,
    Rule,
)

V4_ADDRESSES = [0x0A000001, 0x0A000002, 0x0A0001FF, 0x0A010000, 0xC0A80001, 0xFFFFFFFF, 0]
V6_ADDRESSES = [0xFD00 << 112 | 1, 0xFD00 << 112 | 2, 0xFD00_0000_0001 << 80 | 5,
                0xFE80 << 112 | 1, (1 << 128) - 1, 0]
V4_PLENS = [0, 1, 8, 16, 23, 24, 31, 32]
V6_PLENS = [0, 8, 48, 64, 127, 128]
PORTS = [0, 1, 22, 53, 80, 443, 1023, 1024, 4096, 8080, 32768, 65534, 65535]
PROTOS = [0, 1, 6, 17, 58, 132]
MACS = [bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), b"\xff" * 6]
ETHERTYPES = [0x0800, 0x86DD, 0x0806, 0x8915]
VIDS = [0, 1, 100, 4095]
DSCPS = [0, 10, 46, 63]
VNIS = [0, 1, 5001, MAX_VNI]


@st.composite
def prefixes(draw: st.DrawFn) -> IpPrefix:
    version = draw(st.sampled_from([4, 4, 6]))
    address = draw(st.sampled_from(V4_ADDRESSES if version == 4 else V6_ADDRESSES))
    plen = draw(st.sampled_from(V4_PLENS if version == 4 else V6_PLENS))
    shift = IP_WIDTH[version] - plen
    return IpPrefix(version, address >> shift << shift, plen)


@st.composite
def port_ranges(draw: st.DrawFn) -> PortRange:
    lo = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    width = draw(st.sampled_from([0, 0, 1, 7, 100, 1000, 65535]))
    return lo, min(65535, lo + width)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | st.none() | strategy


def _values(pool: list[Any]) -> st.SearchStrategy[frozenset[Any] | None]:
    return _optional(st.frozensets(st.sampled_from(pool), min_size=1, max_size=3))


@st.composite
def ip_ranges(draw: st.DrawFn) -> tuple[IpPrefix, ...]:
    """An inclusive address range ``lo-hi`` as the loader turns it into prefixes (the
    policy's ``10.0.0.1-10.0.0.9``), its ends near the pool's addresses."""
    version = draw(st.sampled_from([4, 4, 6]))
    pool = V4_ADDRESSES if version == 4 else V6_ADDRESSES
    top = (1 << IP_WIDTH[version]) - 1

    def near() -> int:
        return min(top, max(0, draw(st.sampled_from(pool)) + draw(st.sampled_from(
            [0, 0, 1, -1, 7, -255, 1 << 20]))))

    lo, hi = sorted((near(), near()))
    text = f"{ipaddress.ip_address(lo) if version == 4 else ipaddress.IPv6Address(lo)}-" \
           f"{ipaddress.ip_address(hi) if version == 4 else ipaddress.IPv6Address(hi)}"
    nets = parse_match({"src_ip": text}).src_ip
    assert nets is not None
    return nets


def _ip_condition() -> st.SearchStrategy[tuple[IpPrefix, ...] | None]:
    return _optional(st.lists(prefixes(), min_size=1, max_size=3).map(tuple)
                     | ip_ranges()
                     | st.tuples(ip_ranges(), prefixes()).map(lambda rp: (*rp[0], rp[1])))


matches = st.builds(
    Match,
    src_ip=_ip_condition(),
    dst_ip=_ip_condition(),
    src_port=_optional(st.lists(port_ranges(), min_size=1, max_size=2).map(tuple)),
    dst_port=_optional(st.lists(port_ranges(), min_size=1, max_size=3).map(tuple)),
    proto=_values(PROTOS),
    src_mac=_values(MACS),
    dst_mac=_values(MACS),
    ethertype=_values(ETHERTYPES),
    vlan=_values(VIDS),
    dscp=_values(DSCPS),
    vni=_values(VNIS),
)


@st.composite
def rule_lists(draw: st.DrawFn, max_size: int = 25) -> list[Rule]:
    count = draw(st.integers(0, max_size))
    rules = []
    for position in range(count):
        layer = draw(st.sampled_from(["a", "a", "b"]))
        # Small priority and index pools: ties on priority, even on (priority, index).
        index = draw(st.sampled_from([position, position, 0, 1]))
        priority = draw(st.integers(0, 4))
        rules.append(Rule(layer, Direction.OUT, index, priority, draw(matches), (ALLOW,)))
    return rules


def _pick_ip(draw: st.DrawFn, nets: tuple[IpPrefix, ...] | None, version: int) -> int:
    fitting = [n for n in nets or () if n.version == version]
    if fitting and draw(st.integers(0, 9)) < 8:
        net = draw(st.sampled_from(fitting))
        host_bits = IP_WIDTH[version] - net.prefixlen
        return net.network | draw(st.integers(0, (1 << host_bits) - 1))
    return draw(st.sampled_from(V4_ADDRESSES if version == 4 else V6_ADDRESSES))


def _pick_port(draw: st.DrawFn, ranges: tuple[PortRange, ...] | None) -> int:
    if ranges and draw(st.integers(0, 9)) < 8:
        lo, hi = draw(st.sampled_from(ranges))
        port = draw(st.sampled_from([lo, hi, lo - 1, hi + 1]) | st.integers(lo, hi))
        return min(65535, max(0, port))
    return draw(st.sampled_from(PORTS))


def _pick(draw: st.DrawFn, values: frozenset[Any] | None, pool: list[Any]) -> Any:
    if values and draw(st.integers(0, 9)) < 8:
        return draw(st.sampled_from(sorted(values)))
    return draw(st.sampled_from(pool))


@st.composite
def keys_for(draw: st.DrawFn, rules: list[Rule]) -> FlowKey:
    """A key built mostly from one rule's values (or a random one)."""
    match = draw(st.sampled_from(rules)).match if rules else Match()
    ethertype = _pick(draw, match.ethertype, ETHERTYPES)
    version = {0x0800: 4, 0x86DD: 6}.get(ethertype, 0)
    if version == 0 and draw(st.integers(0, 4)) == 0:
        version = draw(st.sampled_from([4, 6]))  # odd but representable: keep it honest
    vlan = _pick(draw, match.vlan, VIDS)
    vlans = draw(st.sampled_from([(), (vlan,), (vlan, draw(st.sampled_from(VIDS)))]))
    vni = _pick(draw, match.vni, VNIS) if draw(st.integers(0, 3)) else NO_VNI
    ip_fields: dict[str, Any] = {"src_ip": 0, "dst_ip": 0, "proto": 0, "dscp": 0,
                                 "src_port": 0, "dst_port": 0}
    frag = FRAG_NONE
    if version:
        ip_fields = {
            "src_ip": _pick_ip(draw, match.src_ip, version),
            "dst_ip": _pick_ip(draw, match.dst_ip, version),
            "proto": _pick(draw, match.proto, PROTOS),
            "dscp": _pick(draw, match.dscp, DSCPS),
            "src_port": _pick_port(draw, match.src_port),
            "dst_port": _pick_port(draw, match.dst_port),
        }
        frag = draw(st.sampled_from([FRAG_NONE, FRAG_NONE, FRAG_NONE, FRAG_FIRST, FRAG_LATER]))
    return FlowKey(vlans=vlans, src_mac=_pick(draw, match.src_mac, MACS),
                   dst_mac=_pick(draw, match.dst_mac, MACS), ethertype=ethertype,
                   ip_version=version, frag=frag, vni=vni, **ip_fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rules=rule_lists(),
       max_expansion=st.sampled_from([0, 1, 8, 64, 1024]))
def test_classifier_equals_linear(data: st.DataObject, rules: list[Rule],
                                  max_expansion: int) -> None:
    fast = Classifier(rules, max_expansion=max_expansion)
    slow = LinearClassifier(rules)
    for _ in range(20):
        key = data.draw(keys_for(rules))
        expected = slow.lookup(key)
        got = fast.lookup(key)
        assert got is expected, (key, got, expected)
        if expected is not None:
            assert expected.match.matches(key)


@settings(max_examples=200, deadline=None)
@given(match=matches, data=st.data())
def test_single_rule_agrees_with_match(match: Match, data: st.DataObject) -> None:
    rule = Rule("a", Direction.IN, 0, 0, match, (ALLOW,))
    classifier = Classifier([rule])
    for _ in range(10):
        key = data.draw(keys_for([rule]))
        assert (classifier.lookup(key) is rule) == match.matches(key)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rules=rule_lists(max_size=80))
def test_pruned_classifier_equals_linear_on_longer_lists(data: st.DataObject,
                                                         rules: list[Rule]) -> None:
    """Longer lists: many tuples, so the per-key signature prunes most of them."""
    fast = Classifier(rules)
    slow = LinearClassifier(rules)
    for _ in range(30):
        key = data.draw(keys_for(rules))
        assert fast.lookup(key) is slow.lookup(key), key


@settings(max_examples=300, deadline=None)
@given(data=st.data(), version=st.sampled_from([4, 6]))
def test_an_ip_range_matches_exactly_its_addresses(data: st.DataObject, version: int) -> None:
    """``lo-hi`` split into prefixes matches x exactly when lo <= x <= hi (the edges and
    their neighbours included), checked with the reference ``Match.matches`` and the
    tuple-space classifier."""
    top = (1 << IP_WIDTH[version]) - 1
    lo = data.draw(st.integers(0, top))
    hi = data.draw(st.integers(lo, min(top, lo + data.draw(st.sampled_from(
        [0, 1, 2, 255, 1 << 16, 1 << 40, top])))))
    text = f"{ipaddress.ip_address(lo) if version == 4 else ipaddress.IPv6Address(lo)}-" \
           f"{ipaddress.ip_address(hi) if version == 4 else ipaddress.IPv6Address(hi)}"
    match = parse_match({"dst_ip": text})
    rule = Rule("a", Direction.IN, 0, 0, match, (ALLOW,))
    classifier = Classifier([rule])
    for x in {lo, hi, max(0, lo - 1), min(top, hi + 1), data.draw(st.integers(lo, hi)),
              data.draw(st.integers(0, top))}:
        key = FlowKey(vlans=(), src_mac=MACS[0], dst_mac=MACS[1],
                      ethertype=0x0800 if version == 4 else 0x86DD, ip_version=version,
                      src_ip=0, dst_ip=x, proto=6, dscp=0, src_port=1, dst_port=2,
                      frag=FRAG_NONE)
        assert match.matches(key) == (lo <= x <= hi), (text, x)
        assert (classifier.lookup(key) is rule) == (lo <= x <= hi), (text, x)
