"""Port security (anti-spoofing) on the host, against OpenStack port security / the OVS
firewall driver's rules and RFC 4861, with hostile frames; the same frames through every
NIC setting (offload changes where, never what)."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.all import ICMP, IP, UDP  # type: ignore

from fidelity import CONFIGS, assert_same
from frames import udp
from hostsdn.flows.portsec import PortGuard, eui64_link_local, is_neighbor_discovery
from hostsdn.flows.table import DropReason, OffloadReason, OffloadState
from hostsdn.nic.datapath import Datapath
from hostsdn.packet import flow_key
from hostsdn.switch import Switch
from portsec_cases import (
    A_MAC,
    ARP_BAD,
    ARP_GOOD,
    ARP_SEQUENCE,
    C_MAC,
    CASES,
    EAGER_REPLY_SEQUENCE,
    GW_MAC,
    NA_BAD,
    NA_GOOD,
    NA_SEQUENCE,
    OTHER_MAC,
    arp,
    case_frames,
    eth,
    expected_case_drops,
    portsec_policy,
)


@pytest.fixture(scope="module")
def policy():
    return portsec_policy()


def verdict(policy, frame, port):
    res = Switch(policy).receive(bytes(frame), port, 1.0)
    return res.drop_reason


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_host_verdicts(policy, case):
    _, port, frame, expected = case
    assert verdict(policy, frame, port) is expected


def test_every_case_the_same_with_offload(policy):
    """The whole table, twice (second copies can hit NIC entries), in every NIC setting."""
    ref, _ = assert_same(policy, case_frames(), CONFIGS)
    assert ref["drop_reasons"] == expected_case_drops()


def test_a_valid_arp_flow_does_not_let_a_spoofed_arp_through(policy):
    """ARP keys do not hold the sender IP: a flow made by a valid unicast ARP reply must
    not carry a spoofed one with the same MACs (host flow table or NIC entry)."""
    assert flow_key(ARP_GOOD) == flow_key(ARP_BAD)
    ref, sums = assert_same(policy, ARP_SEQUENCE, CONFIGS)
    assert ref["drop_reasons"] == {"spoofed_arp": 2}
    assert all(s["nic_hits"] == 0 for s in sums.values())


def test_a_valid_na_flow_does_not_let_a_poisoning_na_through(policy):
    assert flow_key(NA_GOOD) == flow_key(NA_BAD)
    ref, _ = assert_same(policy, NA_SEQUENCE, CONFIGS)
    assert ref["drop_reasons"] == {"spoofed_nd": 2}
    with Datapath(policy) as dp:
        for t, f, p in NA_SEQUENCE:
            dp.receive(f, p, t)
        nd_flows = [f for f in dp.switch.flows() if is_neighbor_discovery(f.key)]
        assert nd_flows and all(f.offload_state is not OffloadState.OFFLOADED
                                for f in nd_flows)
        assert any(f.offload_reason is OffloadReason.NOT_CACHEABLE for f in nd_flows)


def test_the_eager_reply_flow_of_an_inbound_frame_does_not_open_a_spoofed_source(policy):
    ref, sums = assert_same(policy, EAGER_REPLY_SEQUENCE, CONFIGS)
    assert ref["drop_reasons"] == {"spoofed_src_ip": 3}
    assert sums["default"]["nic_hits"] >= 1        # dropped by the NIC's entry, same reason


def test_simnic_hands_neighbor_discovery_to_the_host_even_with_an_entry(policy):
    """Defence in depth: an entry for an NA key (the manager never makes one) is not used."""
    from hostsdn.direction import Direction
    from hostsdn.nic.simnic import SimNic
    from hostsdn.offload.backend import FlowOp, NicEntry, OpKind
    from hostsdn.packet.transposition import Transposition

    nic = SimNic(policy)
    entry = NicEntry(direction=Direction.OUT, port="a", key=flow_key(NA_GOOD),
                     transposition=Transposition(), dest="b")
    assert nic.operate([FlowOp(OpKind.ADD, 1, entry)])[0].ok
    assert not nic.receive(NA_BAD, "a", 1.0).hit


def test_no_flow_is_made_for_a_spoofed_frame(policy):
    sw = Switch(policy)
    for i in range(50):
        sw.receive(udp(A_MAC, GW_MAC, f"10.2.0.{i}", "8.8.8.8", 5000, 53), "a", 1.0)
    assert sw.flow_count() == 0
    assert sw.drop_reasons["spoofed_src_ip"] == 50


def test_eui64_link_local():
    assert eui64_link_local(bytes.fromhex("525400123456")) == int(
        ipaddress.IPv6Address("fe80::5054:ff:fe12:3456"))


def test_guard_off_checks_nothing(policy):
    guard = PortGuard(policy.port("open"))
    assert guard.check(bytes(arp(src=OTHER_MAC, sender_mac=C_MAC)),
                       flow_key(bytes(arp(src=OTHER_MAC, sender_mac=C_MAC)))) is None


def test_icmp_error_from_own_address_passes(policy):
    frame = bytes(eth() / IP(src="10.1.0.4", dst="8.8.8.8") / ICMP(type=3, code=3)
                  / IP(src="8.8.8.8", dst="10.1.0.4") / UDP(sport=53, dport=5000))
    # port security lets it through (its own source); whether it is related to a
    # connection is the stateful layers' business (none here: icmp_unrelated)
    assert verdict(policy, frame, "a") not in (DropReason.SPOOFED_SRC_IP,
                                               DropReason.SPOOFED_SRC_MAC)
