"""The cache lab on a tiny generated trace: rows, monotonicity, JSON and PNG outputs, CLI."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from hostsdn.cli.main import main
from hostsdn.nic.datapath import DatapathOptions
from hostsdn.packet import make_udp
from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime import cachelab as lab
from hostsdn.runtime.pcap import PcapWriter
from hostsdn.runtime.replay import replay

VM_MAC, GW_MAC, UPLINK_MAC = "02:00:00:00:00:01", "02:00:00:00:ee:01", "02:00:00:00:ff:01"
POLICY_TEXT = f"""
version: 1
uplink: {{mac: "{UPLINK_MAC}", ip: 192.0.2.1, gateway_mac: "{GW_MAC}"}}
ports:
  - {{name: vm, mac: "{VM_MAC}", ips: ["10.0.0.4"], layers: [allow-all]}}
layers:
  - {{name: allow-all, stateful: true, default: allow}}
"""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = (2, 8)
EVICTIONS = ("lru", "fifo")


@pytest.fixture(scope="module")
def policy():
    return load_policy_text(POLICY_TEXT, "cachelab-test.yaml")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """300 outbound UDP packets over 12 flows with skewed (Zipf-like) popularity."""
    path = tmp_path_factory.mktemp("cachelab") / "skewed.pcap"
    rng = random.Random(7)
    flows = list(range(12))
    weights = [1.0 / (i + 1) for i in flows]
    w = PcapWriter(path)
    try:
        for n in range(300):
            i = rng.choices(flows, weights)[0]
            w.write(make_udp(VM_MAC, GW_MAC, "10.0.0.4", f"198.51.100.{i + 1}", 40000 + i, 53,
                             b"q"), 1.0 + n * 0.01)
    finally:
        w.close()
    return path


@pytest.fixture(scope="module")
def report(policy, trace):
    return lab.run_cachelab(policy, trace, sizes=SIZES, evictions=EVICTIONS)


def test_one_row_per_setting_and_a_ceiling(report):
    assert [(r.cache_size, r.eviction) for r in report.rows] == [
        (s, e) for s in SIZES for e in EVICTIONS]
    assert report.ceiling is not None and report.ceiling.cache_size is None
    for r in report.rows + [report.ceiling]:
        assert r.packets == 300
        assert r.nic_hits + r.exceptions == r.packets
        assert r.hit_rate == pytest.approx(r.nic_hits / r.packets)
        assert r.host_pps == pytest.approx(r.exceptions / report.stats.duration)


def test_lru_hit_rate_is_monotone_in_cache_size(report):
    rates = [report.row(s, "lru").hit_rate for s in SIZES]
    assert rates == sorted(rates)
    assert rates[-1] > rates[0]                       # the trace is made to need the room
    assert report.ceiling.hit_rate >= max(r.hit_rate for r in report.rows)
    assert report.row(SIZES[0], "lru").evictions > 0


def test_a_row_is_what_replay_reports(policy, trace, report):
    s = replay(policy, trace, options=DatapathOptions(cache_size=2, eviction="fifo")).summary
    row = report.row(2, "fifo")
    assert (row.nic_hits, row.exceptions, row.evictions, row.refused) == (
        s.nic_hits, s.exceptions, s.evictions, s.offload_refused)


def test_json_and_png_outputs(report, tmp_path):
    pytest.importorskip("matplotlib")
    lab.write_json(report, tmp_path / "cachelab.json")
    lab.write_plot(report, tmp_path / "cachelab.png")
    data = json.loads((tmp_path / "cachelab.json").read_text())
    assert len(data["rows"]) == len(SIZES) * len(EVICTIONS)
    for row in data["rows"] + [data["ceiling"]]:
        assert tuple(row) == lab.ROW_KEYS
    assert (tmp_path / "cachelab.png").read_bytes()[:8] == PNG_MAGIC


def test_parse_arguments():
    assert lab.parse_sizes("64, 16,64") == (16, 64)
    assert lab.parse_evictions("lru,LFU,lru") == ("lru", "lfu")
    with pytest.raises(ValueError, match="cache size 0 must be at least 1"):
        lab.parse_sizes("0,16")
    with pytest.raises(ValueError, match="unknown eviction policy 'mru'"):
        lab.parse_evictions("lru,mru")


def test_ports_from_trace_skips_group_zero_and_uplink_macs(policy):
    stats = lab.TraceStats(10, 0.0, 1.0, (
        (bytes.fromhex("01005e000001"), 9), (bytes(6), 8),
        (bytes.fromhex(UPLINK_MAC.replace(":", "")), 7),
        (bytes.fromhex("080027e6e559"), 5), (bytes.fromhex("525400123502"), 3)))
    p = lab.ports_from_trace(policy, stats, 1)
    assert [(q.name, q.layers) for q in p.ports] == [("mac-08-00-27-e6-e5-59", ("allow-all",))]
    assert len(lab.ports_from_trace(policy, stats, 5).ports) == 2


def test_cli_writes_files_and_rejects_bad_arguments(trace, tmp_path):
    pytest.importorskip("matplotlib")
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY_TEXT)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(main, ["cachelab", str(policy_file), str(trace), "--sizes", "2,8",
                               "--eviction", "lru", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["cache_size"] for r in data["rows"]] == [2, 8]
    assert (out / "cachelab.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "cachelab.json").read_text())["rows"] == data["rows"]
    bad = runner.invoke(main, ["cachelab", str(policy_file), str(trace), "--sizes", "2,x"])
    assert bad.exit_code == 2 and "--sizes" in bad.output


def test_eager_replies_setting_is_recorded_and_changes_the_rows(policy, trace, report):
    lazy = lab.run_cachelab(policy, trace, sizes=(8,), evictions=("lru",),
                            options=DatapathOptions(eager_replies=False))
    assert report.as_json()["eager_replies"] is True
    assert lazy.as_json()["eager_replies"] is False
    # this trace has no replies: eagerly, each flow's reply flow took a NIC entry too
    assert report.ceiling is not None and lazy.ceiling is not None
    assert (lazy.ceiling.flows_offloaded, report.ceiling.flows_offloaded) == (12, 24)
    assert lazy.ceiling.nic_hits == report.ceiling.nic_hits
