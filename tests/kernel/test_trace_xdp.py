"""`hostsdn trace` and `hostsdn flows` on the real XDP program (BPF_PROG_TEST_RUN): the
trace of each frame of the example, taken just before it, says what the program and
the host then do (path, outputs, drops), changes nothing, and the flows listed as
offloaded are the entries the program's maps hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.nic.flowdump import flow_rows
from hostsdn.runtime.pcap import read_frames
from hostsdn.runtime.replay import classify_port
from statesnap import snapshot

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("xdp_ready")


def test_trace_agrees_with_the_xdp_program_and_changes_nothing(example_policy):
    by_mac = {p.mac: p.name for p in example_policy.ports}
    hits = 0
    with Datapath(example_policy, DatapathOptions(nic="xdp")) as dp:
        for tf in read_frames(ROOT / "examples" / "example.pcap"):
            port = classify_port(tf.data, by_mac)
            before = snapshot((dp.switch, dp.manager, dp.backend.table, dp.counters))
            entries = dp.backend.dump_flows()
            t = dp.trace(tf.data, port, tf.time)
            assert snapshot((dp.switch, dp.manager, dp.backend.table, dp.counters)) == before
            assert dp.backend.dump_flows() == entries
            r = dp.receive(tf.data, port, tf.time)
            assert (t.path, t.outputs) == (r.path, r.outputs), tf.index
            assert t.drops == [(p, x.value) for p, x in r.drops], tf.index
            hits += r.path == "nic"
        assert hits > 0
        dp.manager.sync_stats()
        rows = flow_rows(dp, tf.time)
        offloaded = {r["offload"]["nic_handle"] for r in rows
                     if r["offload"]["state"] == "offloaded"}
        assert offloaded == set(dp.backend.dump_flows())
        dns = [r for r in rows if r["match"].get("dport") == 53 and r["direction"] == "out"]
        assert dns and dns[0]["offload"]["state"] == "refused"   # the program has no meters
        assert "meter" in dns[0]["offload"]["detail"]
