"""The command line's shared NIC options, --ports-from-trace on replay, warnings for
captures that will not meet a port, and the error contract (only HostsdnError becomes a
one-line error; anything else is a bug and shows as one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from captures import carried
from hostsdn.cli.main import main
from hostsdn.nic.datapath import DatapathOptions
from hostsdn.offload.backend import backend_names
from hostsdn.offload.manager import EVICTION_POLICIES

ROOT = Path(__file__).resolve().parents[2]
POLICY = str(ROOT / "examples" / "policy.yaml")
PERMISSIVE = str(ROOT / "examples" / "permissive.yaml")
TRACE = str(ROOT / "examples" / "example.pcap")
NIC_OPTIONS = {"--nic", "--cache-size", "--eviction", "--offload-after", "--exception-path",
               "--guest-flow-list", "--nic-idle", "--eager-replies", "--nic-without"}


def _options(command: click.Command) -> dict[str, click.Option]:
    return {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts}


@pytest.mark.parametrize("name", ["replay", "trace", "flows", "up"])
def test_every_datapath_command_has_every_nic_option(name):
    assert NIC_OPTIONS <= set(_options(main.commands[name]))


def test_the_nic_options_are_declared_once():
    """replay's and up's options are the same objects' copies: same type, default, help
    (up explains --nic in its own words)."""
    replay, up = _options(main.commands["replay"]), _options(main.commands["up"])
    for name in NIC_OPTIONS - {"--nic"}:
        a, b = replay[name], up[name]
        assert (type(a.type), a.default, a.help) == (type(b.type), b.default, b.help), name


def test_choices_come_from_the_backend_registry_and_the_eviction_policies():
    opts = _options(main.commands["replay"])
    assert list(opts["--nic"].type.choices) == [*backend_names(), "none"]
    assert tuple(opts["--eviction"].type.choices) == EVICTION_POLICIES


def test_up_passes_every_nic_option_to_the_datapath(monkeypatch):
    seen = {}
    monkeypatch.setattr("hostsdn.runtime.daemon.serve",
                        lambda pol, path, opts, **kw: seen.setdefault("opts", opts))
    r = CliRunner().invoke(main, [
        "up", POLICY, "--nic", "none", "--cache-size", "7", "--eviction", "lfu",
        "--offload-after", "2", "--exception-path", "vf", "--guest-flow-list",
        "--nic-idle", "2.5", "--no-eager-replies", "--nic-without", "meter,encap_vxlan"])
    assert r.exit_code == 0, r.output
    dp = seen["opts"].datapath
    assert isinstance(dp, DatapathOptions)
    assert (dp.nic, dp.cache_size, dp.eviction, dp.offload_after, dp.exception_path,
            dp.guest_flow_list, dp.nic_idle, dp.eager_replies) == (
        "none", 7, "lfu", 2, "vf", True, 2.5, False)
    assert {f.value for f in dp.nic_without} == {"meter", "encap_vxlan"}


def test_a_bad_choice_is_a_usage_error_naming_the_choices():
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, "--eviction", "mru"])
    assert r.exit_code == 2
    assert "'mru' is not one of 'lru', 'lfu', 'fifo', 'random', 'none'" in r.output


def test_replay_ports_from_trace_switches_a_capture_taken_elsewhere():
    trace = str(carried("ipv4_http_get.pcap"))
    plain = CliRunner().invoke(main, ["replay", PERMISSIVE, trace, "--json"])
    assert plain.exit_code == 0
    assert json.loads(plain.stdout)["drop_reasons"] == {"no_port": 14}
    assert "--ports-from-trace N" in plain.stderr
    r = CliRunner().invoke(main, ["replay", PERMISSIVE, trace, "--json",
                                  "--ports-from-trace", "1"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["ports"] == ["mac-c8-bc-c8-96-d2-a0"]
    assert s["drop_reasons"] == {} and s["forwarded"] == 14 and s["nic_hits"] > 0
    assert r.stderr == ""


def test_replay_ports_from_trace_uses_the_code_of_the_cache_lab():
    from hostsdn.runtime import cachelab, traceports

    assert cachelab.ports_from_trace is traceports.ports_from_trace


def test_a_non_ethernet_capture_gets_a_warning():
    trace = str(carried("other_linktypes/rawip_101_icmp.pcap"))
    r = CliRunner().invoke(main, ["replay", POLICY, trace, "--json"])
    assert r.exit_code == 0
    assert r.stderr.startswith(f"hostsdn: warning: {trace}: link type 101 (raw IP) has no "
                               "Ethernet header")
    r = CliRunner().invoke(main, ["replay", POLICY, trace, "--ports-from-trace", "2"])
    assert r.exit_code == 2
    assert r.stderr.endswith("hostsdn: error: the trace has no unicast source MAC to make a "
                             "port of (link type 101: no Ethernet header, the frames have zero "
                             "MACs)\n")


def test_an_ethernet_capture_from_the_switch_gets_no_warning():
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, "--json"])
    assert r.exit_code == 0 and r.stderr == ""


@pytest.mark.parametrize("option", ["--verdicts", "--dump-flows"])
def test_an_unwritable_output_file_is_a_one_line_error(option, tmp_path):
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, option, str(tmp_path / "no" / "x")])
    assert r.exit_code == 2
    assert r.stderr.startswith(f"hostsdn: error: {tmp_path / 'no' / 'x'}: cannot write")


def test_an_unwritable_out_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, "--out", str(tmp_path / "file" / "d")])
    assert r.exit_code == 2
    assert "cannot make the output folder" in r.stderr


@pytest.mark.parametrize("bug", [KeyError("web"), ValueError("bad"), OSError(5, "EIO")])
def test_an_exception_that_is_not_ours_shows_as_a_bug(monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr("hostsdn.runtime.replay.replay", broken)
    r = CliRunner().invoke(main, ["replay", POLICY, TRACE, "--json"])
    assert r.exit_code == 1 and r.exception is bug       # not 'hostsdn: error: ...'
    assert "hostsdn: error" not in r.output


def test_help_imports_no_command_code():
    """`hostsdn --help` and a command's help load click, not the switch (start-up time)."""
    for args in (["--help"], ["replay", "--help"]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hostsdn.cli.main",
                              *args], capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
        modules = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
        heavy = {m for m in modules if m.startswith(("pydantic", "hostsdn.policy",
                                                     "hostsdn.switch", "hostsdn.runtime",
                                                     "rich", "dpkt"))}
        if args == ["--help"]:
            assert heavy == set(), heavy
            assert not {m for m in modules if m.startswith("hostsdn.offload")}
        else:       # the --nic choices import the backend registry, not the YAML schema
            assert not {m for m in heavy if m.startswith(("pydantic", "hostsdn.policy.loader",
                                                          "rich", "dpkt"))}
