"""The contract every NicBackend passes, parametrized over the registered backends.

A backend that needs privileges or a kernel feature the machine lacks is skipped with the
reason; on CI (root, BPF) every registered backend runs.
"""

from __future__ import annotations

import pytest

import hostsdn.nic  # noqa: F401  (registers the backends)
from frames import DB_MAC, ROUTER_MAC, UPLINK_MAC, VM_GW_MAC, WEB_MAC, tcp
from hostsdn.direction import Direction
from hostsdn.errors import NicError
from hostsdn.flows.keys import normalize
from hostsdn.flows.meter import MeterTable
from hostsdn.flows.table import DropReason
from hostsdn.offload.backend import (
    Capabilities,
    FlowOp,
    NicBackend,
    NicEntry,
    OpError,
    OpKind,
    backend_names,
    get_backend_factory,
)
from hostsdn.packet import apply_transposition, flow_key
from hostsdn.packet.transposition import IDENTITY, Transposition


def make_backend(name: str, policy, **kw) -> NicBackend:
    try:
        return get_backend_factory(name)(policy=policy, meters=MeterTable(), **kw)
    except NicError as exc:  # e.g. no BPF syscall / not root
        pytest.skip(f"{name} backend unavailable here: {exc}")


@pytest.fixture(params=backend_names())
def nic(request, example_policy):
    b = make_backend(request.param, example_policy, out_capacity=8, in_capacity=8)
    yield b
    b.close()


def syn_to_internet(sport=40001, flags="A"):
    return tcp(WEB_MAC, VM_GW_MAC, "10.1.0.4", "93.184.216.34", sport, 443, flags)


def out_entry(frame, t=IDENTITY, **kw) -> NicEntry:
    return NicEntry(direction=Direction.OUT, port="web", key=normalize(flow_key(frame)),
                    transposition=t, dest="uplink", **kw)


def test_is_a_nic_backend(nic):
    assert isinstance(nic, NicBackend)
    caps = nic.capabilities()
    assert isinstance(caps, Capabilities) and caps.out_capacity == 8 and caps.in_capacity == 8


def test_miss_is_an_exception_and_touches_nothing(nic):
    rx = nic.receive(syn_to_internet(), "web", 1.0)
    assert not rx.hit and not rx.outputs
    assert nic.flow_count() == 0


def test_add_hit_stats_delete(nic):
    frame = syn_to_internet()
    t = Transposition(set_src_ip=0xCB007107, set_src_mac=bytes.fromhex("02000000ff01"),
                      set_dst_mac=bytes.fromhex("02000000ee01"))
    [r] = nic.operate([FlowOp(OpKind.ADD, 1, out_entry(frame, t))])
    assert r.ok, r.error
    assert nic.flow_count() == 1 and nic.flow_count(Direction.OUT) == 1
    rx = nic.receive(frame, "web", 2.0)
    assert rx.hit and rx.outputs == [("uplink", apply_transposition(frame, t))]
    assert rx.handles == [1]
    st = nic.flow_stats([1])[1]
    assert st.packets == 1 and st.bytes == len(frame)
    assert 1 in nic.dump_flows()
    # another port's identical frame does not hit the web entry (exact match incl. port)
    assert not nic.receive(frame, "db", 2.0).hit
    [r] = nic.operate([FlowOp(OpKind.DELETE, 1)])
    assert r.ok and nic.flow_count() == 0
    assert not nic.receive(frame, "web", 3.0).hit


def test_each_op_gets_its_own_result(nic):
    f1, f2 = syn_to_internet(1), syn_to_internet(2)
    results = nic.operate([FlowOp(OpKind.ADD, 1, out_entry(f1)),
                           FlowOp(OpKind.ADD, 2, out_entry(f1)),      # duplicate match
                           FlowOp(OpKind.DELETE, 99),                 # unknown handle
                           FlowOp(OpKind.ADD, 3, out_entry(f2))])
    assert [r.error for r in results] == [None, OpError.DUPLICATE_MATCH, OpError.NO_SUCH_FLOW,
                                          None]


def test_capacity_is_enforced_per_direction(nic):
    ops = [FlowOp(OpKind.ADD, i + 1, out_entry(syn_to_internet(1000 + i))) for i in range(9)]
    results = nic.operate(ops)
    assert [r.error for r in results] == [None] * 8 + [OpError.CACHE_FULL]
    assert nic.flow_count(Direction.OUT) == 8 and nic.flow_count(Direction.IN) == 0


def test_drop_entry_and_tcp_flags_go_to_host(nic):
    frame = syn_to_internet(7)
    nic.operate([FlowOp(OpKind.ADD, 1, out_entry(frame, drop=True, drop_reason=DropReason.BLOCKED,
                                                 tcp_flags_to_host=False))])
    rx = nic.receive(frame, "web", 1.0)
    assert rx.hit and not rx.outputs and rx.drops == [("web", DropReason.BLOCKED)]
    syn = syn_to_internet(8, "S")
    plain = syn_to_internet(8, "A")
    nic.operate([FlowOp(OpKind.ADD, 2, out_entry(plain))])
    assert not nic.receive(syn, "web", 1.0).hit or normalize(flow_key(syn)) != \
        normalize(flow_key(plain))
    assert nic.receive(plain, "web", 1.0).hit


def test_inbound_steering_by_mac_and_by_entry(nic):
    reply = tcp(ROUTER_MAC, UPLINK_MAC, "93.184.216.34", "203.0.113.7", 443, 40001, "A")
    t = Transposition(set_dst_ip=0x0A010004, set_dst_mac=bytes.fromhex("020000000001"))
    e = NicEntry(direction=Direction.IN, port="web", key=normalize(flow_key(reply)),
                 transposition=t, dest="web")
    nic.operate([FlowOp(OpKind.ADD, 5, e)])
    rx = nic.receive(reply, "uplink", 1.0)
    assert rx.hit and rx.outputs == [("web", apply_transposition(reply, t))]


def test_local_forward_needs_both_entries(nic):
    f = tcp(WEB_MAC, DB_MAC, "10.1.0.4", "10.1.0.6", 40002, 5432, "A")
    k = normalize(flow_key(f))
    out = NicEntry(direction=Direction.OUT, port="web", key=k, transposition=IDENTITY,
                   dest="db", next_key=k)
    nic.operate([FlowOp(OpKind.ADD, 1, out)])
    assert not nic.receive(f, "web", 1.0).hit           # db's incoming entry is missing
    inn = NicEntry(direction=Direction.IN, port="db", key=k, transposition=IDENTITY,
                   dest="db")
    nic.operate([FlowOp(OpKind.ADD, 2, inn)])
    rx = nic.receive(f, "web", 1.0)
    assert rx.hit and rx.outputs == [("db", f)] and sorted(rx.handles) == [1, 2]


def test_flush_empties_everything(nic):
    nic.operate([FlowOp(OpKind.ADD, i + 1, out_entry(syn_to_internet(2000 + i)))
                 for i in range(3)])
    nic.flush()
    assert nic.flow_count() == 0 and nic.dump_flows() == {}


def test_broadcast_and_malformed_are_exceptions(nic):
    assert not nic.receive(b"\xff" * 6 + bytes.fromhex(WEB_MAC.replace(":", "")) + b"\x08\x06"
                           + b"\x00" * 28, "web", 1.0).hit
    assert not nic.receive(b"\x00\x01", "web", 1.0).hit
