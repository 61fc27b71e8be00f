"""Shadows (``hostsdn trace``) share no mutable container with what they shadow: a
container added to the switch, the offload manager or the NIC table later and not
overlaid by ``shadow()`` fails here by name (the property test would only see it when a
random packet happens to write it)."""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence, MutableSet
from pathlib import Path

from hostsdn.flows.overlay import Shadow
from hostsdn.nic.datapath import Datapath, DatapathOptions


def _mutable(v):
    return isinstance(v, (MutableMapping, MutableSequence, MutableSet))


def _attrs(o):
    out = dict(getattr(o, "__dict__", {}))
    for cls in type(o).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(o, name):
                out[name] = getattr(o, name)
    return out


def _shared(real, shadow):
    return sorted(name for name, v in _attrs(real).items()
                  if _mutable(v) and _attrs(shadow).get(name) is v)


def test_shadows_share_no_container(example_policy):
    with Datapath(example_policy, DatapathOptions()) as dp:
        sdp = dp.shadow(0.0)
        assert _shared(dp, sdp) == []
        assert _shared(dp.switch, sdp.switch) == []
        assert _shared(dp.manager, sdp.manager) == []
        assert _shared(dp.backend.table, sdp.backend.table) == []
        assert _shared(dp.switch.snat, sdp.switch.snat) == []
        assert _shared(dp.switch.meters, sdp.switch.meters) == []
        for name, ps in dp.switch.ports.items():
            assert _shared(ps.tables, sdp.switch.ports[name].tables) == []


def test_copier_keeps_the_graph_and_shares_no_list(example_policy):
    from hostsdn.runtime.replay import replay_into

    with Datapath(example_policy, DatapathOptions()) as dp:
        replay_into(dp, Path(__file__).resolve().parents[2] / "examples" / "example.pcap")
        copier = Shadow()
        flow = dp.switch.flows()[1]
        c = copier(flow)
        assert c is not flow and c.conn is not flow.conn and c in c.conn.flows
        assert copier.original(c) is flow and copier(flow) is c
        assert _shared(flow.conn, c.conn) == []
