"""Policy loader: the pinned example loads; every kind of bad input names line and field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hostsdn.direction import Direction
from hostsdn.errors import PolicyError
from hostsdn.policy.loader import load_policy_text, parse_match
from hostsdn.policy.model import (
    ALLOW,
    DECAP,
    DefaultAction,
    Dnat,
    Encap,
    EncapKind,
    IpInterface,
    IpPrefix,
    Match,
    Meter,
    MeterUnit,
    SetDscp,
    Snat,
)
from hostsdn.runtime.policyfile import load_policy

EXAMPLE_PATH = Path(__file__).with_name("example.yaml")
EXAMPLE = EXAMPLE_PATH.read_text()


def ip4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def edit(old: str, new: str, text: str = EXAMPLE) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def load_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return info.value


# ------------------------------------------------------------------ the example


def test_example_loads_from_file() -> None:
    policy = load_policy(EXAMPLE_PATH)
    assert policy.source == str(EXAMPLE_PATH)
    assert policy.version == 1
    assert policy.uplink.mac == bytes.fromhex("02000000ff01")
    assert (policy.uplink.version, policy.uplink.ip) == (4, ip4("192.0.2.1"))
    assert policy.uplink.gateway_mac == bytes.fromhex("02000000ee01")
    (port,) = policy.ports
    assert port.name == "vm1"
    assert port.mac == bytes.fromhex("020000000001")
    assert port.ips == (IpInterface(4, ip4("10.1.0.4"), 24),)
    assert port.layers == ("acl", "nat", "vnet")
    assert port.line == 4
    assert list(policy.layers) == ["acl", "nat", "vnet"]
    assert [layer.name for layer in policy.port_layers("vm1")] == ["acl", "nat", "vnet"]


def test_example_layers_and_rules() -> None:
    policy = load_policy_text(EXAMPLE)
    acl, nat, vnet = policy.layers.values()
    assert (acl.stateful, acl.default, acl.line) == (True, DefaultAction.BLOCK, 9)
    assert (nat.stateful, nat.default) == (False, DefaultAction.ALLOW)

    (rule,) = acl.outbound
    assert rule.id == "acl/outbound/0"
    assert (rule.layer, rule.direction, rule.index, rule.priority, rule.line) == (
        "acl", Direction.OUT, 0, 100, 13)
    assert rule.match == Match(proto=frozenset({6}), dst_port=((80, 443),))
    assert rule.actions == (ALLOW,)

    (rule,) = acl.inbound
    assert rule.id == "acl/inbound/0"
    assert rule.match == Match(src_ip=(IpPrefix(4, ip4("10.1.0.0"), 16),),
                               proto=frozenset({6}), dst_port=((22, 22),))

    assert nat.outbound[0].match == Match(dst_ip=(IpPrefix(4, 0, 0),))
    assert nat.outbound[0].actions == (Snat(ip4("203.0.113.7"), 4, 1024, 65535),)
    assert nat.inbound[0].line == 21
    assert nat.inbound[0].actions == (Dnat(ip4("10.1.0.4"), 4, 80),)

    assert vnet.outbound[0].actions == (Encap(EncapKind.VXLAN, 5001, "vnet1"),)
    assert vnet.outbound[0].actions[0] == Encap("vxlan", 5001, "vnet1")  # type: ignore[arg-type]
    assert vnet.inbound[0].match == Match(vni=frozenset({5001}))
    assert vnet.inbound[0].actions == (DECAP,)
    assert vnet.rules(Direction.IN) == vnet.inbound


def test_example_mappings() -> None:
    policy = load_policy_text(EXAMPLE)
    vnet1 = policy.mappings["vnet1"]
    entry = vnet1.lookup(4, ip4("10.1.0.5"))
    assert entry is not None
    assert (entry.ca, entry.version, entry.pa, entry.pa_version, entry.mac, entry.line) == (
        ip4("10.1.0.5"), 4, ip4("192.0.2.2"), 4, bytes.fromhex("020000000005"), 31)
    assert vnet1.lookup(4, ip4("10.1.0.6")) is None
    assert vnet1.lookup(6, ip4("10.1.0.5")) is None


def test_rule_ids_are_unique_and_in_file_order() -> None:
    policy = load_policy_text(EXAMPLE)
    ids = [r.id for layer in policy.layers.values() for r in layer.outbound + layer.inbound]
    assert ids == ["acl/outbound/0", "acl/inbound/0", "nat/outbound/0", "nat/inbound/0",
                   "vnet/outbound/0", "vnet/inbound/0"]


# ------------------------------------------------------------------ bad input

BAD_INPUTS = [
    pytest.param(
        'priority: 100',
        'priority: "100"',
        13, 'layers[0].outbound[0].priority',
        "expected an integer, got string '100'",
        id='wrong_type_priority'),
    pytest.param(
        'stateful: true',
        'stateful: yes',
        10, 'layers[0].stateful',
        "expected true or false, got string 'yes'",
        id='wrong_type_bool'),
    pytest.param(
        '    outbound:\n      - {priority: 100',
        '    outbound: {priority: 100',
        12, 'layers[0].outbound',
        'expected a list, got a mapping',
        id='wrong_type_list'),
    pytest.param(
        'dst_port: "80-443"',
        'dst_prot: "80-443"',
        13, 'layers[0].outbound[0].match.dst_prot',
        "unknown key 'dst_prot'; did you mean 'dst_port'?",
        id='unknown_key_match'),
    pytest.param(
        'default: block',
        'defualt: block',
        11, 'layers[0].defualt',
        "unknown key 'defualt'; did you mean 'default'?",
        id='unknown_key_layer'),
    pytest.param(
        'match: {vni: 5001}, action: decap}',
        'match: {vni: 5001}, action: decap, log: true}',
        28, 'layers[2].inbound[0].log',
        "unknown key 'log' (allowed: priority, match, action)",
        id='unknown_key_rule'),
    pytest.param(
        '["10.1.0.0/16"]',
        '["10.1.0.0/33"]',
        15, 'layers[0].inbound[0].match.src_ip[0]',
        "invalid IP address or CIDR '10.1.0.0/33'",
        id='bad_cidr'),
    pytest.param(
        '["10.1.0.0/16"]',
        '["10.1.0.1/16"]',
        15, 'layers[0].inbound[0].match.src_ip[0]',
        '10.1.0.1/16 has host bits set (the network is 10.1.0.0/16)',
        id='cidr_host_bits'),
    pytest.param(
        'dst_port: "80-443"',
        'dst_port: "443-80"',
        13, 'layers[0].outbound[0].match.dst_port',
        "invalid port range '443-80': 443 is greater than 80",
        id='bad_range'),
    pytest.param(
        'dst_port: 22',
        'dst_port: 70000',
        15, 'layers[0].inbound[0].match.dst_port',
        'port 70000 is out of range 0..65535',
        id='port_too_big'),
    pytest.param(
        'dst_port: 22',
        'dst_port: [22, "ssh"]',
        15, 'layers[0].inbound[0].match.dst_port[1]',
        "invalid port or port range 'ssh': expected a number or 'lo-hi'",
        id='bad_port_list_item'),
    pytest.param(
        '[acl, nat, vnet]',
        '[acl, nat, vnets]',
        7, 'ports[0].layers[2]',
        "unknown layer 'vnets' (layers: acl, nat, vnet)",
        id='missing_layer_ref'),
    pytest.param(
        '    layers: [acl, nat, vnet]                              # top (VM side) -> bottom (wire side)\n',
        '    layers: [acl, nat, vnet]\n  - {name: vm2, mac: "02:00:00:00:00:01"}\n',
        8, 'ports[1].mac',
        'duplicate port MAC 02:00:00:00:00:01 (first used on line 5)',
        id='duplicate_mac'),
    pytest.param(
        '    layers: [acl, nat, vnet]                              # top (VM side) -> bottom (wire side)\n',
        '    layers: [acl, nat, vnet]\n  - {name: vm1, mac: "02:00:00:00:00:02"}\n',
        8, 'ports[1].name',
        "duplicate port name 'vm1' (first defined on line 4)",
        id='duplicate_port_name'),
    pytest.param(
        '  - name: nat',
        '  - name: acl',
        16, 'layers[1].name',
        "duplicate layer name 'acl' (first defined on line 9)",
        id='duplicate_layer'),
    pytest.param(
        'map: vnet1',
        'map: vnet2',
        26, 'layers[2].outbound[0].action.encap.vxlan.map',
        "unknown mapping 'vnet2' (mappings: vnet1)",
        id='missing_mapping_ref'),
    pytest.param(
        'ips: ["10.1.0.4/24"]',
        'ips: ["10.1.0.4/24"',
        7, None,
        "YAML syntax error: expected ',' or ']', but got '<scalar>' (while parsing a flow sequence on line 6)",
        id='yaml_syntax'),
    pytest.param(
        '    default: block',
        '    default: block\n    default: allow',
        12, 'layers[0].default',
        "duplicate key 'default' (first given on line 11)",
        id='yaml_duplicate_key'),
    pytest.param(
        'version: 1',
        'version: 2',
        1, 'version',
        'unsupported policy version 2 (this hostsdn reads version 1)',
        id='version_2'),
    pytest.param(
        'uplink: {mac: "02:00:00:00:ff:01", ',
        'uplink: {',
        2, 'uplink.mac',
        "missing required key 'mac'",
        id='missing_key'),
    pytest.param(
        '    mac: "02:00:00:00:00:01"',
        '    mac: "03:00:00:00:00:01"',
        5, 'ports[0].mac',
        'MAC address 03:00:00:00:00:01 is multicast; a unicast address is needed',
        id='multicast_mac'),
    pytest.param(
        '    mac: "02:00:00:00:00:01"',
        '    mac: "02:00:00:00:00"',
        5, 'ports[0].mac',
        "invalid MAC address '02:00:00:00:00': expected six hex octets separated by ':'",
        id='bad_mac'),
    pytest.param(
        '{snat: {ip: 203.0.113.7}}',
        '{snat: {ip: "2001:db8::7"}}',
        19, 'layers[1].outbound[0].action.snat.ip',
        'snat ip 2001:db8::7 is IPv6 but the rule also matches IPv4 packets; restrict the match (e.g. dst_ip: ::/0 or ethertype: ipv6)',
        id='snat_family'),
    pytest.param(
        'dst_ip: 203.0.113.7, proto: tcp, dst_port: 8080',
        'dst_ip: 203.0.113.7',
        22, 'layers[1].inbound[0].action.dnat.port',
        'a dnat port needs a match restricted to tcp, udp or sctp (e.g. proto: tcp)',
        id='dnat_port_needs_proto'),
    pytest.param(
        'proto: tcp, dst_port: 22',
        'proto: [tcp, icmp], dst_port: 22',
        15, 'layers[0].inbound[0].match.dst_port',
        'port conditions need proto tcp, udp or sctp, but proto also lists icmp',
        id='ports_with_icmp'),
    pytest.param(
        'match: {vni: 5001}',
        'match: {vni: }',
        28, 'layers[2].inbound[0].match.vni',
        'expected a value, got null (leave the key out for a wildcard)',
        id='null_condition'),
    pytest.param(
        'match: {vni: 5001}',
        'match: {vni: []}',
        28, 'layers[2].inbound[0].match.vni',
        'an empty list matches nothing (leave the key out for a wildcard)',
        id='empty_list'),
    pytest.param(
        'match: {vni: 5001}',
        'match: {vni: 16777216}',
        28, 'layers[2].inbound[0].match.vni',
        'vni 16777216 is out of range 0..16777215',
        id='vni_range'),
    pytest.param(
        'vni: 5001, map',
        'vni: -1, map',
        26, 'layers[2].outbound[0].action.encap.vxlan.vni',
        'vni -1 is out of range 0..16777215',
        id='encap_vni_range'),
    pytest.param(
        'action: decap}',
        'action: decapsulate}',
        28, 'layers[2].inbound[0].action',
        "unknown action 'decapsulate': expected allow, block, decap or a mapping with one of snat, dnat, encap, meter, set_dscp",
        id='unknown_action'),
    pytest.param(
        '{snat: {ip: 203.0.113.7}}',
        '{snat: {ip: 203.0.113.7}, set_dscp: 3}',
        19, 'layers[1].outbound[0].action',
        'an action mapping must have exactly one key, got 2 (snat, set_dscp); give several actions as a list',
        id='two_key_action'),
    pytest.param(
        'action: decap}',
        'action: [block, decap]}',
        28, 'layers[2].inbound[0].action[0]',
        "'block' ends the rule: it can only be the last action of the list",
        id='block_not_last'),
    pytest.param(
        'action: decap}',
        'action: [decap, {set_dscp: 1}, decap]}',
        28, 'layers[2].inbound[0].action[2]',
        "'decap' is given twice in one rule",
        id='duplicate_action'),
    pytest.param(
        'action: decap}',
        'action: [{meter: {rate: 5mbit}}, decap]}',
        28, 'layers[2].inbound[0].action[0].meter.burst',
        "missing required key 'burst'",
        id='meter_missing_burst'),
    pytest.param(
        'action: decap}',
        'action: [{meter: {rate: 5mbyte, burst: 100}}, decap]}',
        28, 'layers[2].inbound[0].action[0].meter.rate',
        "invalid meter rate '5mbyte': expected a number (packets per second) or a number with a unit: pps, kpps, mpps, bps, kbps, mbps, gbps, bit, kbit, mbit, gbit",
        id='meter_bad_unit'),
    pytest.param(
        'action: decap}',
        'action: [{meter: {rate: 5mbit, burst: 10}}, decap]}',
        28, 'layers[2].inbound[0].action[0].meter.burst',
        'meter burst 10 bytes is below a minimum frame (64)',
        id='meter_small_burst'),
    pytest.param(
        'action: decap}',
        'action: {set_dscp: 64}}',
        28, 'layers[2].inbound[0].action.set_dscp',
        'dscp 64 is out of range 0..63',
        id='dscp_range'),
    pytest.param(
        '"10.1.0.5":',
        '"10.1.0.0/24":',
        31, "mappings.vnet1['10.1.0.0/24']",
        "invalid IP address '10.1.0.0/24': a single address without prefix length is needed",
        id='mapping_key_cidr'),
    pytest.param(
        'pa: 192.0.2.2',
        'pa: "2001:db8::2"',
        31, "mappings.vnet1['10.1.0.5'].pa",
        'pa 2001:db8::2 is IPv6 but the uplink is IPv4',
        id='mapping_pa_family'),
    pytest.param(
        'action: decap}',
        'action: {allow: {}}}',
        28, 'layers[2].inbound[0].action',
        "'allow' takes no parameters: write it as a plain string",
        id='allow_with_params'),
    pytest.param(
        'match: {dst_ip: "10.1.0.0/16"}',
        'match: {src_ip: "fd00::/8", dst_ip: "10.1.0.0/16"}',
        26, 'layers[2].outbound[0].match.dst_ip',
        'src_ip and dst_ip have no IP version in common: the rule can never match',
        id='src_dst_family'),
    pytest.param(
        'match: {dst_ip: "10.1.0.0/16"}',
        'match: {ethertype: arp, dst_ip: "10.1.0.0/16"}',
        26, 'layers[2].outbound[0].match.ethertype',
        'ethertype arp admits no IPv4 packets, which dst_ip needs: the rule can never match',
        id='ethertype_vs_ip'),
    pytest.param(
        '  - name: vnet\n',
        '  - name: "v net"\n',
        23, 'layers[2].name',
        "invalid name 'v net': use letters, digits, '_', '.' and '-' (at most 64 characters, not starting with '.' or '-')",
        id='bad_name'),
    pytest.param(
        'default: block',
        'default: drop',
        11, 'layers[0].default',
        "expected allow or block, got string 'drop'",
        id='default_value'),
    pytest.param(
        'match: {dst_ip: "10.1.0.0/16"}',
        'match: {ethertype: [ipv6, "0x8915"], dst_ip: "10.1.0.0/16"}',
        26, 'layers[2].outbound[0].match.ethertype',
        'ethertype ipv6, 0x8915 admits no IPv4 packets, which dst_ip needs: the rule can never match',
        id='ethertype_v6_vs_v4'),
    pytest.param(
        'stateful: true',
        'stateful: !!binary dHJ1ZQ==',
        10, 'layers[0].stateful',
        'unsupported YAML tag tag:yaml.org,2002:binary',
        id='unsupported_tag'),
    pytest.param(
        'ip: 192.0.2.1,',
        'ip: 192.0.2.300,',
        2, 'uplink.ip',
        "invalid IP address '192.0.2.300'",
        id='ip_bad'),
    pytest.param(
        'ip: 192.0.2.1,',
        'ip: 3221225985,',
        2, 'uplink.ip',
        'expected an IP address, got integer 3221225985',
        id='ip_number'),
    pytest.param(
        '{snat: {ip: 203.0.113.7}}',
        '{snat: {ip: 203.0.113.7, ports: "0-100"}}',
        19, 'layers[1].outbound[0].action.snat.ports',
        'port 0 is out of range 1..65535',
        id='snat_ports'),
    pytest.param(
        'proto: tcp, dst_port: "80-443"',
        'proto: tpc, dst_port: "80-443"',
        13, 'layers[0].outbound[0].match.proto',
        "unknown protocol 'tpc': expected tcp, udp, sctp, icmp, icmpv6 or a number 0..255",
        id='proto_name'),
    pytest.param(
        'match: {vni: 5001}',
        'match: {ethertype: "0x0100"}',
        28, 'layers[2].inbound[0].match.ethertype',
        'ethertype 0x0100 is out of range 0x0600..0xffff',
        id='ethertype_bad'),
    pytest.param(
        'ips: ["10.1.0.4/24"]',
        'ips: ["10.1.0.4/24", "10.1.0.4/16"]',
        6, 'ports[0].ips[1]',
        'duplicate address 10.1.0.4',
        id='port_ip_dup'),
    pytest.param(
        '[acl, nat, vnet]',
        '[acl, nat, acl]',
        7, 'ports[0].layers[2]',
        "layer 'acl' is listed twice",
        id='port_layer_twice'),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), BAD_INPUTS)
def test_bad_input(old: str, new: str, line: int, field: str | None, message: str) -> None:
    err = load_error(edit(old, new))
    assert (err.line, err.field) == (line, field)
    assert err.file == "p.yaml"
    assert str(err) == (f"p.yaml:{line}: {message}" + (f" (field {field})" if field else ""))


def test_error_names_line_and_field_exactly() -> None:
    err = load_error(edit('dst_port: "80-443"', 'dst_port: "80-"'))
    assert err.line == 13
    assert err.field == "layers[0].outbound[0].match.dst_port"
    assert str(err) == ("p.yaml:13: invalid port or port range '80-': expected a number or "
                        "'lo-hi' (field layers[0].outbound[0].match.dst_port)")


def test_the_earliest_of_several_errors_is_reported() -> None:
    text = edit("priority: 100", 'priority: "x"', edit("stateful: true", "stateful: 1"))
    err = load_error(text)
    assert (err.line, err.field) == (10, "layers[0].stateful")


def test_definitions_are_checked_before_references() -> None:
    # The port refers to 'nat', which is no more: the duplicate is the real mistake.
    err = load_error(edit("  - name: nat", "  - name: acl"))
    assert (err.line, err.field) == (16, "layers[1].name")


def test_missing_key_points_at_the_enclosing_mapping() -> None:
    text = edit('      - {priority: 10, match: {vni: 5001}, action: decap}',
                '      - priority: 10\n        match: {vni: 5001}')
    err = load_error(text)
    assert (err.line, err.field) == (28, "layers[2].inbound[0].action")
    assert "missing required key 'action'" in str(err)


def test_empty_and_non_mapping_documents() -> None:
    err = load_error("# nothing\n")
    assert (str(err), err.line) == ("p.yaml:1: the policy is empty", 1)
    err = load_error("\n- 1\n- 2\n")
    assert (str(err), err.line) == ("p.yaml:2: a policy must be a YAML mapping, got a list", 2)


def test_recursive_alias_is_rejected() -> None:
    err = load_error("version: 1\nx: &a [*a]\n")
    assert (err.line, err.field) == (2, "x[0]")
    assert str(err) == "p.yaml:2: recursive YAML alias (field x[0])"


def test_multiple_documents_are_rejected() -> None:
    err = load_error(EXAMPLE + "---\nversion: 1\n")
    assert err.line == 32
    assert str(err).startswith("p.yaml:32: YAML syntax error: but found another document")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.file == str(missing)
    assert "cannot read the policy file" in str(info.value)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe\n")
    with pytest.raises(PolicyError) as info:
        load_policy(binary)
    assert str(info.value) == f"{binary}: the policy file is not UTF-8 text (byte 11)"


def test_control_character_names_its_line() -> None:
    err = load_error("version: 1\nx: \x00\n")
    assert (str(err), err.line) == ("p.yaml:2: YAML error: unacceptable character #x0000", 2)


# ------------------------------------------------------------------ accepted forms


def test_yaml_1_2_scalars() -> None:
    # A MAC whose octets look like base-60 digits stays a MAC; "yes" is not a boolean;
    # hex ethertypes work unquoted.
    text = edit('    mac: "02:00:00:00:00:01"', "    mac: 52:54:00:12:34:56")
    text = edit("match: {vni: 5001}", "match: {vni: 5001, ethertype: 0x8915}", text)
    policy = load_policy_text(text)
    assert policy.ports[0].mac == bytes.fromhex("525400123456")
    assert policy.layers["vnet"].inbound[0].match.ethertype == frozenset({0x8915})


@pytest.mark.parametrize(("rate", "expected"), [
    ("250", (250.0, MeterUnit.PPS)),
    ("2.5", (2.5, MeterUnit.PPS)),
    ("1000pps", (1000.0, MeterUnit.PPS)),
    ("10kpps", (10_000.0, MeterUnit.PPS)),
    ("1Mpps", (1e6, MeterUnit.PPS)),
    ("5mbps", (5e6, MeterUnit.BPS)),
    ("5mbit", (5e6, MeterUnit.BPS)),
    ("100kbit", (1e5, MeterUnit.BPS)),
    ("'1.5 gbps'", (1.5e9, MeterUnit.BPS)),
    ("64000bps", (64_000.0, MeterUnit.BPS)),
])
def test_meter_rates(rate: str, expected: tuple[float, MeterUnit]) -> None:
    text = edit("action: decap}", f"action: [{{meter: {{rate: {rate}, burst: 1500}}}}, decap]}}")
    (meter, decap) = load_policy_text(text).layers["vnet"].inbound[0].actions
    assert meter == Meter(expected[0], 1500.0, expected[1])
    assert decap == DECAP


def test_action_list_in_order() -> None:
    text = edit("80-443\"}, action: allow}",
                "80-443\"}, action: [{meter: {rate: 10kpps, burst: 100}}, {set_dscp: 46}, allow]}")
    rule = load_policy_text(text).layers["acl"].outbound[0]
    assert rule.actions == (Meter(10_000.0, 100.0, MeterUnit.PPS), SetDscp(46), ALLOW)
    assert not rule.blocks


def test_block_as_the_last_action_of_a_list() -> None:
    text = edit("80-443\"}, action: allow}",
                "80-443\"}, action: [{meter: {rate: 1pps, burst: 1}}, block]}")
    rule = load_policy_text(text).layers["acl"].outbound[0]
    assert rule.blocks


def test_match_all_when_match_is_left_out() -> None:
    text = edit("{priority: 10, match: {vni: 5001}, action: decap}",
                "{priority: 10, action: decap}")
    assert load_policy_text(text).layers["vnet"].inbound[0].match.is_wildcard


def test_snat_ports_and_ipv6_nat() -> None:
    text = edit('{priority: 10, match: {dst_ip: "0.0.0.0/0"}, action: {snat: {ip: 203.0.113.7}}}',
                '{priority: 10, match: {dst_ip: "::/0"}, '
                'action: {snat: {ip: "2001:db8::7", ports: "20000-29999"}}}')
    (snat,) = load_policy_text(text).layers["nat"].outbound[0].actions
    assert snat == Snat(0x20010DB8 << 96 | 7, 6, 20000, 29999)


def test_nat_family_pinned_by_ethertype() -> None:
    text = edit('match: {dst_ip: "0.0.0.0/0"}', "match: {ethertype: ipv4}")
    (snat,) = load_policy_text(text).layers["nat"].outbound[0].actions
    assert isinstance(snat, Snat)


def test_parse_match_normalises() -> None:
    match = parse_match({
        "src_ip": ["10.0.0.0/8", "fd00::/8", "10.0.0.0/8"],
        "dst_port": [443, "80-90", "85-100", 101],
        "proto": ["TCP", 17],
        "src_mac": "02:00:00:00:00:01",
        "ethertype": ["ipv4", "0x86dd", 2048],
        "vlan": [10, 20],
        "dscp": 46,
    })
    assert match == Match(
        src_ip=(IpPrefix(4, 10 << 24, 8), IpPrefix(6, 0xFD << 120, 8)),
        dst_port=((80, 101), (443, 443)),
        proto=frozenset({6, 17}),
        src_mac=frozenset({bytes.fromhex("020000000001")}),
        ethertype=frozenset({0x0800, 0x86DD}),
        vlan=frozenset({10, 20}),
        dscp=frozenset({46}),
    )


def test_parse_match_errors_name_the_field() -> None:
    with pytest.raises(PolicyError) as info:
        parse_match({"dst_port": [80, "90-85"]})
    assert (info.value.line, info.value.field) == (None, "dst_port[1]")
    assert str(info.value) == ("invalid port range '90-85': 90 is greater than 85 "
                               "(field dst_port[1])")


def test_nothing_is_half_built() -> None:
    # A valid policy, then a bad one: the bad one raises; no shared state leaks.
    good = load_policy_text(EXAMPLE)
    with pytest.raises(PolicyError):
        load_policy_text(edit("map: vnet1", "map: vnet2"))
    assert load_policy_text(EXAMPLE) == good


def test_meter_rate_must_be_finite() -> None:
    text = edit("action: decap}", "action: [{meter: {rate: .inf, burst: 10}}, decap]}")
    err = load_error(text)
    assert str(err) == (f"p.yaml:28: meter rate must be a positive number, got {math.inf} "
                        "(field layers[2].inbound[0].action[0].meter.rate)")
