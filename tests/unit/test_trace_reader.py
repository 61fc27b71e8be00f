"""Trace files that lie, and pcapng interfaces as ingress ports.

pcapng files are built here block by block (both byte orders, several interfaces, a
timestamp resolution and offset); tshark, where installed (CI installs it), reads the
same files as an independent reference.  Records cut short by the end of the file or
longer than their snaplen are reported (index, count in --json), never replayed.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest
from click.testing import CliRunner

from frames import udp
from hostsdn.cli.main import main
from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime.pcap import PcapWriter, TraceReader
from hostsdn.runtime.replay import replay

A_MAC, B_MAC, GW_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:ee:01"
POLICY = f"""\
version: 1
uplink: {{mac: "02:00:00:00:ff:01", ip: 192.0.2.1, gateway_mac: "{GW_MAC}"}}
ports:
  - {{name: a, mac: "{A_MAC}", ips: ["10.1.0.4/24"], layers: [all]}}
  - {{name: b, mac: "{B_MAC}", ips: ["10.1.0.6/24"], layers: [all]}}
layers:
  - {{name: all, stateful: true, default: allow}}
"""
FROM_A = udp(A_MAC, GW_MAC, "10.1.0.4", "8.8.8.8", 5000, 53, b"a" * 100)
FROM_B = udp(B_MAC, GW_MAC, "10.1.0.6", "8.8.8.8", 5000, 53, b"b" * 100)


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(e: str, kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(e + "II", kind, total) + body + struct.pack(e + "I", total)


def shb(e: str = "<") -> bytes:
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(name: str | None, e: str = "<", snaplen: int = 65535, tsresol: int | None = None,
        tsoffset: int = 0) -> bytes:
    opts = b""
    if name is not None:
        opts += _opt(e, 2, name.encode())
    if tsresol is not None:
        opts += _opt(e, 9, bytes([tsresol]))
    if tsoffset:
        opts += _opt(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += _opt(e, 0, b"")
    return _block(e, 1, struct.pack(e + "HHI", 1, 0, snaplen) + opts)


def epb(if_id: int, ts: int, frame: bytes, e: str = "<", caplen: int | None = None) -> bytes:
    caplen = len(frame) if caplen is None else caplen
    return _block(e, 6, struct.pack(e + "IIIII", if_id, ts >> 32, ts & 0xFFFFFFFF, caplen,
                                    len(frame)) + frame)


def pcap_file(records: list[tuple[bytes, int]], snaplen: int = 65535) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for i, (frame, caplen) in enumerate(records):
        out += struct.pack("<IIII", 100 + i, 0, caplen, len(frame)) + frame
    return out


@pytest.fixture
def policy():
    return load_policy_text(POLICY, "trace-reader.yaml")


def test_pcapng_interfaces_name_and_time_each_frame(tmp_path):
    first = shb() + idb("a") + idb("uplink", tsresol=9, tsoffset=1000) \
        + epb(0, 1_500_000, FROM_A) + epb(1, 2_000_000_000, FROM_B)
    path = tmp_path / "two.pcapng"
    # a second section, big-endian: interface ids start again at 0 (pcapng spec 4.2)
    path.write_bytes(first + shb(">") + idb("b", e=">") + epb(0, 3_000_000, FROM_B, e=">"))
    reader = TraceReader(path)
    frames = list(reader)
    assert [(f.index, f.interface, f.time, f.data) for f in frames] == [
        (0, "a", 1.5, FROM_A), (1, "uplink", 1002.0, FROM_B), (2, "b", 3.0, FROM_B)]
    assert reader.warnings == []
    tshark = shutil.which("tshark")
    if tshark:          # an independent reader agrees (on one section: tshark numbers
        path.write_bytes(first)             # interfaces across sections its own way)
        frames = frames[:2]
        out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e",
                              "frame.interface_name", "-e", "frame.time_epoch"],
                             capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in out.splitlines()]
        assert [(n, float(t)) for n, t in rows] == [(f.interface, f.time) for f in frames]


def test_interface_names_pick_the_ingress_port(tmp_path, policy):
    """The same frame, with b's source MAC, captured on a's interface: a spoofing test a
    plain pcap cannot express (the MAC rule replays it as b's own frame)."""
    path = tmp_path / "spoof.pcapng"
    path.write_bytes(shb() + idb("a") + idb("b") + idb("eth7")
                     + epb(0, 1_000_000, FROM_B) + epb(1, 2_000_000, FROM_B)
                     + epb(2, 3_000_000, FROM_B) + epb(0, 4_000_000, FROM_A))
    outcome = replay(policy, path, keep_verdicts=True)
    assert [v["in_port"] for v in outcome.verdicts] == ["a", "b", "b", "a"]
    assert outcome.to_json()["drop_reasons"] == {"spoofed_src_mac": 1}
    assert outcome.to_json()["forwarded"] == 3


@pytest.mark.parametrize("cut", [1, 10, 20, 40])
def test_pcapng_last_record_cut_short_is_reported(tmp_path, policy, cut):
    data = shb() + idb("a") + epb(0, 1_000_000, FROM_A) + epb(0, 2_000_000, FROM_A)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-cut])
    outcome = replay(policy, path)
    assert outcome.to_json()["packets"] == 1
    assert outcome.to_json()["trace_warnings"] == 1
    [warning] = outcome.to_json()["trace_warning_list"]
    assert warning["index"] == 1
    assert "cut short" in warning["message"]


