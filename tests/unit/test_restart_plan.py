"""What a starting `up` takes over from an earlier one (runtime/restart.plan_adoption),
decided from the state file and what exists, without a kernel: a restart, a crash, a
changed or partial topology, --fail-closed, a bad saved-connections file."""

from __future__ import annotations

import json

import pytest

from hostsdn.runtime import persist, restart, rundir
from hostsdn.runtime.daemonize import options_from_state
from hostsdn.runtime.netns import plan_to_json, plan_topology
from hostsdn.runtime.serving import UpOptions, _state


class FakeTopology:
    def __init__(self, policy, existing):
        self.plan = plan_topology(policy)
        self._existing = existing

    def existing(self):
        return self._existing


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTSDN_RUN_DIR", str(tmp_path))
    return tmp_path


def _all(topo):
    return [f"x {i}" for i in range(2 * len(topo.plan.links))]


def _write_state(policy, topo, **extra):
    state = {"pid": 999999, "plan": plan_to_json(topo.plan), "nic": "xdp", **extra}
    rundir.write_state("p/policy.yaml", state)


def test_restart_adopts_everything_and_uses_the_saved_connections(run_dir, example_policy):
    topo = FakeTopology(example_policy, [])
    topo._existing = _all(topo)
    _write_state(example_policy, topo, restarting=True)
    persist.save("p/policy.yaml", [], pid=999999)
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=True)
    assert ad.topology and ad.nic                       # a restart adopts even fail-closed
    assert any("hostsdn restart" in n for n in ad.notes)
    assert any("0 connections saved by pid 999999" in n for n in ad.notes)
    assert not persist.conns_path("p/policy.yaml").exists()     # used once


def test_crash_is_explained_and_fail_closed_flushes_the_nic(run_dir, example_policy):
    topo = FakeTopology(example_policy, [])
    topo._existing = _all(topo)
    _write_state(example_policy, topo)
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=False)
    assert ad.topology and ad.nic
    assert any("pid 999999 left its state behind and is gone" in n for n in ad.notes)
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=True)
    assert ad.topology and not ad.nic and any("--fail-closed" in n for n in ad.notes)


def test_partial_or_changed_topology_is_built_afresh(run_dir, example_policy):
    topo = FakeTopology(example_policy, [])
    topo._existing = _all(topo)[:-1]
    _write_state(example_policy, topo)
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=False)
    assert not ad.topology and not ad.nic and any("part of it is missing" in n for n in ad.notes)
    topo._existing = _all(topo)
    other = plan_to_json(topo.plan)
    other[0]["mtu"] = 1234
    rundir.write_state("p/policy.yaml", {"pid": 999999, "plan": other, "nic": "xdp"})
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=False)
    assert not ad.topology and any("differs" in n for n in ad.notes)


def test_nothing_before_means_a_fresh_start(run_dir, example_policy):
    topo = FakeTopology(example_policy, [])
    ad = restart.plan_adoption("p/policy.yaml", topo, nic="xdp", fail_closed=False)
    assert not ad.topology and ad.notes == []


def test_restart_options_come_from_the_state(run_dir, example_policy):
    from hostsdn.nic.datapath import DatapathOptions
    from hostsdn.offload.backend import Feature

    opts = UpOptions(datapath=DatapathOptions(nic="xdp", cache_size=77, offload_after=3,
                                              eviction="fifo", nic_idle=2.5,
                                              nic_without=frozenset({Feature.METER})),
                     uplink_ns="hsdn-x", remote_ips=("198.51.100.10",), status_interval=1.0,
                     log_format="json", fail_closed=True)
    state = json.loads(json.dumps(_state("p/policy.yaml", opts,
                                         plan_topology(example_policy), {})))
    back = options_from_state(state)
    assert back.datapath.nic == "xdp" and back.datapath.cache_size == 77
    assert back.datapath.offload_after == 3 and back.uplink_ns == "hsdn-x"
    assert back.datapath == opts.datapath
    assert back.remote_ips == ("198.51.100.10",) and back.log_format == "json"
    assert back.fail_closed and back.status_interval == 1.0
