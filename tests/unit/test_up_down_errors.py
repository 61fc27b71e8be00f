"""`hostsdn up` / `down` when something is missing: a clear one-line error before anything
is created, never a traceback.  Root is faked (the checks run before any privileged step)
and pyroute2 / ethtool are hidden."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostsdn.cli.main import main
from hostsdn.errors import TopologyError
from hostsdn.runtime import netns

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


@pytest.fixture
def fake_root(monkeypatch, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("HOSTSDN_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def no_pyroute2(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroute2", None)     # import pyroute2 -> ImportError


def test_check_tools_names_a_missing_pyroute2(no_pyroute2):
    with pytest.raises(TopologyError, match=r"^pyroute2 cannot be imported .*pip install"):
        netns.check_tools()


def test_check_tools_names_a_missing_program(monkeypatch):
    monkeypatch.setattr(netns.shutil, "which", lambda name: None if name == "ethtool" else "/x")
    with pytest.raises(TopologyError, match=r"^ethtool is not installed \(apt-get install "
                                            r"ethtool\)$"):
        netns.check_tools()


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_up_without_pyroute2_fails_before_creating_anything(fake_root, no_pyroute2, daemon):
    args = ["up", str(EXAMPLE)] + (["--daemon"] if daemon else [])
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "hostsdn: error: pyroute2 cannot be imported" in r.output
    assert "Traceback" not in r.output
    assert not fake_root.exists() or list(fake_root.iterdir()) == []


def test_down_without_pyroute2_is_a_clear_error(fake_root, no_pyroute2):
    fake_root.mkdir()
    (fake_root / "policy.pid").write_text("999999\n")
    r = CliRunner().invoke(main, ["down", str(EXAMPLE)])
    assert r.exit_code == 2, r.output
    assert "hostsdn: error: pyroute2 cannot be imported" in r.output
    assert "Traceback" not in r.output


def test_down_of_an_unreadable_policy_without_state_says_so(fake_root, tmp_path):
    r = CliRunner().invoke(main, ["down", str(tmp_path / "gone.yaml")])
    assert r.exit_code == 2, r.output
    assert "cannot read the policy file" in r.output
    assert f"hostsdn: error: no state of a running 'up' for {tmp_path / 'gone.yaml'}" in r.output
