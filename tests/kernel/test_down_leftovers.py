"""`hostsdn down` after a crash: stale pidfiles and state are explained and removed, the
namespaces 'up' recorded are deleted even when the policy file is gone, and nothing ends
in a traceback.  Real namespaces and veths (root), named with a random tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from netns_util import leftovers, netns_unavailable_reason, new_tag, policy_text

from hostsdn.cli.main import main
from hostsdn.runtime.netns import Topology, plan_to_json
from hostsdn.runtime.policyfile import load_policy

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]


@pytest.fixture
def crashed_up(tmp_path, monkeypatch):
    """The files and namespaces a killed 'hostsdn up' leaves behind."""
    tag = new_tag()
    reason = netns_unavailable_reason(tag)
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    policy = tmp_path / f"{tag}.yaml"
    policy.write_text(policy_text(tag))
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("HOSTSDN_RUN_DIR", str(run))
    topo = Topology(load_policy(policy), uplink_ns=f"hsdn-{tag}u")
    try:
        topo.create()
        (run / f"{tag}.pid").write_text("1\n")              # pid 1: not a hostsdn process
        (run / f"{tag}.state.json").write_text(json.dumps(
            {"pid": 1, "uplink_ns": f"hsdn-{tag}u", "plan": plan_to_json(topo.plan)}))
        yield tag, policy, run
    finally:
        topo.destroy()
        assert leftovers(tag) == []


def _down(policy: Path, *args: str):
    r = CliRunner().invoke(main, ["down", str(policy), *args])
    assert "Traceback" not in r.output
    return r


def test_down_after_a_crash_explains_the_stale_pid_and_removes_everything(crashed_up):
    tag, policy, run = crashed_up
    r = _down(policy)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == (f"hostsdn down: pid 1 of {run / f'{tag}.pid'} is not running "
                        "(a crashed or killed 'up'): cleaning up after it")
    assert f"hostsdn down: netns hsdn-{tag}a" in lines
    assert f"hostsdn down: link hsdn-{tag}u" in lines
    assert lines[-1] == f"hostsdn down: removed {tag}.pid, {tag}.state.json from {run}"
    assert leftovers(tag) == [] and list(run.iterdir()) == []
    again = _down(policy)
    assert again.exit_code == 0 and again.output == ("hostsdn down: nothing was running "
                                                     "or left over\n")


def test_down_uses_the_recorded_names_when_the_policy_file_is_gone(crashed_up):
    tag, policy, _ = crashed_up
    policy.unlink()
    r = _down(policy)
    assert r.exit_code == 0, r.output
    assert "cannot read the policy file" in r.output
    assert f"hostsdn down: netns hsdn-{tag}b" in r.output.splitlines()
    assert leftovers(tag) == []


def test_down_with_a_garbage_pidfile_and_state(crashed_up):
    tag, policy, run = crashed_up
    (run / f"{tag}.pid").write_text("not a pid\n")
    (run / f"{tag}.state.json").write_text("{truncated")
    r = _down(policy, "--uplink-ns", f"hsdn-{tag}u")     # not recorded any more
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[:2] == [
        f"hostsdn down: ignored the unreadable state file {run / f'{tag}.state.json'}",
        f"hostsdn down: {run / f'{tag}.pid'} holds no pid: ignored"]
    assert leftovers(tag) == [] and list(run.iterdir()) == []
