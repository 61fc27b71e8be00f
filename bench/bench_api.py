"""Management API under load while iperf3 runs through ``hostsdn up --nic xdp`` (by hand).

One ``up --nic xdp`` with two VMs (the permissive stateful policy of
``bench_tcp_throughput.py``), an ``iperf3 -s`` in VM b, and ``--extra-flows`` UDP
"connections" from VM a so the flow table holds more than iperf3's two connections.
Modes, round-robin in the same run (so drift of the machine hits each alike):

* ``unpolled``: iperf3 alone (the baseline);
* ``summary``: iperf3 while ``--clients`` closed-loop clients GET ``/v1/summary`` on the
  Unix socket as fast as answers come;
* ``flows``: the same with ``GET /v1/flows?limit=100`` (a page, NIC counters pulled).

Reported per mode: median receiver Gbit/s over the rounds (min-max), API requests/s
answered, the median request latency, and the throughput lost against ``unpolled``.
The goal of issue 11: under 5 % lost.

    sudo PYTHONPATH=src python bench/bench_api.py [--rounds 3] [--time 5] [--clients 1]
        [--extra-flows 1000]

Names: ports ``hsdnbapa`` / ``hsdnbapb`` (namespaces ``hsdn-hsdnbapa``...), uplink
``hsdn-hsdnbapu``; removed by name in a ``finally`` (``hostsdn down``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchutil as bu
import httpx
from bench_tcp_throughput import (
    VM_B,
    HostsdnUp,
    Iperf3Server,
    iperf3_round,
    run,
    run_main,
    sigterm_as_interrupt,
    wait_quiet,
)

MODES = {"unpolled": None, "summary": ("/v1/summary", {}),
         "flows": ("/v1/flows", {"limit": 100})}


class Poller:
    """``clients`` threads, each a closed loop of GETs on the API's Unix socket."""

    def __init__(self, sock: Path, path: str, params: dict[str, object], clients: int) -> None:
        self.sock, self.path, self.params, self.clients = sock, path, params, clients
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True)
                         for _ in range(clients)]

    def _loop(self) -> None:
        lat: list[float] = []
        errors = 0
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)),
                          base_url="http://hostsdn", timeout=10) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.get(self.path, params=self.params)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
        with self._lock:
            self.latencies += lat
            self.errors += errors

    def __enter__(self) -> Poller:
        self.started = time.perf_counter()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(15)
        self.elapsed = time.perf_counter() - self.started


def make_flows(ns: str, count: int) -> None:
    """``count`` UDP datagrams from VM a to VM b, each to its own port: one connection
    (two flows) each in the switch, gone after the UDP timeout (30 s unreplied)."""
    if count <= 0:
        return
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for p in range(20000, 20000 + {count}):\n"
            f"    s.sendto(b'x', ('{VM_B}', p))\n")
    run("ip", "netns", "exec", ns, sys.executable, "-c", code, timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=int, default=5, help="iperf3 -t per round")
    ap.add_argument("--clients", type=int, default=1, help="concurrent API clients")
    ap.add_argument("--extra-flows", type=int, default=1000,
                    help="UDP connections made before each round (2 flows each)")
    ap.add_argument("--quiet-limit", type=float, default=0.15, metavar="SHARE")
    ap.add_argument("--quiet-wait", type=float, default=20, metavar="S")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, veth, XDP)")
    print(f"API polling vs forwarding: hostsdn up --nic xdp, iperf3 -t {args.time}, "
          f"{args.rounds} round(s) per mode, round-robin, {args.clients} client(s), "
          f"{args.extra_flows} extra UDP connections; {bu.environment()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    results: dict[str, list[float]] = {m: [] for m in MODES}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    lats: dict[str, list[float]] = {m: [] for m in MODES}
    errors: dict[str, int] = dict.fromkeys(MODES, 0)
    flows_seen = 0
    with tempfile.TemporaryDirectory(prefix="hsdnb-api-") as tmp, sigterm_as_interrupt():
        work = Path(tmp)
        up = HostsdnUp(work, "ap", "xdp")
        server = Iperf3Server(up.ns_b, VM_B, work / "iperf3.log")
        try:
            up.start()
            server.start()
            sock = work / "run" / f"{up.policy.stem}.sock"
            for rnd in range(args.rounds):
                for mode, target in MODES.items():
                    make_flows(up.ns_a, args.extra_flows)
                    wait_quiet(args.quiet_limit, args.quiet_wait)
                    if target is None:
                        gbps, _, err = iperf3_round(up.ns_a, args.time)
                    else:
                        with Poller(sock, target[0], target[1], args.clients) as poller:
                            gbps, _, err = iperf3_round(up.ns_a, args.time)
                        rates[mode].append(len(poller.latencies) / poller.elapsed)
                        lats[mode].extend(poller.latencies)
                        errors[mode] += poller.errors
                    if err:
                        print(f"round {rnd + 1} {mode}: {err}", file=sys.stderr)
                    results[mode].append(gbps)
                    print(f"round {rnd + 1} {mode:<8} {gbps:6.2f} Gbit/s", file=sys.stderr)
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                              base_url="http://hostsdn") as c:
                flows_seen = int(c.get("/v1/summary").json()["flows_active"])
        finally:
            server.stop()
            final = up.stop()
    base = statistics.median(results["unpolled"]) if results["unpolled"] else 0.0
    rows = []
    for mode in MODES:
        g = results[mode]
        med = statistics.median(g) if g else 0.0
        lost = f"{(1 - med / base):+.1%}" if base and mode != "unpolled" else ""
        rps = f"{statistics.median(rates[mode]):,.0f}" if rates[mode] else ""
        lat = f"{statistics.median(lats[mode]) * 1e3:.2f}" if lats[mode] else ""
        rows.append([mode, f"{med:.2f}", f"{min(g):.2f}-{max(g):.2f}" if g else "",
                     f"{med / base:.3f}" if base else "", lost, rps, lat,
                     str(errors[mode]) if mode != "unpolled" else ""])
    bu.print_table("iperf3 VM a -> VM b through up --nic xdp while the API is polled",
                   ["mode", "Gbit/s", "min-max", "ratio", "lost", "req/s", "ms/req",
                    "errors"], rows,
                   [f"flows in the table at the end: {flows_seen}; final status: {final}"])


if __name__ == "__main__":
    run_main(main)
