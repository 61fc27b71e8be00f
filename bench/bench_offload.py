"""Replay speed of a mostly-established trace: ``--nic none`` vs the default simnic.

The trace (built with ``hostsdn.packet.make_tcp`` and written to a temporary pcap) has
C TCP connections of P packets each (default 50 x 200), VM 10.1.0.4 to servers on the
internet, interleaved at random: SYN, SYN-ACK, ACK, data both ways, FIN/ACK both ways,
ACK.  It is replayed with ``hostsdn.runtime.replay.replay`` through
``examples/permissive.yaml`` (one stateful allow-all layer) with no NIC, with the
default simnic (4096 flows, lru) and, to show eviction churn, with a simnic of 16 flows.
Reported: replay packets/s (best of the rounds, wall clock, pcap reading included) and
the host-path share (packets that were exceptions to the host).

    PYTHONPATH=src python bench/bench_offload.py [--quick] [--conns C] [--packets P]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import benchutil as bu

from hostsdn.nic.datapath import DatapathOptions
from hostsdn.packet import make_tcp
from hostsdn.runtime.pcap import PcapWriter
from hostsdn.runtime.policyfile import load_policy
from hostsdn.runtime.replay import replay

POLICY = Path(__file__).resolve().parent.parent / "examples" / "permissive.yaml"
VM_MAC = "02:00:00:00:00:01"          # the port of examples/permissive.yaml


def connection(i: int, packets: int) -> list[bytes]:
    """One TCP connection of ``packets`` frames (>= 8) between the VM and server i."""
    server = f"198.51.100.{1 + i % 250}"
    sport, dport = 30000 + i, 443
    seq_c, seq_s = 1000, 5000

    def c2s(flags: str, payload: bytes = b"") -> bytes:
        return make_tcp(VM_MAC, bu.GW_MAC, bu.VM_IP, server, sport, dport, flags, payload,
                        seq=seq_c, ack=seq_s)

    def s2c(flags: str, payload: bytes = b"") -> bytes:
        return make_tcp(bu.GW_MAC, VM_MAC, server, bu.VM_IP, dport, sport, flags, payload,
                        seq=seq_s, ack=seq_c)

    frames = [c2s("S"), s2c("SA"), c2s("A")]
    for n in range(packets - 7):
        if n % 2 == 0:
            frames.append(c2s("PA", b"q" * 100))
            seq_c += 100
        else:
            frames.append(s2c("A", b"r" * 1000))
            seq_s += 1000
    frames += [c2s("FA"), s2c("A"), s2c("FA"), c2s("A")]
    return frames


def write_trace(path: Path, conns: int, packets: int, seed: int = 1) -> int:
    """Interleave the connections at random (each keeps its order); 1 ms apart."""
    rng = random.Random(seed)
    queues = [connection(i, packets) for i in range(conns)]
    pos = [0] * conns
    live = list(range(conns))
    w = PcapWriter(path)
    t = 1.0
    count = 0
    try:
        while live:
            c = rng.choice(live)
            w.write(queues[c][pos[c]], t)
            count += 1
            t += 0.001
            pos[c] += 1
            if pos[c] == len(queues[c]):
                live.remove(c)
    finally:
        w.close()
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run")
    ap.add_argument("--conns", type=int, default=None, help="TCP connections (C)")
    ap.add_argument("--packets", type=int, default=200, help="packets per connection (P)")
    bu.add_gc_option(ap)
    args = ap.parse_args()
    gc_label = bu.apply_gc(args.gc)
    conns = args.conns or (20 if args.quick else 50)
    packets = max(8, args.packets if not args.quick else min(args.packets, 100))
    rounds = 1 if args.quick else 3
    policy = load_policy(POLICY)
    settings = [("nic none", DatapathOptions(nic="none")),
                ("simnic (default: 4096, lru)", DatapathOptions()),
                ("simnic cache 16, lru", DatapathOptions(cache_size=16))]
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "established.pcap"
        frames = write_trace(trace, conns, packets)
        print(f"bench_offload: {conns} TCP connections x {packets} packets = {frames} frames; "
              f"{bu.environment()}; best of {rounds}{' (quick)' if args.quick else ''}; "
              f"{gc_label}")
        results = {}
        for label, opts in settings:
            best = float("inf")
            summary: dict[str, Any] = {}
            for _ in range(rounds):
                started = time.perf_counter()
                summary = replay(policy, trace, options=opts).to_json()
                best = min(best, time.perf_counter() - started)
            results[label] = (bu.rate(frames, best), summary)
    base = results["nic none"][0]
    rows = []
    for label, (pps, s) in results.items():
        rows.append((label, bu.fmt_rate(pps), f"{pps / base:.2f}x", f"{s['host_share']:.1%}",
                     f"{s['nic_hits']:,}", f"{s['exceptions']:,}", f"{s['evictions']:,}",
                     f"{s['forwarded']:,}"))
    bu.print_table("replay of a mostly-established trace", [
        "NIC", "replay pkts/s", "vs none", "host share", "NIC hits", "exceptions",
        "evictions", "forwarded"], rows, [
        "host share: exceptions / packets (the packets the host switch processed);",
        "pkts/s: wall clock of the whole replay() call, pcap reading included."])


if __name__ == "__main__":
    main()
