"""What a trace costs the packet loop: ``Datapath.trace`` vs ``Datapath.receive`` of the
same frame, as the switch holds more flows (1k, 10k, 100k UDP connections on the example
policy, simnic NIC, LRU eviction).

A trace runs the datapath's code on a copy-on-read shadow of its state; making the shadow
is O(ports) plus the LRU/LFU eviction heap, so the cost should stay flat as flows grow
(the heap is bounded by the NIC cache: 4096 per direction).  Two frames: a hit of an
offloaded flow (the NIC side, plus the host what-if) and the first packet of a new flow
(slow path).  Each is timed over repeats after the state is built; the receive of the
same kind of frame on the real datapath (the same hit; distinct new flows) is measured in
the same run as the baseline.

    PYTHONPATH=src python bench/bench_trace.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from functools import partial

from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.packet import make_udp
from hostsdn.runtime.policyfile import load_policy

WEB, GW = "02:00:00:00:00:01", "02:00:00:00:fe:fe"


def _frame(i: int) -> bytes:
    return make_udp(WEB, GW, "10.1.0.4", f"198.51.{(i >> 8) & 255}.{i & 255}",
                    1024 + (i >> 16), 443, b"x" * 32)


def _receive_next(dp: Datapath, frames: Iterator[bytes], now: float) -> None:
    dp.receive(next(frames), "web", now)


def _time(fn: Callable[[], object], repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [1000, 10000] if args.quick else [1000, 10000, 100000]
    repeats = 50 if args.quick else 200
    policy = load_policy("examples/policy.yaml")
    print(f"{'flows':>8} {'frame':>6} {'receive us':>11} {'trace us':>9} {'trace/receive':>14}")
    for n in sizes:
        with Datapath(policy, DatapathOptions()) as dp:
            now = 1.0
            for i in range(n):
                dp.receive(_frame(i), "web", now)
                now += 1e-5
            hit = _frame(0)
            dp.receive(hit, "web", now)          # offloaded (eager): the next one hits
            fresh = iter([_frame(n + 1 + i) for i in range(repeats)])
            new = _frame(n + repeats + 2)
            traced = {"hit": _time(partial(dp.trace, hit, "web", now), repeats),
                      "new": _time(partial(dp.trace, new, "web", now), repeats)}
            # the baseline, in the same run: receive of such frames on the real datapath
            received = {"hit": _time(partial(dp.receive, hit, "web", now), repeats),
                        "new": _time(partial(_receive_next, dp, fresh, now), repeats)}
            for name in ("hit", "new"):
                base, tr = received[name], traced[name]
                print(f"{dp.switch.flow_count():>8} {name:>6} {base * 1e6:>11.1f} "
                      f"{tr * 1e6:>9.1f} {tr / base:>13.1f}x")


if __name__ == "__main__":
    main()
