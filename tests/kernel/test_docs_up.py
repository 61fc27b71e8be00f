"""docs/up.md works as written: every command of the page, in a sensible order, and its
Python snippet; so do the commands of other pages that talk to a running up (the
README's API example, docs/operate.md's curls on the socket: summary, flows, reload,
metrics), against the same up.  Real namespaces with the example policy's names (hsdn-web,
hsdn-db, hsdn-uplink): run under the kernel lock, like every kernel test; everything is removed by
name at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns_util import netns_unavailable_reason, new_tag

import doccmds

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

PAGE = "docs/up.md"
COMMANDS = [c for _, c in doccmds.all_commands(kernel=True)]
NAMES = ("hsdn-web", "hsdn-db", "hsdn-uplink")


def _kind(command: str) -> str:
    words = doccmds.shell_form(command).split()
    if "hostsdn.cli.main" in words:
        sub = words[words.index("hostsdn.cli.main") + 1]
        return f"{sub}-daemon" if "--daemon" in words else sub
    if words[:3] == ["ip", "netns", "exec"]:
        return "in-netns"
    if words[0] == "curl" and "/run/hostsdn/" in command:
        return "api"
    raise AssertionError(f"{PAGE}: no test knows how to run {command!r}")


def _leftovers() -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                        check=False).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout
    found = [f"netns {n}" for n in NAMES if any(line.split()[:1] == [n]
                                                 for line in ns.splitlines())]
    found += [f"link {n}" for n in NAMES if f" {n}@" in links or f" {n}:" in links]
    return found


@pytest.fixture
def work(tmp_path, monkeypatch):
    reason = netns_unavailable_reason(new_tag())
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    assert _leftovers() == [], "the example's namespaces exist already"
    # the docs name /run/hostsdn (the default run dir): no HOSTSDN_RUN_DIR here
    monkeypatch.delenv("HOSTSDN_RUN_DIR", raising=False)
    (tmp_path / "w").mkdir()
    folder = doccmds.scratch(tmp_path / "w")
    try:
        yield folder
    finally:
        doccmds.run("hostsdn down examples/policy.yaml", folder)
        assert _leftovers() == []


def test_every_command_of_the_page_is_known():
    kinds = [_kind(c) for c in COMMANDS]
    assert {"up-daemon", "up", "in-netns", "reload", "down"} <= set(kinds)


def _ok(command: str, folder: Path) -> str:
    r = doccmds.run(command, folder, timeout=120)
    assert r.returncode == 0, f"{PAGE}: {command}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stdout


def test_the_commands_of_up_md_work_as_written(work):
    by_kind: dict[str, list[str]] = {}
    for command in COMMANDS:
        by_kind.setdefault(_kind(command), []).append(command)
    for command in by_kind["up"]:                   # foreground, with --duration
        _ok(command, work)
        assert _leftovers() == []
    (start,) = set(by_kind["up-daemon"])            # up.md and operate.md: the same one
    assert "daemon pid" in _ok(start, work)
    for command in by_kind["in-netns"]:             # the pings
        assert " 0% packet loss" in _ok(command, work)
    api = by_kind["api"]                            # README, operate.md
    assert any("/metrics" in c for c in api) and any("/v1/reload" in c for c in api)
    for command in api:
        out = _ok(command, work)
        if "/metrics" in command:
            assert "hostsdn_policy_generation " in out, out[:500]
            continue
        answer = json.loads(out)
        assert isinstance(answer, (dict, list)), out[:500]
        if "/v1/reload" in command:
            assert answer["ok"] is True and answer["pid"] > 0, answer
    for command in by_kind["reload"]:
        assert "applied by pid" in _ok(command, work)
    (stop,) = by_kind["down"]
    out = _ok(stop, work)
    lines = out.splitlines()
    assert lines[0].startswith("hostsdn down: stopped pid"), out
    assert lines[1].startswith("hostsdn down: pid ") and "removed" in lines[1], out
    assert {"netns hsdn-web", "netns hsdn-db", "link hsdn-uplink"} <= {
        n.strip() for n in lines[1].split("removed", 1)[1].split(",")}, out
    assert _leftovers() == []


def test_the_python_snippet_of_up_md_runs(work):
    (block,) = [b for b in doccmds.python_snippets(kernel=True) if b.page == PAGE]
    r = subprocess.run([sys.executable, "-c", block.text], cwd=work, env=doccmds.env(),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert _leftovers() == []
