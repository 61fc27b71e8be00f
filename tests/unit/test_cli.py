"""`hostsdn replay` as a user runs it: outputs, JSON, verdict lines, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.all import rdpcap  # type: ignore

from frames import checksums_ok
from hostsdn.cli.main import main
from hostsdn.runtime.pcap import TraceReader

ROOT = Path(__file__).resolve().parents[2]
POLICY = str(ROOT / "examples" / "policy.yaml")
TRACE = str(ROOT / "examples" / "example.pcap")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_replay_json_summary_and_pcaps(tmp_path):
    r = run("replay", POLICY, TRACE, "--out", str(tmp_path / "out"), "--json",
            "--verdicts", str(tmp_path / "v.jsonl"))
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    for k in ("packets", "forwarded", "dropped", "drop_reasons", "flows_created", "nic_hits",
              "exceptions", "flows_offloaded", "offload_refused", "evictions"):
        assert k in s
    assert s["packets"] == 128 and s["forwarded"] + s["dropped"] == 128
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert len(lines) == 128
    first = json.loads(lines[0])
    assert first["index"] == 0 and first["in_port"] == "web" and first["decided_by"]
    for port in ("web", "db", "uplink"):
        pkts = rdpcap(str(tmp_path / "out" / f"{port}.pcap"))
        assert len(pkts) == s["emitted"][port]
        assert all(checksums_ok(bytes(p)) for p in pkts)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_written_pcaps_have_correct_checksums_for_tshark(tmp_path):
    assert run("replay", POLICY, TRACE, "--out", str(tmp_path)).exit_code == 0
    for pcap in tmp_path.glob("*.pcap"):
        out = subprocess.run(
            ["tshark", "-r", str(pcap), "-o", "ip.check_checksum:TRUE", "-o",
             "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-Y",
             "ip.checksum.status == 2 || tcp.checksum.status == 2 || udp.checksum.status == 2"],
            capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "", f"{pcap.name}: bad checksums:\n{out.stdout}"


def test_human_output_has_a_table():
    r = run("replay", POLICY, TRACE)
    assert r.exit_code == 0
    assert "packets" in r.output and "drop reason" in r.output and "meter" in r.output


def test_bad_policy_is_one_line_error_naming_file_line_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(POLICY).read_text().replace("dst_port: 25}", "dst_port: 99999}"))
    r = run("replay", str(bad), TRACE, "--json")
    assert r.exit_code == 2
    msg = r.output.strip()
    assert msg.count("\n") == 0
    assert f"{bad}:" in msg and "layers[0].outbound[0].match.dst_port" in msg


def test_unreadable_trace_is_an_error(tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    for trace in (str(junk), str(tmp_path / "missing.pcap")):
        r = run("replay", POLICY, trace)
        assert r.exit_code == 2 and r.output.startswith("hostsdn: error:"), r.output


def test_nic_none_every_packet_is_an_exception():
    r = run("replay", POLICY, TRACE, "--json", "--nic", "none")
    s = json.loads(r.output)
    frames = sum(1 for _ in TraceReader(TRACE))
    assert s["packets"] == frames > 0
    assert s["nic_hits"] == 0 and s["exceptions_by_path"] == {"host": frames}


def test_nic_without_features(tmp_path):
    r = run("replay", POLICY, TRACE, "--json", "--nic-without", "encap_vxlan,meter")
    s = json.loads(r.output)
    assert s["offload_refused"]["unsupported_action"] >= 2
    r = run("replay", POLICY, TRACE, "--nic-without", "warp_drive")
    assert r.exit_code == 2


def test_commands_raise_the_gc_thresholds_for_long_lived_flows():
    import gc

    from hostsdn.runtime.gctune import THRESHOLDS

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        r = run("replay", POLICY, TRACE, "--json")
        assert r.exit_code == 0, r.output
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.set_threshold(*before)
