"""TCP throughput between two VM namespaces: hostsdn ``up`` vs a Linux bridge (run by hand).

Peers, all up at the same time and measured round-robin in the same run (so drift of the
machine hits every peer alike):

* ``bridge``: a Linux bridge between two namespaces built like hostsdn's VM namespaces -
  veth pairs, MTU 1500, ``ethtool -K eth0 tx off gro on`` on the namespace ends,
  ``tx off gro off`` and IPv6 off on the host-side ends, static neighbours;
* ``xdp``: ``hostsdn up --nic xdp`` - misses go to Python, established flows are
  forwarded by the BPF program in the kernel;
* ``none``: ``hostsdn up --nic none`` - no NIC model, every frame through the Python
  slow path (AF_PACKET);
* ``simnic`` (``--simnic``): the simulated NIC in the same process, also every frame
  through Python;
* ``xdp-min`` (``--xdp-min``): the two namespaces built as for the bridge, joined by a
  minimal native XDP program on each host-side end that ``bpf_redirect``s every frame to
  the other end (no parsing, no lookup): what XDP forwarding on veth can reach at best
  here, to tell the cost of XDP-on-veth from the cost of hostsdn's program;
* ``ovs-afxdp``, ``ovs-afxdp-ct``, ``ovs-netdev``, ``ovs-netdev-ct`` (unless ``--no-ovs``):
  Open vSwitch 3.1's userspace datapath with AF_XDP (native, copy mode) or AF_PACKET
  ports, ``NORMAL`` or a conntrack rule set, its PMD pinned (``--ovs-pmd-cpu``), daemons
  of its own from a temp database (``ovspeer.py``; ``apt-get install
  openvswitch-switch``).  Its ``ovs-vswitchd`` runs only while it is measured (a PMD
  busy-polls a CPU).

The hostsdn policy is permissive and stateful: two VMs (10.99.0.4, 10.99.0.6 on one /24)
behind one stateful allow-all layer.  Each round is
``ip netns exec <vm a> iperf3 -c 10.99.0.6 -t 5 -J`` against an ``iperf3 -s`` in VM b;
reported: the median receiver Gbit/s over the rounds, min-max, TCP retransmits, the ratio
to the bridge, and what the hostsdn slow path saw (frames, tx errors).

    sudo PYTHONPATH=src python bench/bench_tcp_throughput.py [--quick] [--rounds 3]
        [--time 5] [--simnic] [--xdp-min] [--only xdp,none]

Everything created is named ``hsdnb...``: the bridge peer's namespaces and links are
``hsdnbtbra``/``hsdnbtbrb`` and bridge ``hsdnbtbr0`` (xdp-min: ``hsdnbtmxa``/``hsdnbtmxb``);
hostsdn's ports are ``hsdnbtxa``,
``hsdnbtxb`` (xdp), ``hsdnbtna``/``hsdnbtnb`` (none), ``hsdnbtsa``/``hsdnbtsb`` (simnic),
which ``up`` turns into namespaces and host links ``hsdn-hsdnbt..`` (it prefixes
``hsdn-``), with uplink namespaces ``hsdn-hsdnbt?u``.  All is deleted by name in a
``finally`` (also on Ctrl-C / SIGTERM), and leftovers of a crashed run are removed by
name before starting.  Traffic only flows between these namespaces.

The module also holds the helpers ``bench_first_packet.py`` uses (``HostsdnUp``...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import benchutil as bu
import ovspeer

from hostsdn.nic.xdp import libbpf

PREFIX = "hsdnb"
VM_A, VM_B, PLEN = "10.99.0.4", "10.99.0.6", 24
MAC_A, MAC_B = "02:00:00:00:b0:01", "02:00:00:00:b0:02"
IPERF_PORT = 5201
PEERS = {"bridge": "linux bridge", "xdp-min": "minimal XDP redirect",
         **ovspeer.LABELS,
         "xdp": "hostsdn --nic xdp", "none": "hostsdn --nic none",
         "simnic": "hostsdn --nic simnic"}
"""Peer name -> table label, in measurement order."""

POLICY = """\
version: 1
uplink: {{mac: "02:00:00:00:ff:01", ip: 192.0.2.1, gateway_mac: "02:00:00:00:ee:01"}}
ports:
  - {{name: {a}, mac: "{mac_a}", ips: ["{vm_a}/{plen}"], layers: [allow-all]}}
  - {{name: {b}, mac: "{mac_b}", ips: ["{vm_b}/{plen}"], layers: [allow-all]}}
