"""Open vSwitch 3.1 (userspace datapath) as a benchmark peer, started and stopped by the bench.

OVS is only a *peer* a user would pick instead of hostsdn: never a dependency.  Install it
by hand for the benchmarks (Debian 12)::

    apt-get install -y --no-install-recommends openvswitch-switch

The package's own service is never used (nor touched): each ``OvsPeer`` runs its own
``ovsdb-server`` and ``ovs-vswitchd`` from a temporary database and run directory
(``ovsdb-tool create``, ``ovsdb-server --remote=punix:DIR/db.sock``, ``ovs-vswitchd
unix:DIR/db.sock --detach``, pidfiles, logs and control sockets in DIR, ``OVS_RUNDIR``
etc. pointing there), inside a network namespace of its own (``hsdnb<key>s``), so the
taps the userspace datapath makes (``ovs-netdev``, the bridge's local port) never
appear on the host.

Topology (built like ``KernelPeer``'s bridge, see ``bench_tcp_throughput.py``): two VM
namespaces ``hsdnb<key>a`` / ``hsdnb<key>b`` (10.99.0.4 / 10.99.0.6, static neighbours,
``tx off gro on`` on ``eth0``), their veth peers (``tx off gro off``, IPv6 off, MTU 1500)
in the switch namespace as the two ports of bridge ``hsdnb<key>0`` (``datapath_type=
netdev``), ports of type

* ``afxdp``: AF_XDP sockets, ``options:xdp-mode=native`` (copy mode: veth has no
  zero-copy), polled by one PMD thread pinned to ``pmd_cpu`` (``pmd-cpu-mask``);
* ``netdev``: plain ``system`` ports (AF_PACKET), served by the main thread.

Flows: ``normal`` = one ``actions=NORMAL`` flow; ``ct`` = a stateful firewall like the
hostsdn policy's stateful allow-all layer: IP goes through ``ct(table=1)``; in table 1
``+new`` is ``ct(commit),NORMAL``, ``+est`` / ``+rel`` are ``NORMAL``, the rest drops.

A PMD busy-polls a CPU all the time, which would load the machine while the other peers
are measured: ``pause()`` stops ``ovs-vswitchd`` (the database stays) and ``resume()``
starts it again and waits until both ports are up and forward.  ``stop()`` ends both
daemons and deletes the namespaces by name; the temp dir goes with the bench's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
INSTALL_HINT = ("Open vSwitch is not installed; for the OVS peers run "
                "'apt-get install -y --no-install-recommends openvswitch-switch' "
                "(or leave them out with --no-ovs)")
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl",
            "ovs-appctl")

KINDS = {  # peer name -> (port type, flows)
    "ovs-afxdp": ("afxdp", "normal"),
    "ovs-afxdp-ct": ("afxdp", "ct"),
    "ovs-netdev": ("netdev", "normal"),
    "ovs-netdev-ct": ("netdev", "ct"),
}
LABELS = {
    "ovs-afxdp": "OVS AF_XDP NORMAL",
    "ovs-afxdp-ct": "OVS AF_XDP + ct",
    "ovs-netdev": "OVS netdev NORMAL",
    "ovs-netdev-ct": "OVS netdev + ct",
}
KEYS = {"ovs-afxdp": "oxn", "ovs-afxdp-ct": "oxc", "ovs-netdev": "onn",
        "ovs-netdev-ct": "onc"}

FLOWS = {
    "normal": ["priority=0,actions=NORMAL"],
    "ct": [
        "table=0,priority=100,ip,ct_state=-trk,actions=ct(table=1)",
        "table=0,priority=10,arp,actions=NORMAL",
        "table=0,priority=0,actions=drop",
        "table=1,priority=100,ip,ct_state=+trk+new,actions=ct(commit),NORMAL",
        "table=1,priority=100,ip,ct_state=+trk+est,actions=NORMAL",
        "table=1,priority=100,ip,ct_state=+trk+rel,actions=NORMAL",
        "table=1,priority=0,actions=drop",
    ],
}


def ovs_missing() -> str | None:
    """None when every OVS binary the peer needs is installed, else how to install."""
    if all(shutil.which(b) for b in BINARIES) and os.path.exists(SCHEMA):
        return None
    return INSTALL_HINT


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 30,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def build_two_vms(ns_sw: str, vms: tuple[tuple[str, str, str, str, str, str], ...],
                  plen: int) -> None:
    """A switch namespace ``ns_sw`` and, per ``(vm namespace, port name, ip, mac, other ip,
    other mac)``, a VM namespace joined to it by a veth pair: ``eth0`` in the VM (``tx
    off gro on``, static neighbour), the port in ``ns_sw`` (``tx off gro off``, MTU
    1500); IPv6 off everywhere.  Built like ``KernelPeer``'s bridge topology."""
    _run(["ip", "netns", "add", ns_sw])
    _run(["ip", "netns", "exec", ns_sw, "ip", "link", "set", "lo", "up"])
    for scope in ("all", "default"):
        _run(["ip", "netns", "exec", ns_sw, "sysctl", "-qw",
              f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    for ns, host, ip, mac, other_ip, other_mac in vms:
        _run(["ip", "netns", "add", ns])
        for scope in ("all", "default"):
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                  f"net.ipv6.conf.{scope}.disable_ipv6=1"])
        _run(["ip", "link", "add", host, "netns", ns_sw, "type", "veth", "peer",
              "name", "eth0", "netns", ns])
        _run(["ip", "netns", "exec", ns_sw, "ip", "link", "set", host, "mtu", "1500", "up"])
        _run(["ip", "netns", "exec", ns_sw, "ethtool", "-K", host, "tx", "off", "gro", "off"])
        x = ["ip", "netns", "exec", ns]
        _run([*x, "ip", "link", "set", "lo", "up"])
        _run([*x, "ip", "link", "set", "eth0", "address", mac, "mtu", "1500", "up"])
        _run([*x, "ip", "addr", "add", f"{ip}/{plen}", "dev", "eth0"])
        _run([*x, "ip", "neigh", "replace", other_ip, "lladdr", other_mac, "dev", "eth0",
              "nud", "permanent"])
        _run([*x, "ethtool", "-K", "eth0", "tx", "off", "gro", "on"])


