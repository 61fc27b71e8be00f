"""`hostsdn flows` (after a capture), `replay --dump-flows` and the new keys of
`--verdicts`: counts checked against the capture read by scapy, rule lines found by
reading the policy file, every offload state reachable with the NIC options."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from scapy.all import UDP, Ether, rdpcap  # type: ignore

from hostsdn.cli.main import main
from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.nic.flowdump import flow_rows
from hostsdn.policy.loader import load_policy_text
from hostsdn.runtime.replay import replay_into

ROOT = Path(__file__).resolve().parents[2]
POLICY = str(ROOT / "examples" / "policy.yaml")
TRACE = str(ROOT / "examples" / "example.pcap")
TEXT = Path(POLICY).read_text()
LINES = TEXT.splitlines()
WEB_MAC = "02:00:00:00:00:01"


def line_of(text: str) -> int:
    hits = [i + 1 for i, line in enumerate(LINES) if text in line]
    assert len(hits) == 1, hits
    return hits[0]


def flows(*args):
    r = CliRunner().invoke(main, ["flows", POLICY, "--pcap", TRACE, "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["flows"]


def dns_queries():
    return [p for p in rdpcap(TRACE) if UDP in p and p[UDP].dport == 53 and p[Ether].src == WEB_MAC]


def test_dns_flow_counts_rules_and_offload():
    rows = [r for r in flows("--port", "web", "--direction", "out", "--proto", "udp",
                             "--l4-port", "53")]
    assert len(rows) == 1
    (dns,) = rows
    queries = dns_queries()
    assert len({(p[UDP].sport) for p in queries}) == 1          # one flow in the capture
    assert dns["host_packets"] + dns["nic_packets"] == len(queries)
    assert dns["host_bytes"] + dns["nic_bytes"] == sum(len(p) for p in queries)
    lines = {r["layer"]: r["line"] for r in dns["rules"]}
    assert lines["meter"] == line_of("meter: {rate: 5pps")
    assert lines["nat"] == line_of("snat: {ip: 203.0.113.7}")
    assert dns["offload"]["state"] == "offloaded" and dns["meters"] == ["meter/outbound/0"]
    assert dns["rewrite"].endswith("src_ip=203.0.113.7")


def test_states_follow_the_nic_options():
    refused = flows("--nic-without", "meter", "--proto", "udp", "--l4-port", "53",
                    "--direction", "out")
    assert refused[0]["offload"]["state"] == "refused"
    assert refused[0]["offload"]["reason"] == "unsupported_action"
    assert "meter" in refused[0]["offload"]["detail"]
    pending = flows("--offload-after", "50", "--state", "pending")
    assert pending and all(r["offload"]["reason"] in ("not_yet", "conn_state") for r in pending)
    assert any(r["offload"]["reason"] == "not_yet" for r in pending)
    evicted = flows("--cache-size", "1", "--eviction", "fifo")
    assert any(r["offload"]["state"] == "evicted" for r in evicted)
    idle = flows("--nic-idle", "0.01")
    assert any(r["offload"]["state"] == "idle" for r in idle)
    flooded = flows("--state", "refused")
    assert any(r["offload"]["reason"] == "not_cacheable" and r["key"].startswith("arp")
               for r in flooded)
    assert all(r["port"] == "db" for r in flows("--port", "db"))


def test_stale_generation_after_a_policy_change():
    pol = load_policy_text(TEXT, "policy.yaml")
    changed = load_policy_text(TEXT.replace("dst_port: [80, 443, 5432]",
                                            "dst_port: [80, 443, 5432, 8443]"), "policy.yaml")
    with Datapath(pol, DatapathOptions()) as dp:
        _, last = replay_into(dp, TRACE)
        assert dp.replace_policy(changed) == ["web"]
        rows = flow_rows(dp, last)
    assert {r["offload"]["state"] for r in rows if r["port"] == "web"} == {"stale"}
    assert "stale" not in {r["offload"]["state"] for r in rows if r["port"] == "db"}


def test_table_output_and_dump_flows_and_verdicts(tmp_path):
    r = CliRunner().invoke(main, ["flows", POLICY, "--pcap", TRACE], env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert "offloaded" in r.output and f"meter:{line_of('meter: {rate: 5pps')}" in r.output
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, "--json", "--dump-flows",
                                  str(tmp_path / "f.jsonl"), "--verdicts",
                                  str(tmp_path / "v.jsonl")])
    assert r.exit_code == 0, r.output
    dumped = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert dumped == flows()
    assert len(dumped) == json.loads(r.output)["flows_active"]
    v6 = json.loads((tmp_path / "v.jsonl").read_text().splitlines()[6])
    assert v6["decided_by"] and v6["path"] == "nic"              # old keys kept
    (f,) = v6["flows"]
    assert f["offload"] == "offloaded" and f["key"].startswith("tcp 10.1.0.4:40000")
    assert f"vnet: {POLICY}:{line_of('encap: {vxlan')}" in f["rules"]


def test_flows_without_pcap_and_no_running_up_says_so():
    r = CliRunner().invoke(main, ["flows", POLICY])
    assert r.exit_code == 2 and "no API socket" in r.output
