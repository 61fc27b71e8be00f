"""First-packet latency through ``hostsdn up``: the cost of a NIC miss (run by hand).

With ``--nic xdp`` the first frame of a new flow misses the BPF flow map, is
``XDP_PASS``ed to the AF_PACKET socket of the Python slow path, goes through the host
switch (policy layers, connection), the resulting flows are written into the BPF maps,
and the frame is sent on; later frames of the flow stay in the kernel.

Measured from inside VM a's namespace: for N distinct new UDP flows (a new source port
each, 40000 + i) to a small echo server (a separate Python process in VM b's namespace),
one datagram is sent and the round trip timed; a second datagram on the same socket (same
5-tuple) is timed the same way.  So the *first* RTT contains the miss handling of the
request and of the echo's reply (whichever of the four flow directions the slow path
still has to set up), the *second* RTT only NIC hits.  Reported per backend: the first
and second RTT (median, p90), ``first - second`` per flow (median, p90: the slow-path
cost of a flow), the Python frames per flow (status line ``packets``) and losses.

``--nic simnic`` and ``--nic none`` are measured too for comparison: there every frame
goes through Python, so the "second" RTT is Python forwarding a known flow (a simnic hit
or a host-switch flow-table hit), and ``first - second`` the flow-setup part only.

Peers in the same run: the Linux bridge (the baseline: what a new 5-tuple costs with no
switch at all), and Open vSwitch 3.1's userspace datapath with a conntrack rule set
(``ct(commit)`` on new, allow established) over AF_XDP and over AF_PACKET ports
(``ovspeer.py``; ``apt-get install openvswitch-switch``, else they are left out with a
note).  Every row shows its ``1st-2nd`` median as a ratio to the lower of the two OVS + ct
peers' (the stricter reference).

    sudo PYTHONPATH=src python bench/bench_first_packet.py [--quick] [--flows 200]
        [--nics bridge,ovs-afxdp-ct,ovs-netdev-ct,xdp,simnic,none] [--pin CPU]

Names: ports ``hsdnbf?a`` / ``hsdnbf?b`` (namespaces and host links ``hsdn-hsdnbf..``),
uplink namespaces ``hsdn-hsdnbf?u``; the bridge peer ``hsdnbtbr*``, the OVS peers
``hsdnbo*``; deleted by name in a ``finally`` (also on Ctrl-C / SIGTERM).  Traffic goes only between the two VM namespaces (10.99.0.4 -> 10.99.0.6).
The backends run one after the other (only one ``up`` at a time).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil as bu
import ovspeer
from bench_tcp_throughput import (
    PREFIX,
    VM_A,
    VM_B,
    HostsdnUp,
    KernelPeer,
    drop_missing_ovs,
    link_exists,
    make_ovs_peer,
    ns_exists,
    pin_to,
    run_main,
    sigterm_as_interrupt,
    stop_process,
    wait_quiet,
)

from hostsdn.runtime.netns import in_netns

ECHO_PORT = 7007
SPORT_BASE = 40000
WARMUP = 5
TIMEOUT = 1.0
GOAL_US = 150
DEFAULT_PEERS = ("bridge", "ovs-afxdp-ct", "ovs-netdev-ct", "xdp", "simnic", "none")
OVS_CT_PEERS = ("ovs-afxdp-ct", "ovs-netdev-ct")

ECHO_SERVER = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""


def start_echo(netns: str, log: Path, cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([*pin_to(cpus), "ip", "netns", "exec", netns,
                                 sys.executable, "-c", ECHO_SERVER, VM_B, str(ECHO_PORT)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if "listening" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop_process(proc, timeout=2)
    raise RuntimeError(f"echo server in {netns} did not start: {log.read_text()}")


def rtt(sock: socket.socket, payload: bytes) -> float | None:
    """Send one datagram, wait for its echo; seconds, or None when lost."""
    clock = time.perf_counter
    t0 = clock()
    sock.sendto(payload, (VM_B, ECHO_PORT))
    while True:
        left = TIMEOUT - (clock() - t0)
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return None
        if data == payload:
            return clock() - t0


def measure_flows(netns: str, first_port: int, count: int, gap: float) -> list[
        tuple[float | None, float | None]]:
    """(first RTT, second RTT) of ``count`` new flows, source ports first_port..."""
    out = []
    for i in range(count):
        sport = first_port + i
        sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        try:
            sock.bind((VM_A, sport))
            first = rtt(sock, b"first %d" % sport)
            second = rtt(sock, b"second %d" % sport) if first is not None else None
        finally:
            sock.close()
        out.append((first, second))
        if gap:
            time.sleep(gap)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def us(v: float) -> str:
    return "-" if math.isnan(v) else f"{v * 1e6:,.0f}"


def ratio(value: float | None, ref: float | None) -> str:
    """value / ref, or "-" when either is missing or ref is not positive (a peer whose
    first packet costs nothing measurable has no meaningful ratio)."""
    if value is None or ref is None or ref <= 0:
        return "-"
    return f"{value / ref:.2f}x"


def minus(value: float | None, ref: float | None) -> str:
    return "-" if value is None or ref is None else f"{(value - ref) * 1e6:+,.0f}"


def label(peer: str) -> str:
    return ovspeer.LABELS.get(peer) or ("linux bridge" if peer == "bridge"
                                        else f"hostsdn --nic {peer}")


def make_peer(peer: str, work: Path, cpus: set[int] | None,
              pmd_cpu: int) -> HostsdnUp | KernelPeer | ovspeer.OvsPeer:
    """The peer named ``peer``: ``bridge``, an OVS kind, or a hostsdn NIC backend."""
    if peer == "bridge":
        return KernelPeer("bridge", work)
    if peer in ovspeer.KINDS:
        return make_ovs_peer(peer, work, pmd_cpu)
    key = {"xdp": "fx", "simnic": "fs", "none": "fn"}[peer]
    return HostsdnUp(work, key, peer, cpus=cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 flows")
    ap.add_argument("--flows", type=int, default=None, help="new flows per backend "
                    "(default 200)")
    ap.add_argument("--nics", default=",".join(DEFAULT_PEERS),
                    help=f"peers, in order (default {','.join(DEFAULT_PEERS)}; also "
                    "ovs-afxdp, ovs-netdev: OVS with NORMAL only)")
    ap.add_argument("--ovs-pmd-cpu", type=int, default=1, metavar="CPU",
                    help="the CPU OVS's PMD thread is pinned to (default 1)")
    ap.add_argument("--gap", type=float, default=0.002,
                    help="pause between flows, seconds (default 0.002)")
    ap.add_argument("--quiet-limit", type=float, default=0.15, metavar="SHARE",
                    help="before each backend wait until the CPUs are less busy than this "
                    "(default 0.15; 1 disables)")
    ap.add_argument("--quiet-wait", type=float, default=30, metavar="S",
                    help="... but at most S seconds (default 30)")
    ap.add_argument("--pin", type=int, default=None, metavar="CPU",
                    help="run hostsdn, the echo server and the client all on this CPU: "
                    "no cross-CPU wake-ups (costly in a VM when the other CPU is idle), "
                    "steadier figures; default: no pinning")
    args = ap.parse_args()
    flows = args.flows or (50 if args.quick else 200)
    nics = drop_missing_ovs([n.strip() for n in args.nics.split(",") if n.strip()])
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, veth, XDP)")
    cpus = {args.pin} if args.pin is not None else None
    if cpus:
        os.sched_setaffinity(0, cpus)          # the client (threads inherit it)

    print(f"First-packet latency, {flows} new UDP flows per backend (+{WARMUP} warm-up), "
          f"VM a -> echo in VM b{f', all on CPU {args.pin}' if cpus else ''}; "
          f"{bu.environment()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    results: dict[str, list[tuple[float | None, float | None]]] = {}
    frames: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-fp-") as tmp, sigterm_as_interrupt():
        work = Path(tmp)
        for nic in nics:
            up = make_peer(nic, work, cpus, args.ovs_pmd_cpu)
            echo: subprocess.Popen[bytes] | None = None
            try:
                up.start()
                echo = start_echo(up.ns_b, work / f"echo-{nic}.log", cpus)
                warm = measure_flows(up.ns_a, SPORT_BASE - 100, WARMUP, args.gap)
                if any(f is None for f, _ in warm[-2:]):
                    print(f"  {nic}: warm-up flows lost: {warm}", file=sys.stderr)
                hostsdn = isinstance(up, HostsdnUp)
                before = int(up.status_settled().get("packets", 0)) if hostsdn else 0
                busy = wait_quiet(args.quiet_limit, args.quiet_wait)
                results[nic] = measure_flows(up.ns_a, SPORT_BASE, flows, args.gap)
                frames[nic] = (int(up.status_settled().get("packets", 0)) - before
                               if hostsdn else -1)
                ok = [r for r in results[nic] if r[0] is not None and r[1] is not None]
                seen = f", {frames[nic]:,} slow-path frames" if hostsdn else ""
                print(f"  {nic:7s} done: {len(ok)}/{flows} flows answered twice{seen} "
                      f"(CPUs {busy:.0%} busy before)", flush=True)
            finally:
                stop_process(echo, timeout=2)
                final = up.stop()
                if final:
                    print(f"  {nic}: {final.strip()}")
                left = [n for n in up.names if ns_exists(n) or link_exists(n)]
                if left:
                    print(f"  WARNING: left over: {left}", file=sys.stderr)

    def diff_median(nic: str) -> float | None:
        d = [f - s for f, s in results.get(nic, []) if f is not None and s is not None]
        return statistics.median(d) if d else None

    # the stricter reference: the OVS + ct peer with the cheaper first packet (on a busy
    # machine the AF_XDP peer's busy-polling PMD starves and its figure balloons)
    ovs_ct = {p: diff_median(p) for p in OVS_CT_PEERS if diff_median(p) is not None}
    best_ovs = min(ovs_ct, key=lambda p: ovs_ct[p] or 0.0) if ovs_ct else None
    ref_ovs = ovs_ct[best_ovs] if best_ovs else None
    ref_bridge = diff_median("bridge")
    rows = []
    for nic in nics:
        res = results.get(nic, [])
        firsts = [f for f, _ in res if f is not None]
        seconds = [s for _, s in res if s is not None]
        diffs = [f - s for f, s in res if f is not None and s is not None]
        lost = sum(1 for f, s in res if f is None or s is None)
        per_flow = frames.get(nic, 0) / len(res) if res and frames.get(nic, -1) >= 0 else None
        med = statistics.median(diffs) if diffs else None
        rows.append([label(nic),
                     us(statistics.median(firsts)) if firsts else "-", us(pct(firsts, 0.9)),
                     us(statistics.median(seconds)) if seconds else "-",
                     us(pct(seconds, 0.9)),
                     us(med) if med is not None else "-", us(pct(diffs, 0.9)),
                     ratio(med, ref_ovs), minus(med, ref_bridge),
                     f"{per_flow:.1f}" if per_flow is not None else "-", str(lost)])
    bu.print_table(f"UDP round trip VM a -> VM b -> VM a, {flows} new flows, microseconds",
                   ["peer", "1st med", "1st p90", "2nd med", "2nd p90", "1st-2nd med",
                    "1st-2nd p90", "vs best OVS+ct", "over bridge", "py frames/flow",
                    "lost"], rows,
                   [("1st: RTT of a new flow's first datagram (request and reply may "
                     "miss); 2nd: the next datagram of the same flow"),
                    "1st-2nd: per-flow difference = the slow-path cost of setting the flow up",
                    (f"vs best OVS+ct: 1st-2nd median / the lower of the OVS + ct peers' "
                     f"({label(best_ovs) if best_ovs else '-'}); over bridge: 1st-2nd median "
                     "minus the bridge's (us)"),
                    ("py frames/flow: frames the Python loop read per flow (both datagrams, "
                     "both directions)")])
    xdp_med = diff_median("xdp")
    if xdp_med is not None and ref_ovs is not None:
        print(f"aim (issue 10): xdp 1st-2nd <= 2x OVS + conntrack's: "
              f"{ratio(xdp_med, ref_ovs)} ({us(xdp_med)} vs {us(ref_ovs)} us)")
    xdp = results.get("xdp", [])
    diffs = [f - s for f, s in xdp if f is not None and s is not None]
    if diffs:
        cost = statistics.median(diffs)
        print(f"goal (issue): xdp first-packet slow path <= {GOAL_US} us median; measured "
              f"{cost * 1e6:,.0f} us = {cost * 1e6 / GOAL_US:.1f}x the goal")
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other work on the machine "
          "skews the figures)")


if __name__ == "__main__":
    run_main(main)
