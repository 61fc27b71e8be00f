"""Port security keys of a port: allowed_addresses, port_security, vlans; overlaps."""

from __future__ import annotations

import pytest

from hostsdn.errors import PolicyError
from hostsdn.policy.loader import load_policy_text
from hostsdn.policy.model import AllowedAddress, IpPrefix

HEAD = """\
version: 1
uplink: {mac: "02:00:00:00:ff:01", ip: 192.0.2.1, gateway_mac: "02:00:00:00:ee:01"}
ports:
"""


def load(ports: str):
    return load_policy_text(HEAD + ports, "p.yaml")


def error(ports: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load(ports)
    return info.value


def test_defaults_port_security_on_no_vlans_no_extras():
    port = load('  - {name: a, mac: "02:00:00:00:00:0a"}\n').ports[0]
    assert port.port_security is True
    assert port.allowed_addresses == () and port.vlans == frozenset()


def test_allowed_address_forms():
    port = load('  - name: a\n    mac: "02:00:00:00:00:0a"\n    vlans: [100, 4095]\n'
                '    allowed_addresses: ["10.9.0.0/16", "fd00:9::1", "02:00:00:00:00:aa",\n'
                '                        {ip: 10.8.0.0/24, mac: "02:00:00:00:00:ab"}]\n'
                '    port_security: true\n').ports[0]
    assert port.vlans == frozenset({100, 4095})
    assert port.allowed_addresses == (
        AllowedAddress(ip=IpPrefix(4, 0x0A090000, 16)),
        AllowedAddress(ip=IpPrefix(6, 0xFD000009 << 96 | 1, 128)),
        AllowedAddress(mac=bytes.fromhex("0200000000aa")),
        AllowedAddress(ip=IpPrefix(4, 0x0A080000, 24), mac=bytes.fromhex("0200000000ab")))


@pytest.mark.parametrize("entry, message", [
    ('"10.9.0.1/16"', "10.9.0.1/16 has host bits set (the network is 10.9.0.0/16)"),
    ('"01:00:5e:00:00:01"', "MAC address 01:00:5e:00:00:01 is multicast"),
    ("{ip: 10.0.0.0/8, vlan: 3}", "unknown key 'vlan' in an allowed address (allowed: ip, mac)"),
    ("{}", "an allowed address mapping needs ip, mac or both"),
    ("7", "expected a CIDR, a MAC address or a mapping {ip: CIDR, mac: MAC}, got integer 7"),
    ('"not-an-ip"', "invalid IP address or CIDR 'not-an-ip'"),
])
def test_bad_allowed_address(entry, message):
    err = error(f'  - name: a\n    mac: "02:00:00:00:00:0a"\n    allowed_addresses: [{entry}]\n')
    assert message in str(err)
    assert (err.file, err.line, err.field) == ("p.yaml", 6, "ports[0].allowed_addresses[0]")


def test_bad_vlan_and_port_security_types():
    err = error('  - {name: a, mac: "02:00:00:00:00:0a", vlans: [4096]}\n')
    assert "VLAN ID 4096 is out of range 0..4095" in str(err)
    assert err.field == "ports[0].vlans[0]"
    err = error('  - {name: a, mac: "02:00:00:00:00:0a", port_security: "no"}\n')
    assert err.field == "ports[0].port_security"
    err = error('  - {name: a, mac: "02:00:00:00:00:0a", vlans: [7, 7]}\n')
    assert "VLAN 7 is listed twice" in str(err) and err.field == "ports[0].vlans[1]"


def test_two_ports_with_the_same_address_name_both():
    err = error('  - {name: web, mac: "02:00:00:00:00:0a", ips: ["10.1.0.4/24"]}\n'
                '  - {name: db, mac: "02:00:00:00:00:0b", ips: ["10.1.0.6/24", "10.1.0.4/24"]}\n')
    assert (err.file, err.line, err.field) == ("p.yaml", 5, "ports[1].ips[1]")
    assert "10.1.0.4 of port 'db' overlaps 10.1.0.4 of port 'web' (line 4, ports[0].ips[0])" \
        in str(err)


def test_allowed_network_covering_another_ports_address():
    err = error('  - {name: web, mac: "02:00:00:00:00:0a", ips: ["10.1.0.4/24"]}\n'
                '  - name: router\n    mac: "02:00:00:00:00:0b"\n    ips: ["10.2.0.1"]\n'
                '    allowed_addresses: ["10.0.0.0/8"]\n')
    assert err.field == "ports[1].allowed_addresses[0]" and err.line == 8
    assert "10.0.0.0/8 of port 'router' overlaps 10.1.0.4 of port 'web'" in str(err)


def test_an_earlier_wide_network_is_blamed_on_the_later_port():
    err = error('  - name: router\n    mac: "02:00:00:00:00:0b"\n'
                '    allowed_addresses: ["fd00::/16"]\n'
                '  - {name: web, mac: "02:00:00:00:00:0a", ips: ["fd00:1::4/64"]}\n')
    assert err.field == "ports[1].ips[0]"
    assert "fd00:1::4 of port 'web' overlaps fd00::/16 of port 'router' " \
           "(line 6, ports[0].allowed_addresses[0])" in str(err)


def test_allowing_another_ports_mac():
    err = error('  - {name: a, mac: "02:00:00:00:00:0a"}\n'
                '  - {name: b, mac: "02:00:00:00:00:0b", allowed_addresses: ["02:00:00:00:00:0a"]}\n')
    assert err.field == "ports[1].allowed_addresses[0]"
    assert "02:00:00:00:00:0a of port 'b' overlaps 02:00:00:00:00:0a of port 'a'" in str(err)


def test_own_overlaps_and_other_versions_are_fine():
    policy = load('  - name: a\n    mac: "02:00:00:00:00:0a"\n    ips: ["10.1.0.4/24"]\n'
                  '    allowed_addresses: ["10.1.0.0/24", "10.0.0.0/8"]\n'
                  '  - {name: b, mac: "02:00:00:00:00:0b", ips: ["fd00::4", "11.0.0.1"]}\n')
    assert len(policy.ports) == 2