class OvsPeer:
    """One OVS peer (``kind`` in ``KINDS``) with its own daemons, namespaces and ports.

    The same interface as the other peers of the benches: ``ns_a`` / ``ns_b`` (the VM
    namespaces), ``names``, ``start()``, ``stop()``, plus ``pause()`` / ``resume()``.
    """

    def __init__(self, kind: str, workdir: Path, *, prefix: str, vm_a: str, vm_b: str,
                 mac_a: str, mac_b: str, plen: int, pmd_cpu: int = 1,
                 key: str | None = None) -> None:
        self.kind = kind
        self.port_type, self.flows = KINDS[kind]
        key = key or KEYS[kind]
        self.ns_a, self.ns_b = f"{prefix}{key}a", f"{prefix}{key}b"
        self.ns_sw = f"{prefix}{key}s"
        self.bridge = f"{prefix}{key}0"
        self.hosts = (f"{prefix}{key}pa", f"{prefix}{key}pb")   # ports, in ns_sw
        self.vms = ((self.ns_a, self.hosts[0], vm_a, mac_a, vm_b, mac_b),
                    (self.ns_b, self.hosts[1], vm_b, mac_b, vm_a, mac_a))
        self.plen, self.pmd_cpu = plen, pmd_cpu
        self.dir = workdir / f"ovs-{key}"
        self.db_sock = self.dir / "db.sock"
        self.env = dict(os.environ, OVS_RUNDIR=str(self.dir), OVS_DBDIR=str(self.dir),
                        OVS_LOGDIR=str(self.dir), OVS_SYSCONFDIR=str(self.dir))
        self.running = False

    @property
    def names(self) -> list[str]:
        return [self.ns_a, self.ns_b, self.ns_sw]

    # ------------------------------------------------------------------ commands
    def vsctl(self, *args: str, timeout: float = 30) -> str:
        return _run(["ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=20", *args],
                    self.env, timeout).stdout

    def ofctl(self, *args: str) -> str:
        return _run(["ovs-ofctl", *args], self.env).stdout

    def appctl(self, *args: str, check: bool = True) -> str:
        ctl = self.dir / "ovs-vswitchd.ctl"
        return _run(["ovs-appctl", "-t", str(ctl), *args], self.env, check=check).stdout

    def _in_sw(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_sw, *cmd]

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)      # a database of an earlier run
        self.dir.mkdir(parents=True)
        self._make_namespaces()
        _run(["ovsdb-tool", "create", str(self.dir / "conf.db"), SCHEMA], self.env)
        _run(["ovsdb-server", str(self.dir / "conf.db"), f"--remote=punix:{self.db_sock}",
              f"--pidfile={self.dir / 'ovsdb-server.pid'}",
              f"--unixctl={self.dir / 'ovsdb-server.ctl'}",
              f"--log-file={self.dir / 'ovsdb-server.log'}", "--detach", "--no-chdir"],
             self.env)
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   f"other_config:pmd-cpu-mask={1 << self.pmd_cpu:#x}")
        self.vsctl("--no-wait", "add-br", self.bridge, "--", "set", "bridge", self.bridge,
                   "datapath_type=netdev", "fail_mode=secure")
        for host in self.hosts:
            extra = (["type=afxdp", "options:xdp-mode=native"] if self.port_type == "afxdp"
                     else [])
            self.vsctl("--no-wait", "add-port", self.bridge, host,
                       *(["--", "set", "interface", host, *extra] if extra else []))
        self.resume()

    def _make_namespaces(self) -> None:
        build_two_vms(self.ns_sw, self.vms, self.plen)

    def resume(self, timeout: float = 30) -> None:
        """Start ``ovs-vswitchd`` (its PMD then polls), install the OpenFlow flows (they
        live in the daemon, not in the database) and wait until a ping goes through."""
        if self.running:
            return
        _run(self._in_sw("ovs-vswitchd", f"unix:{self.db_sock}",
                         f"--pidfile={self.dir / 'ovs-vswitchd.pid'}",
                         f"--unixctl={self.dir / 'ovs-vswitchd.ctl'}",
                         f"--log-file={self.dir / 'ovs-vswitchd.log'}",
                         "--detach", "--no-chdir", "-vconsole:off"), self.env, timeout=60)
        self.running = True
        end = time.monotonic() + timeout
        while True:
            states = [self.vsctl("--if-exists", "get", "interface", h, "ofport",
                                 "link_state", "error").split() for h in self.hosts]
            if all(s and s[0] not in ("-1", "[]") and "up" in s for s in states):
                break
            if time.monotonic() > end:
                raise RuntimeError(f"OVS ports of {self.kind} not up: {states}; log: "
                                   f"{self._log_tail()}")
            time.sleep(0.1)
        flows = self.dir / "flows.txt"
        flows.write_text("\n".join(FLOWS[self.flows]) + "\n")
        self.ofctl("del-flows", self.bridge)
        self.ofctl("add-flows", self.bridge, str(flows))
        vm_b_ip = self.vms[1][2]
        while _run(["ip", "netns", "exec", self.ns_a, "ping", "-c1", "-W1", "-q", vm_b_ip],
                   check=False).returncode != 0:
            if time.monotonic() > end:
                raise RuntimeError(f"no ping through OVS {self.kind}: {self._log_tail()}")

    def pause(self) -> None:
        """Stop ``ovs-vswitchd`` (no PMD polling while other peers are measured)."""
        if not self.running:
            return
        self._kill_pidfile("ovs-vswitchd")
        self.running = False

    def stop(self) -> str:
        self.destroy()
        return ""

    def destroy(self) -> None:
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            self._kill_pidfile(daemon)
        self.running = False
        for ns in (self.ns_a, self.ns_b, self.ns_sw):
            if os.path.exists(f"/run/netns/{ns}"):
                _run(["ip", "netns", "del", ns], check=False)

    def _kill_pidfile(self, daemon: str, timeout: float = 10) -> None:
        """End the daemon of OUR pidfile (never any other OVS): SIGTERM, then SIGKILL."""
        pidfile = self.dir / f"{daemon}.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if daemon.encode() not in cmdline or str(self.dir).encode() not in cmdline:
            return                                   # a reused pid: not ours
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.dir / "ovs-vswitchd.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def datapath_flows(self) -> str:
        return self.appctl("dpctl/dump-flows", check=False)