layers:
  - {{name: allow-all, stateful: true, default: allow}}
"""


# ------------------------------------------------------------------------- processes

def run(*cmd: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the ``finally`` clauses clean up as on
    Ctrl-C.  (Children run in their own sessions: a Ctrl-C reaches only this process,
    which then stops them in order.)"""
    def handler(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, handler)
    # also when started with SIGINT ignored (a background job of a non-interactive shell)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def run_main(main: Callable[[], None]) -> None:
    """Run ``main``; an interrupt (Ctrl-C, SIGTERM) ends with status 130 after the
    clean-up of the ``finally`` clauses, without a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (clean-up ran; a WARNING above names anything left over)",
              file=sys.stderr)
        sys.exit(130)


def pin_to(cpus: set[int] | None) -> list[str]:
    """Command prefix that runs a child on ``cpus`` only (``taskset``; None: nothing)."""
    if not cpus:
        return []
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def cpu_busy(interval: float = 0.5) -> float:
    """Share of all CPUs busy over ``interval`` seconds (/proc/stat), 0..1."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]              # total, idle + iowait
    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) until the CPUs are less than ``limit`` busy - other
    work on a 2-CPU machine skews these figures badly; returns the last busy share."""
    end = time.monotonic() + timeout
    busy = cpu_busy()
    while busy >= limit and time.monotonic() < end:
        busy = cpu_busy()
    return busy


def hostsdn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hostsdn.cli.main", *args]


def child_env(run_dir: Path) -> dict[str, str]:
    path = [str(bu.SRC), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, HOSTSDN_RUN_DIR=str(run_dir),
                PYTHONPATH=os.pathsep.join(p for p in path if p))


# ---------------------------------------------------------------------- hostsdn up

class HostsdnUp:
    """``hostsdn up POLICY --nic NIC`` in the foreground as a subprocess (own session),
    two VM ports ``hsdnb<key>a`` / ``hsdnb<key>b``, uplink namespace ``hsdn-hsdnb<key>u``.
    ``stop()`` ends it with SIGTERM and then runs ``hostsdn down`` (removal by name)."""

    def __init__(self, workdir: Path, key: str, nic: str, extra: Sequence[str] = (),
                 cpus: set[int] | None = None) -> None:
        self.key, self.nic, self.extra, self.cpus = key, nic, tuple(extra), cpus
        self.ports = (f"{PREFIX}{key}a", f"{PREFIX}{key}b")
        self.ns_a, self.ns_b = (f"hsdn-{p}" for p in self.ports)
        self.uplink_ns = f"hsdn-{PREFIX}{key}u"
        self.policy = workdir / f"{PREFIX}{key}.yaml"
        self.log = workdir / f"{PREFIX}{key}.log"
        self.env = child_env(workdir / "run")
        self.proc: subprocess.Popen[bytes] | None = None
        self.policy.write_text(POLICY.format(a=self.ports[0], b=self.ports[1], mac_a=MAC_A,
                                             mac_b=MAC_B, vm_a=VM_A, vm_b=VM_B, plen=PLEN))

    @property
    def names(self) -> list[str]:
        return [self.ns_a, self.ns_b, self.uplink_ns]

    def down(self) -> str:
        proc = run(*hostsdn_cmd("down", str(self.policy), "--uplink-ns", self.uplink_ns),
                   timeout=60)
        return proc.stdout + proc.stderr

    def start(self, timeout: float = 60) -> None:
        self.down()                              # leftovers of a crashed run, by name
        cmd = pin_to(self.cpus) + hostsdn_cmd("up", str(self.policy), "--nic", self.nic, "--uplink-ns",
                          self.uplink_ns, "--status-interval", "1", *self.extra)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "ready (pid" in self.log.read_text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"hostsdn up --nic {self.nic} exited with "
                                   f"{self.proc.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"hostsdn up --nic {self.nic} not ready after {timeout} s:\n"
                           f"{self.log.read_text()}")

    def status(self) -> dict[str, str]:
        """Fields of the last status line (``packets=...`` etc.)."""
        lines = [ln for ln in self.log.read_text().splitlines() if "packets=" in ln]
        if not lines:
            return {}
        return dict(f.split("=", 1) for f in lines[-1].split() if "=" in f)

    def status_settled(self) -> dict[str, str]:
        """The status after the next status line (interval 1 s): counts up to now."""
        time.sleep(1.2)
        return self.status()

    def stop(self) -> str:
        """Stop (SIGTERM, the process removes its topology) and remove leftovers by name;
        returns the tail of the log (the final status line)."""
        code = stop_process(self.proc)
        self.down()
        tail = ""
        if self.log.exists():
            finals = [ln for ln in self.log.read_text().splitlines() if "final:" in ln]
            tail = finals[-1] if finals else ""
        if code not in (None, 0):
            tail += f" (exit {code})"
        return tail


# -------------------------------------------------- kernel peers (bridge, xdp-min)

XDP_MIN_C = """\
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int xdp_min(struct xdp_md *ctx)
{
    return bpf_redirect(PEER_IFINDEX, 0);
}
char _license[] SEC("license") = "GPL";
"""


class KernelPeer:
    """Two namespaces built like hostsdn's VM namespaces (veth pairs, MTU 1500,
    ``tx off gro on`` on eth0, ``tx off gro off`` and IPv6 off on the host-side ends,
    static neighbours), joined in the kernel by

    * ``bridge``: a Linux bridge (``hsdnbtbr0``), or
    * ``xdp-min``: a minimal native XDP program on each host-side end that redirects
      every frame to the other host-side end (``bpf_redirect``; no lookup at all): the
      ceiling of any XDP forwarder on veth here.
    """

    def __init__(self, kind: str, workdir: Path | None = None) -> None:
        key = {"bridge": "tbr", "xdp-min": "tmx"}[kind]
        self.kind, self.workdir = kind, workdir
        self.ns_a, self.ns_b = f"{PREFIX}{key}a", f"{PREFIX}{key}b"
        self.bridge = f"{PREFIX}{key}0" if kind == "bridge" else None
        self.hosts = (self.ns_a, self.ns_b)          # host-side veth ends, same names

    @property
    def names(self) -> list[str]:
        return [self.ns_a, self.ns_b] + ([self.bridge] if self.bridge else [])

    def create(self) -> None:
        self.destroy()
        if self.bridge:
            run("ip", "link", "add", self.bridge, "type", "bridge", check=True)
            _sysctl_ipv6_off(self.bridge)
            run("ip", "link", "set", self.bridge, "up", check=True)
        for ns, host, ip, mac, other_ip, other_mac in (
                (self.ns_a, self.hosts[0], VM_A, MAC_A, VM_B, MAC_B),
                (self.ns_b, self.hosts[1], VM_B, MAC_B, VM_A, MAC_A)):
            run("ip", "netns", "add", ns, check=True)
            for scope in ("all", "default"):          # before eth0 arrives, like hostsdn
                run("ip", "netns", "exec", ns, "sysctl", "-qw",
                    f"net.ipv6.conf.{scope}.disable_ipv6=1")
            run("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0",
                "netns", ns, check=True)
            _sysctl_ipv6_off(host)
            master = ("master", self.bridge) if self.bridge else ()
            run("ip", "link", "set", host, "mtu", "1500", *master, "up", check=True)
            run("ethtool", "-K", host, "tx", "off", "gro", "off", check=True)
            x = ("ip", "netns", "exec", ns)
            run(*x, "ip", "link", "set", "lo", "up", check=True)
            run(*x, "ip", "link", "set", "eth0", "address", mac, "mtu", "1500", "up",
                check=True)
            run(*x, "ip", "addr", "add", f"{ip}/{PLEN}", "dev", "eth0", check=True)
            run(*x, "ip", "neigh", "replace", other_ip, "lladdr", other_mac, "dev", "eth0",
                "nud", "permanent", check=True)
            run(*x, "ethtool", "-K", "eth0", "tx", "off", "gro", "on", check=True)
        if self.kind == "xdp-min":
            self._attach_xdp_min()

    def _attach_xdp_min(self) -> None:
        assert self.workdir is not None
        clang = os.environ.get("HOSTSDN_CLANG", "clang")
        for host, peer in ((self.hosts[0], self.hosts[1]), (self.hosts[1], self.hosts[0])):
            src, obj = self.workdir / "xdp_min.c", self.workdir / f"xdp_min_{host}.o"
            src.write_text(XDP_MIN_C)
            peer_idx = Path(f"/sys/class/net/{peer}/ifindex").read_text().strip()
            run(clang, "-target", "bpf", "-O2", "-g", "-Wall",
                f"-I/usr/include/{os.uname().machine}-linux-gnu",
                f"-DPEER_IFINDEX={peer_idx}", "-c", str(src), "-o", str(obj), check=True)
            # attached with our libbpf layer, not `ip link set ... xdpdrv obj`: iproute2
            # would mount a bpffs on /sys/fs/bpf, which is not ours to create
            with libbpf.BpfObject(obj) as bpf_obj:
                bpf_obj.load()
                libbpf.xdp_attach(socket.if_nametoindex(host),
                                  bpf_obj.find_program("xdp_min").fd,
                                  libbpf.XDP_FLAGS_DRV_MODE)

    def destroy(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            if ns_exists(ns):
                run("ip", "netns", "del", ns)       # takes the veth pair with it
        for link in (*self.hosts, *([self.bridge] if self.bridge else [])):
            if link_exists(link):
                run("ip", "link", "del", link)

    def start(self) -> None:
        self.create()

    def stop(self) -> str:
        self.destroy()
        return ""


def _sysctl_ipv6_off(ifname: str) -> None:
    path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if path.exists():
        path.write_text("1")


# --------------------------------------------------------------------------- iperf3

class Iperf3Server:
    def __init__(self, netns: str, ip: str, log: Path) -> None:
        self.netns, self.ip, self.log = netns, ip, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "iperf3", "-s", "-B", self.ip, "-p",
                 str(IPERF_PORT)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:          # listening?
            ss = run("ip", "netns", "exec", self.netns, "ss", "-Htln",
                     f"sport = :{IPERF_PORT}").stdout
            if ss.strip():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"iperf3 -s in {self.netns} did not start: {self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


def iperf3_round(client_ns: str, seconds: int) -> tuple[float, int, str]:
    """One ``iperf3 -c VM_B -t S -J`` from ``client_ns``: (receiver Gbit/s, retransmits,
    error text or "")."""
    try:
        proc = run("ip", "netns", "exec", client_ns, "iperf3", "-c", VM_B, "-p",
                   str(IPERF_PORT), "-t", str(seconds), "-J", "--connect-timeout", "3000",
                   timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return 0.0, 0, "iperf3 timed out"
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return 0.0, 0, (proc.stderr.strip() or proc.stdout.strip() or "no output")[:200]
    if "error" in data:
        return 0.0, 0, str(data["error"])[:200]
    end = data.get("end", {})
    gbps = end.get("sum_received", {}).get("bits_per_second", 0.0) / 1e9
    retr = int(end.get("sum_sent", {}).get("retransmits", 0) or 0)
    return gbps, retr, ""


# ---------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per peer (default 3)")
    ap.add_argument("--time", type=int, default=None, help="iperf3 -t (default 5)")
    ap.add_argument("--simnic", action="store_true", help="also measure --nic simnic")
    ap.add_argument("--xdp-min", action="store_true", help="also measure a minimal XDP "
                    "redirect between the two host-side ends (needs clang)")
    ap.add_argument("--quiet-limit", type=float, default=0.15, metavar="SHARE",
                    help="before each round wait until the CPUs are less busy than this "
                    "(default 0.15; 1 disables)")
    ap.add_argument("--quiet-wait", type=float, default=30, metavar="S",
                    help="... but at most S seconds (default 30)")
    ap.add_argument("--no-ovs", action="store_true", help="leave out the OVS peers")
    ap.add_argument("--ovs-pmd-cpu", type=int, default=1, metavar="CPU",
                    help="the CPU OVS's PMD thread is pinned to (default 1)")
    ap.add_argument("--only", default="", help="comma-separated subset of "
                    f"{','.join(PEERS)} (the bridge is always kept as the reference)")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.time or (2 if args.quick else 5)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, veth, XDP)")
    for tool in ("ip", "ethtool", "iperf3", "ss"):
        if run("sh", "-c", f"command -v {tool}").returncode != 0:
            sys.exit(f"{tool} is not installed (apt-get install iproute2 ethtool iperf3)")

    wanted = [w for w in PEERS if w in ("bridge", "xdp", "none")
              or (w in ovspeer.KINDS and not args.no_ovs)
              or (w == "simnic" and args.simnic) or (w == "xdp-min" and args.xdp_min)]
    if args.only:
        only = {w.strip() for w in args.only.split(",")} | {"bridge"}
        wanted = [w for w in PEERS if w in only]
    wanted = drop_missing_ovs(wanted)

    print(f"TCP throughput, iperf3 -t {seconds}, {rounds} round(s) per peer, "
          f"peers round-robin; {bu.environment()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-tp-") as tmp, sigterm_as_interrupt():
        work = Path(tmp)
        peers: dict[str, KernelPeer | HostsdnUp | ovspeer.OvsPeer] = {}
        servers: list[Iperf3Server] = []
        results: dict[str, list[tuple[float, int, str]]] = {name: [] for name in wanted}
        slow_path: dict[str, tuple[int, int]] = {}
        finals: dict[str, str] = {}
        try:
            for name in wanted:
                peer: KernelPeer | HostsdnUp | ovspeer.OvsPeer
                if name in ("bridge", "xdp-min"):
                    peer = peers[name] = KernelPeer(name, work)
                elif name in ovspeer.KINDS:
                    peer = peers[name] = make_ovs_peer(name, work, args.ovs_pmd_cpu)
                else:
                    key = {"xdp": "tx", "none": "tn", "simnic": "ts"}[name]
                    peer = peers[name] = HostsdnUp(work, key, name)
                peer.start()
                srv = Iperf3Server(peer.ns_b, VM_B, work / f"iperf3-{name}.log")
                servers.append(srv)
                srv.start()
                if isinstance(peer, ovspeer.OvsPeer):
                    peer.pause()             # its PMD polls only while it is measured
                print(f"  up: {name:8s} {', '.join(peer.names)}", flush=True)
            for r in range(rounds):
                for name in wanted:
                    peer = peers[name]
                    busy = wait_quiet(args.quiet_limit, args.quiet_wait)
                    if isinstance(peer, ovspeer.OvsPeer):
                        peer.resume()
                    before = peer.status() if isinstance(peer, HostsdnUp) else {}
                    res = iperf3_round(peer.ns_a, seconds)
                    if isinstance(peer, ovspeer.OvsPeer):
                        peer.pause()
                    results[name].append(res)
                    extra = ""
                    if isinstance(peer, HostsdnUp):
                        after = peer.status_settled()
                        frames = int(after.get("packets", 0)) - int(before.get("packets", 0))
                        txe = (int(after.get("tx_errors", 0))
                               - int(before.get("tx_errors", 0)))
                        old = slow_path.get(name, (0, 0))
                        slow_path[name] = (old[0] + frames, old[1] + txe)
                        extra = f", slow path {frames:,} frames, tx_errors {txe}"
                    err = f"  ERROR {res[2]}" if res[2] else ""
                    print(f"  round {r + 1} {name:8s} {res[0]:6.2f} Gbit/s, "
                          f"retr {res[1]}{extra}{err}  (CPUs {busy:.0%} busy before)",
                          flush=True)
        finally:
            for srv in servers:
                srv.stop()
            for name, peer in peers.items():
                try:
                    finals[name] = peer.stop()
                except Exception as exc:  # noqa: BLE001  (keep removing the others)
                    print(f"  cleanup of {name} failed: {exc}", file=sys.stderr)
            left = [n for p in peers.values() for n in p.names
                    if ns_exists(n) or link_exists(n)]
            if left:
                print(f"  WARNING: left over: {left}", file=sys.stderr)

    ref = _median(results.get("bridge", []))
    with_min = "xdp-min" in results
    ref_min = _median(results.get("xdp-min", []))
    with_ovs = "ovs-afxdp-ct" in results
    ref_ovs = _median(results.get("ovs-afxdp-ct", []))
    rows = []
    for name in wanted:
        vals = [g for g, _, e in results[name] if not e]
        med = _median(results[name])
        errors = sum(1 for _, _, e in results[name] if e)
        frames, txe = slow_path.get(name, (-1, -1))
        rows.append([
            PEERS[name],
            f"{med:.2f}" if vals else "-",
            f"{min(vals):.2f}-{max(vals):.2f}" if vals else "-",
            f"{med / ref:.2f}x" if vals and ref else "-",
            *([f"{med / ref_min:.2f}x" if vals and ref_min else "-"] if with_min else []),
            *([f"{med / ref_ovs:.2f}x" if vals and ref_ovs else "-"] if with_ovs else []),
            str(sum(r for _, r, e in results[name] if not e)),
            f"{frames:,}" if frames >= 0 else "-",
            str(txe) if txe >= 0 else "-",
            str(errors)])
    bu.print_table(f"TCP throughput VM a -> VM b (iperf3 -t {seconds}, median of {rounds})",
                   ["peer", "Gbit/s", "min-max", "vs bridge",
                    *(["vs xdp-min"] if with_min else []),
                    *(["vs OVS AF_XDP+ct"] if with_ovs else []), "retr", "slow-path frames",
                    "tx_err", "failed"], rows,
                   [("aim (issue 10): xdp >= 0.95x the bridge and >= 0.9x the minimal XDP "
                     "redirect"),
                    ("slow-path frames: frames the hostsdn Python loop read during the "
                     "rounds (status line 'packets'; approximate)")])
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other work on the machine "
          "skews the figures)")
    for name, line in finals.items():
        if line:
            print(f"  {name}: {line.strip()}")


def drop_missing_ovs(wanted: list[str]) -> list[str]:
    """``wanted`` without the OVS peers when OVS is not installed (saying how to)."""
    missing = ovspeer.ovs_missing()
    if missing and any(w in ovspeer.KINDS for w in wanted):
        print(f"NOTE: {missing}; measuring without the OVS peers", file=sys.stderr)
        return [w for w in wanted if w not in ovspeer.KINDS]
    return wanted


def make_ovs_peer(name: str, work: Path, pmd_cpu: int) -> ovspeer.OvsPeer:
    """An OVS peer with this module's two-VM topology (addresses, MACs, prefix)."""
    return ovspeer.OvsPeer(name, work, prefix=PREFIX, vm_a=VM_A, vm_b=VM_B, mac_a=MAC_A,
                           mac_b=MAC_B, plen=PLEN, pmd_cpu=pmd_cpu)


def _median(res: Sequence[tuple[float, int, str]]) -> float:
    vals = [g for g, _, e in res if not e]
    return statistics.median(vals) if vals else 0.0


if __name__ == "__main__":
    run_main(main)
