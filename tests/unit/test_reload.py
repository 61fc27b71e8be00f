"""`hostsdn reload` without root: the checks before it asks the switch, and the answer
through the API, with a stand-in process (its command line names hostsdn, as the pidfile
check wants) serving the real API app on `<stem>.sock` with a canned reload outcome
(ok / fail), or a socket that never answers (ignore), or one that dies on the request
(die), or no socket at all (default)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostsdn.cli.main import main
from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime.netns import plan_from_json, plan_to_json, plan_topology, topology_differences

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "policy.yaml").read_text()

ANSWERING = """
import os, socket, sys, time
from pathlib import Path
mode, run_dir, policy = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
sock_path = run_dir / "web.sock"
if mode in ("ok", "fail"):
    from hostsdn.api.app import Board
    from hostsdn.api.server import ApiOptions, ApiServer, bind_unix
    from hostsdn.nic.datapath import Datapath
    from hostsdn.runtime.policyfile import load_policy
    from hostsdn.runtime.reload import ReloadOutcome

    class Answering:
        generation = 1
        text = ""
        def reload_file(self):
            if mode == "ok":
                return ReloadOutcome(os.getpid(), True, "ports changed: web", ("web",))
            return ReloadOutcome(os.getpid(), False, "nope", kind="refused")

    board = Board(Datapath(load_policy(policy)), policy, Answering())
    ApiServer(board, ApiOptions(), bind_unix(sock_path), None).start()
elif mode in ("ignore", "die"):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(8)
print("ready", flush=True)
if mode == "die":
    conn, _ = listener.accept()
    conn.recv(100)
    os._exit(0)
time.sleep(60)
"""


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setenv("HOSTSDN_RUN_DIR", str(d))
    return d


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    p = tmp_path / "web.yaml"
    p.write_text(EXAMPLE)
    return p


def stand_in(run_dir: Path, policy: Path, mode: str, *,
             running_file: Path | None = None, plan: bool = True) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", ANSWERING, mode, str(run_dir), str(policy),
                             "hostsdn-stand-in"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        state = {"pid": proc.pid, "policy": str((running_file or policy).resolve()),
                 "nic": "simnic", "uplink_ns": "hsdn-uplink", "remote_ips": []}
        if plan:
            state["plan"] = plan_to_json(plan_topology(load_policy_text(EXAMPLE, "x")))
        (run_dir / "web.state.json").write_text(json.dumps(state))
        (run_dir / "web.pid").write_text(f"{proc.pid}\n")
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def ignoring(run_dir: Path, policy: Path) -> Iterator[subprocess.Popen[str]]:
    yield from stand_in(run_dir, policy, "default")


def reload(policy: Path, *args: str):
    return CliRunner().invoke(main, ["reload", str(policy), *args])


def test_bad_file_is_the_usual_error_and_nothing_is_signalled(policy, ignoring) -> None:
    policy.write_text(EXAMPLE.replace("default: block", "default: blok", 1))
    r = reload(policy)
    assert r.exit_code == 2
    line = EXAMPLE[:EXAMPLE.index("default: block")].count("\n") + 1
    assert r.output.startswith(f"hostsdn: error: {policy}:{line}: ")
    assert r.output.rstrip().endswith("(field layers[0].default)")
    assert ignoring.poll() is None                   # SIGHUP would have killed it


def test_missing_file(tmp_path, run_dir) -> None:
    r = reload(tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "cannot read the policy file" in r.output


def test_nothing_running(policy, run_dir) -> None:
    r = reload(policy)
    assert r.exit_code == 2
    assert f"hostsdn is not up for {policy}" in r.output
    assert f"start it with 'hostsdn up {policy}'" in r.output


def test_topology_change_is_refused_before_signalling(policy, ignoring) -> None:
    policy.write_text(EXAMPLE.replace('"02:00:00:00:00:02"', '"02:00:00:00:00:12"'))
    r = reload(policy)
    assert r.exit_code == 2
    assert "changes the topology" in r.output
    assert "port 'db': MAC 02:00:00:00:00:02 -> 02:00:00:00:00:12" in r.output
    assert f"run 'hostsdn down {policy}' then 'hostsdn up {policy}'" in r.output
    assert ignoring.poll() is None


def test_another_file_with_the_same_stem_is_refused(tmp_path, policy, ignoring) -> None:
    other = tmp_path / "elsewhere" / "web.yaml"
    other.parent.mkdir()
    other.write_text(EXAMPLE)
    r = reload(other)
    assert r.exit_code == 2
    assert f"runs {policy.resolve()}, not {other.resolve()}" in r.output
    assert ignoring.poll() is None


def test_state_without_a_plan_is_refused(run_dir, policy) -> None:
    for proc in stand_in(run_dir, policy, "default", plan=False):
        r = reload(policy)
        assert r.exit_code == 2 and "does not describe pid" in r.output
        assert proc.poll() is None


def test_the_switch_answers_success(run_dir, policy) -> None:
    for proc in stand_in(run_dir, policy, "ok"):
        for _ in range(2):                            # each reload waits for a new answer
            r = reload(policy)
            assert r.exit_code == 0, r.output
            assert r.output == f"hostsdn reload: {policy} applied by pid {proc.pid} " \
                               f"(ports changed: web)\n"


def test_the_switch_keeps_the_old_policy(run_dir, policy) -> None:
    for proc in stand_in(run_dir, policy, "fail"):
        r = reload(policy)
        assert r.exit_code == 1
        assert r.output == f"hostsdn: error: pid {proc.pid} kept the old policy: nope\n"


def test_no_answer_times_out(run_dir, policy) -> None:
    for proc in stand_in(run_dir, policy, "ignore"):
        start = time.monotonic()
        r = reload(policy, "--timeout", "0.3")
        assert r.exit_code == 1
        assert f"no answer from pid {proc.pid} within 0.3 s" in r.output
        assert time.monotonic() - start < 5


def test_the_switch_dies(run_dir, policy) -> None:
    for proc in stand_in(run_dir, policy, "die"):
        r = reload(policy)
        assert r.exit_code == 1
        assert f"pid {proc.pid} exited before it answered the reload" in r.output


def test_no_api_socket(policy, ignoring) -> None:
    r = reload(policy)
    assert r.exit_code == 1
    assert f"cannot reach the API of pid {ignoring.pid}: no API socket at" in r.output


def test_plan_round_trips_and_differences_are_named() -> None:
    old = plan_topology(load_policy_text(EXAMPLE, "x"), remote_ips=["198.51.100.10"])
    assert plan_from_json(json.loads(json.dumps(plan_to_json(old)))) == old
    assert topology_differences(old, old) == []
    rules_only = load_policy_text(EXAMPLE.replace("5432", "5433"), "x")
    assert topology_differences(old, plan_topology(rules_only,
                                                   remote_ips=["198.51.100.10"])) == []
    snat = load_policy_text(EXAMPLE.replace("snat: {ip: 203.0.113.7}", "snat: {ip: 203.0.113.8}"),
                            "x")
    assert topology_differences(old, plan_topology(snat, remote_ips=["198.51.100.10"])) == [
        "uplink: static neighbours +203.0.113.8 02:00:00:00:ff:01",
        "uplink: routes +203.0.113.8/32"]
    renamed = load_policy_text(EXAMPLE.replace("name: db\n", "name: dbx\n"), "x")
    diffs = topology_differences(old, plan_topology(renamed, remote_ips=["198.51.100.10"]))
    assert diffs == ["port 'dbx' added", "port 'db' removed"]
