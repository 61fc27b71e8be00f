"""`hostsdn flows`, `stats` and `trace --live` against a running switch's API (an
in-process switch behind the real API server on its Unix socket, no kernel): they show
what the switch holds, and a live trace changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from api_fixtures import Rig, make_rig
from hostsdn.api.server import ApiOptions, ApiServer, bind_unix
from hostsdn.cli.main import main
from hostsdn.nic.flowdump import flow_rows
from hostsdn.nic.flowdump import stats as dp_stats
from statesnap import datapath_snapshot


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("HOSTSDN_RUN_DIR", str(tmp_path / "run"))
    rig = make_rig(tmp_path)
    server = ApiServer(rig.board, ApiOptions(), bind_unix(tmp_path / "run" / "web.sock"), None)
    server.start()
    try:
        yield rig
    finally:
        server.stop()


def cli(*args: str) -> dict:
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_flows_of_the_running_switch(live: Rig) -> None:
    got = cli("flows", str(live.policy_file))["flows"]
    want = flow_rows(live.dp, live.now)
    strip = ("id", "connection", "key_short", "age", "idle")

    def norm(rows: list[dict]) -> list[dict]:
        return sorted(({k: v for k, v in r.items() if k not in strip} for r in rows),
                      key=lambda r: json.dumps(r, sort_keys=True))
    assert len(got) == len(want) > 0 and norm(got) == norm(want)
    web_out = cli("flows", str(live.policy_file), "--port", "web", "--direction", "out",
                  "--state", "offloaded")["flows"]
    assert web_out and all(r["port"] == "web" and r["offload"]["state"] == "offloaded"
                           for r in web_out)


def test_stats_of_the_running_switch(live: Rig) -> None:
    got = cli("stats", str(live.policy_file))
    want = dp_stats(live.dp)
    assert got["ports"] == want["ports"] and got["packets"] == want["packets"] > 0
    assert got["offload_ratio"] == want["offload_ratio"]


def test_live_trace_says_what_the_switch_would_do_and_changes_nothing(live: Rig) -> None:
    before = datapath_snapshot(live.dp)
    fields = "port=web,proto=tcp,dst=198.51.100.10,dport=443,flags=S"
    got = cli("trace", str(live.policy_file), "--live", "--frame-fields", fields)
    assert datapath_snapshot(live.dp) == before
    offline = cli("trace", str(live.policy_file), "--frame-fields", fields)
    assert got["outputs"] == offline["outputs"] and got["path"] == offline["path"]
    assert got["host"]["flows"][0]["layers"] == offline["host"]["flows"][0]["layers"]
    r = CliRunner().invoke(main, ["trace", str(live.policy_file), "--live", "--frame-fields",
                                  fields], env={"COLUMNS": "160"})
    assert r.exit_code == 0 and "host (handles it)" in r.output