def test_pcapng_record_longer_than_the_snaplen(tmp_path, policy):
    path = tmp_path / "snap.pcapng"
    path.write_bytes(shb() + idb("a", snaplen=64) + epb(0, 1, FROM_A[:60])
                     + epb(0, 2, FROM_A) + epb(0, 3, FROM_A[:64]))
    reader = TraceReader(path)
    assert [f.index for f in reader] == [0, 2]
    assert [str(w) for w in reader.warnings] == [
        f"frame 1: record length {len(FROM_A)} exceeds the snaplen 64"]


def test_pcapng_caplen_past_its_block(tmp_path):
    path = tmp_path / "lie.pcapng"
    path.write_bytes(shb() + idb("a") + epb(0, 1, FROM_A, caplen=len(FROM_A) + 400)
                     + epb(0, 2, FROM_A))
    reader = TraceReader(path)
    assert [f.index for f in reader] == [1]
    assert "exceeds its block" in reader.warnings[0].message


@pytest.mark.parametrize("cut, message", [
    (1, f"record cut short ({len(FROM_B) - 1} of {len(FROM_B)} bytes)"),
    (len(FROM_B) + 5, "record header cut short (11 of 16 bytes)")])
def test_pcap_last_record_cut_short_is_reported(tmp_path, policy, cut, message):
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_file([(FROM_A, len(FROM_A)), (FROM_B, len(FROM_B))])[:-cut])
    reader = TraceReader(path)
    assert [f.data for f in reader] == [FROM_A]
    assert [str(w) for w in reader.warnings] == [f"frame 1: {message}"]


def test_pcap_record_longer_than_the_snaplen(tmp_path):
    path = tmp_path / "snap.pcap"
    path.write_bytes(pcap_file([(FROM_A, len(FROM_A)), (FROM_B[:40], 40)], snaplen=40))
    reader = TraceReader(path)
    assert [f.index for f in reader] == [1]
    assert [str(w) for w in reader.warnings] == [
        f"frame 0: record length {len(FROM_A)} exceeds the snaplen 40"]


def test_pcap_written_by_us_reads_back_without_warnings(tmp_path):
    path = tmp_path / "ours.pcap"
    w = PcapWriter(path)
    w.write(FROM_A, 1.25)
    w.write(FROM_B, 2.5)
    w.close()
    reader = TraceReader(path)
    assert [(f.time, f.data, f.interface) for f in reader] == [(1.25, FROM_A, None),
                                                               (2.5, FROM_B, None)]
    assert reader.warnings == []


def test_cli_warns_with_the_frame_and_counts_in_json(tmp_path):
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(POLICY)
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_file([(FROM_A, len(FROM_A)), (FROM_B, len(FROM_B))])[:-3])
    r = CliRunner().invoke(main, ["replay", str(policy_path), str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert f"warning: {path}: frame 1: record cut short" in r.stderr
    summary = json.loads(r.stdout)
    assert summary["trace_warnings"] == 1 and summary["packets"] == 1
