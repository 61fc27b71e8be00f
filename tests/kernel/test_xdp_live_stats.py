"""Live mode reads NIC counters from the BPF maps: all entries by one batched dump, or a
few entries by one lookup each.  Both must give the counters the program keeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from frames import VM_GW_MAC, WEB_MAC, tcp
from hostsdn.direction import Direction
from hostsdn.errors import NicError
from hostsdn.flows.keys import normalize
from hostsdn.flows.table import UPLINK
from hostsdn.nic.xdp import backend as xdp_backend
from hostsdn.nic.xdp.backend import XdpNic
from hostsdn.offload.backend import FlowOp, NicEntry, OpKind
from hostsdn.packet import flow_key
from hostsdn.packet.transposition import IDENTITY, Transposition

pytestmark = pytest.mark.kernel


def _frame(sport: int) -> bytes:
    return tcp(WEB_MAC, VM_GW_MAC, "10.1.0.4", "93.184.216.34", sport, 443, "A")


def _xdp_nic(policy, capacity: int) -> XdpNic:
    try:
        return XdpNic(policy, out_capacity=capacity, in_capacity=capacity)
    except NicError as exc:
        pytest.skip(f"xdp backend unavailable here: {exc}")


def test_live_stats_by_dump_and_by_lookup_agree(example_policy) -> None:
    nic = _xdp_nic(example_policy, 64)
    try:
        ops = [FlowOp(OpKind.ADD, h, NicEntry(
                   direction=Direction.OUT, port="web",
                   key=normalize(flow_key(_frame(40000 + h))), transposition=IDENTITY,
                   dest=UPLINK))
               for h in range(1, 41)]
        assert all(r.ok for r in nic.operate(ops))
        for h, n in ((3, 4), (7, 1)):
            for _ in range(n):
                assert nic.receive(_frame(40000 + h), "web", 1.0).hit
        expected = nic.flow_stats()                 # the test-run bookkeeping
        nic.live = True                             # from now on: read the maps
        for st in nic.table.stats.values():
            st.packets = st.bytes = 0
        few = nic.flow_stats([3, 7, 99])            # 3 of 40 handles: per-entry lookups
        assert 3 * xdp_backend.FEW_STATS_RATIO < 40
        assert {h: (s.packets, s.bytes) for h, s in few.items()} == \
            {3: (4, 4 * len(_frame(40003))), 7: (1, len(_frame(40007)))}
        for st in nic.table.stats.values():
            st.packets = st.bytes = 0
        every = nic.flow_stats()                    # all: one batched dump per map
        assert {h: (s.packets, s.bytes) for h, s in every.items()} == \
            {h: (s.packets, s.bytes) for h, s in expected.items()}
        assert every[3].last_used is not None and every[3].last_used > 0
    finally:
        nic.close()


def test_hit_count_keeps_the_hits_of_deleted_entries(example_policy) -> None:
    nic = _xdp_nic(example_policy, 8)
    try:
        before = nic.hit_count()
        entry = NicEntry(direction=Direction.OUT, port="web",
                         key=normalize(flow_key(_frame(41000))), transposition=IDENTITY,
                         dest=UPLINK)
        assert nic.operate([FlowOp(OpKind.ADD, 1, entry)])[0].ok
        for _ in range(3):
            assert nic.receive(_frame(41000), "web", 1.0).hit
        assert not nic.receive(_frame(41001), "web", 1.0).hit      # a miss is not counted
        assert nic.operate([FlowOp(OpKind.DELETE, 1)])[0].ok
        assert nic.flow_stats() == {}
        assert nic.hit_count() - before == 3
    finally:
        nic.close()


def test_modify_keeps_the_live_counters(example_policy) -> None:
    """The contract suite checks MODIFY keeps counters in test-run mode; live, the new map
    value's counters start at 0 and the backend must add what the entry had."""
    nic = _xdp_nic(example_policy, 8)
    try:
        nic.live = True                             # counters from the maps
        frame = _frame(42000)
        entry = NicEntry(direction=Direction.OUT, port="web", key=normalize(flow_key(frame)),
                         transposition=IDENTITY, dest=UPLINK)
        assert nic.operate([FlowOp(OpKind.ADD, 1, entry)])[0].ok
        for _ in range(3):
            assert nic.receive(frame, "web", 1.0).hit
        assert nic.flow_stats([1])[1].packets == 3
        changed = replace(entry, transposition=Transposition(set_dscp=8))
        assert nic.operate([FlowOp(OpKind.MODIFY, 1, changed)])[0].ok
        for _ in range(2):
            assert nic.receive(frame, "web", 2.0).hit
        st = nic.flow_stats()[1]
        assert (st.packets, st.bytes) == (5, 5 * len(frame))
        # a new entry under the same handle starts from 0 again
        assert nic.operate([FlowOp(OpKind.DELETE, 1)])[0].ok
        assert nic.operate([FlowOp(OpKind.ADD, 1, entry)])[0].ok
        assert nic.receive(frame, "web", 3.0).hit
        assert nic.flow_stats([1])[1].packets == 1
    finally:
        nic.close()
