"""An in-process switch for the management API tests: the example policy, the example
capture replayed through it, and an API app over it (no kernel, no threads)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hostsdn.api.app import Board, create_app
from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.runtime.netns import plan_topology
from hostsdn.runtime.pcap import read_frames
from hostsdn.runtime.policyfile import load_policy
from hostsdn.runtime.reload import Reloader
from hostsdn.runtime.replay import classify_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
EXAMPLE_TRACE = ROOT / "examples" / "example.pcap"


@dataclass
class Rig:
    dp: Datapath
    board: Board
    policy_file: Path
    now: float


def make_rig(tmp: Path, *, options: DatapathOptions | None = None,
             frames: int | None = None) -> Rig:
    policy_file = tmp / "web.yaml"
    shutil.copy(EXAMPLE_POLICY, policy_file)
    policy = load_policy(policy_file)
    dp = Datapath(policy, options or DatapathOptions())
    by_mac = {p.mac: p.name for p in policy.ports}
    now = 0.0
    for tf in read_frames(EXAMPLE_TRACE)[:frames]:
        dp.receive(tf.data, classify_port(tf.data, by_mac), tf.time)
        now = tf.time
    reloader = Reloader(dp, plan_topology(policy), policy_file.resolve(), None,
                        text=policy_file.read_text())
    rig = Rig(dp, None, policy_file.resolve(), now + 1.0)  # type: ignore[arg-type]
    rig.board = Board(dp, policy_file.resolve(), reloader, clock=lambda: rig.now,
                      started=0.0)
    return rig


def app_of(rig: Rig):  # type: ignore[no-untyped-def]
    return create_app(rig.board)
