"""hostsdn trace (hypothesis): on random policies, offload settings and packet
sequences, the trace of each frame says what ``receive`` then does (path, outputs,
drops, decided rules, flows created, offload decisions) and leaves the datapath exactly
as it was (a deep snapshot of every reachable object)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_offload_fidelity import events, policies

from fidelity import CONFIGS
from hostsdn.nic.datapath import Datapath
from hostsdn.switch import UPLINK
from statesnap import datapath_snapshot

CONFIG_NAMES = sorted(CONFIGS)


def _flow_ids(dp):
    return {id(f): f for f in dp.switch.flows()}


def check_trace_agrees(dp, frame, port, now):
    before = datapath_snapshot(dp)
    flows_before = _flow_ids(dp)
    t = dp.trace(frame, port, now)
    assert datapath_snapshot(dp) == before, "trace changed the datapath's state"
    r = dp.receive(frame, port, now)
    assert t.path == r.path
    assert t.outputs == r.outputs
    assert t.drops == [(p, x.value) for p, x in r.drops]
    side = t.nic if r.path == "nic" else t.host
    assert [(f.port, f.direction) for f in side.flows] == \
        [(f.port, f.direction.value) for f in r.flows]
    real_views = [(f.port, f.direction.value, f.offload_state.value,
                   f.offload_reason.value if f.offload_reason else None) for f in r.flows]
    traced = [(f.port, f.direction, f.offload_after) for f in side.flows]
    assert [(p, d) for p, d, _ in traced] == [(p, d) for p, d, _, _ in real_views]
    for (_, _, after), (_, _, state, reason) in zip(traced, real_views):
        assert after.split(" ")[0] == state
        if reason and reason != state:
            assert f"({reason})" in after
    created = {(f.port, f.direction, f.key) for f in t.created}
    from hostsdn.nic.trace import describe_key
    real_created = {(f.port, f.direction.value, describe_key(f.key))
                    for i, f in _flow_ids(dp).items() if i not in flows_before}
    assert created == real_created
    if r.path == "nic":
        assert t.nic.hit and t.agree is not False
    elif t.nic.hit is not None:
        assert t.nic.hit is False and t.nic.miss
    return t


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(policy=policies(), evs=st.lists(events(), min_size=1, max_size=25),
       config=st.sampled_from(CONFIG_NAMES))
def test_trace_says_what_receive_does_and_changes_nothing(policy, evs, config):
    by_mac = {p.mac: p.name for p in policy.ports}
    t = 1000.0
    with Datapath(policy, CONFIGS[config]) as dp:
        for gap, frame in evs:
            t += gap
            port = by_mac.get(frame[6:12], UPLINK)
            check_trace_agrees(dp, frame, port, t)
