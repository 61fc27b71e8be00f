"""The slow path of ``hostsdn up --nic xdp`` in one process: new connections per second
with the real BPF maps, no sockets, no other process (run by hand, root).

``bench_conn_rate.py`` measures the live figure, but on a shared 2-CPU machine its
absolute rate moves with every other process.  This script measures the same work - a
new UDP flow's first frame through ``Datapath.receive_exception`` (host switch: layers,
connection, both directions' flows; the offload manager; the flow ops written into the
XDP program's hash maps) - in a tight loop, with the NIC cache kept full as under a
sustained load, and compares variants in the same run, interleaved:

* ``evict 1``: the NIC cache evicts one entry at a time (``--evict-batch 1``, the
  behaviour before batched eviction);
* ``evict auto``: the default (1/64 of the cache at once);
* ``evict auto, slow ops``: the default, with the XDP datapath's flow ops as before
  the key cache (every op encodes its key again, two ctypes buffers per counter read:
  ``XdpDatapath.fast_ops = False``) and each evicted entry's last hits read on its own
  (``OffloadManager._pull_last_hits`` disabled);
* ``no NIC``: ``--nic none`` (the host switch alone: what the NIC work adds).

The BPF object is loaded but not attached (the maps are real, the ``XdpNic`` is told
it is live so that it reads the entries' counters from the maps as ``up`` does).

    sudo PYTHONPATH=src python bench/bench_live_setup.py [--flows 20000] [--cache 4096]
        [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time

import benchutil as bu

from hostsdn.nic.datapath import Datapath, DatapathOptions
from hostsdn.packet import make_udp
from hostsdn.policy.loader import load_policy_text

POLICY = """\
version: 1
uplink: {mac: "02:00:00:00:ff:01", ip: 192.0.2.1, gateway_mac: "02:00:00:00:ee:01"}
ports:
  - {name: a, mac: "02:00:00:00:b0:01", ips: ["10.99.0.4/24"], layers: [allow-all]}
  - {name: b, mac: "02:00:00:00:b0:02", ips: ["10.99.0.6/24"], layers: [allow-all]}
layers:
  - {name: allow-all, stateful: true, default: allow}
"""
SORT = "cumulative"
MAC_A, MAC_B = "02:00:00:00:b0:01", "02:00:00:00:b0:02"


def frames(n: int, first: int) -> list[bytes]:
    """n new UDP flows a -> b (a new source/destination port pair each)."""
    out = []
    for i in range(first, first + n):
        out.append(make_udp(MAC_A, MAC_B, "10.99.0.4", "10.99.0.6", 10000 + i % 50000,
                            9000 + i // 50000, b"x" * 16))
    return out


def variant(name: str, cache: int) -> DatapathOptions:
    if name == "no NIC":
        return DatapathOptions(nic="none")
    return DatapathOptions(nic="xdp", cache_size=cache,
                           evict_batch=1 if name == "evict 1" else None)


SLOW_OPS = "evict auto, slow ops"


def measure(name: str, cache: int, n: int, profile: bool = False) -> tuple[float, float]:
    """Setups per wall-clock second and per CPU second (this process, user + system:
    what a loaded shared machine disturbs least) of ``n`` new flows after the cache was
    filled (warm-up: 2 x cache)."""
    policy = load_policy_text(POLICY, "bench.yaml")
    with Datapath(policy, variant(name, cache)) as dp:
        if dp.backend is not None:
            dp.backend.live = True  # type: ignore[attr-defined]  # read counters like up
            dp.backend._dp.fast_ops = name != SLOW_OPS  # type: ignore[attr-defined]
            if name == SLOW_OPS:
                # and the eviction as before: each victim's last hits read on its own
                mgr = dp.manager
                unoffload = mgr._unoffload
                mgr._pull_last_hits = lambda flows: None  # type: ignore[method-assign]
                mgr._unoffload = (  # type: ignore[method-assign]
                    lambda flow, reason, hits_pulled=False: unoffload(flow, reason))
        warm = frames(2 * cache, 0)
        run = frames(n, 2 * cache)
        now = 1.0
        for f in warm:
            dp.receive_exception(f, "a", now)
            now += 1e-5
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        for f in run:
            dp.receive_exception(f, "a", now)
            now += 1e-5
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        if prof:
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(SORT).print_stats(30)
            print(out.getvalue())
        assert dp.counters["forwarded"] == len(warm) + len(run), dp.counters
    return n / secs, n / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--cache", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", metavar="VARIANT", default=None,
                    help="cProfile one run of this variant instead")
    bu.add_gc_option(ap)
    args = ap.parse_args()
    gc_label = bu.apply_gc(args.gc)
    if args.profile:
        measure(args.profile, args.cache, args.flows, profile=True)
        return
    names = ["evict 1", SLOW_OPS, "evict auto", "no NIC"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu_rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            wall, cpu = measure(n, args.cache, args.flows)
            rates[n].append(wall)
            cpu_rates[n].append(cpu)
    ref = statistics.median(rates["evict 1"])
    cref = statistics.median(cpu_rates[SLOW_OPS])
    rows = []
    for n, r in rates.items():
        c = statistics.median(cpu_rates[n])
        rows.append([n, bu.fmt_rate(statistics.median(r)), f"{min(r):,.0f}-{max(r):,.0f}",
                     f"{statistics.median(r) / ref:.2f}x", bu.fmt_rate(c),
                     f"{min(cpu_rates[n]):,.0f}-{max(cpu_rates[n]):,.0f}",
                     f"{c / cref:.2f}x", f"{1e6 / c:.0f}"])
    bu.print_table(f"new UDP flows through receive_exception, NIC cache {args.cache} full, "
                   f"{args.flows} flows x {args.rounds} rounds interleaved; {gc_label}; "
                   f"{bu.environment()}",
                   ["variant", "setups/s (median)", "min-max", "vs evict 1",
                    "per CPU s (median)", "min-max", "vs slow ops", "CPU us/setup"], rows)


if __name__ == "__main__":
    sys.exit(main())
