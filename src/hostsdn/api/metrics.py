"""Prometheus metrics of a running switch (``GET /metrics``), with prometheus_client.

Two steps, so the packet loop never formats text: ``take_snapshot`` runs in the loop's
thread (through the control channel) and copies the switch's own counters - the same
ones the summary, the flows and the status line show; nothing is counted twice - into a
``Snapshot`` of plain numbers; ``render`` turns it into the text format in the API's
thread, through a custom ``Collector`` (``SnapshotCollector``).

Cardinality is bounded: labels are ports (from the policy), directions, paths, and
reasons / outcomes (enums); never a flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hostsdn.flows.table import Direction, DropReason, OffloadReason
from hostsdn.nic.datapath import Datapath
from hostsdn.runtime.reload import Reloader
from hostsdn.runtime.slowpath import LatencyHistogram, SlowPath, nic_hits
from hostsdn.runtime.views import connection_count

__all__ = ["METRICS", "Snapshot", "SnapshotCollector", "render", "take_snapshot"]

RELOAD_OUTCOMES = ("applied", "invalid", "topology", "refused", "error")

METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name (without _total): (type, help, labels)
    "hostsdn_port_packets": ("counter", ("Packets of a port's flows, by direction (out: sent "
                             "by the VM) and path (host switch or NIC)"),
                             ("port", "direction", "path")),
    "hostsdn_port_bytes": ("counter", "Bytes of a port's flows, by direction and path",
                           ("port", "direction", "path")),
    "hostsdn_frames": ("counter", "Frames the switch process handled, by result",
                       ("result",)),
    "hostsdn_dropped_frames": ("counter", "Frames dropped, by reason", ("reason",)),
    "hostsdn_malformed_frames": ("counter", "Malformed frames, by what was wrong",
                                 ("reason",)),
    "hostsdn_nic_hits": ("counter", "Frames the NIC handled on its own", ()),
    "hostsdn_flows": ("gauge", "Flows in the host flow tables", ("port", "direction")),
    "hostsdn_flows_created": ("counter", "Flows created by the slow path", ()),
    "hostsdn_connections": ("gauge", "Tracked connections (and cached drop verdicts)", ()),
    "hostsdn_connections_created": ("counter", "Connections created", ()),
    "hostsdn_connections_expired": ("counter", "Connections expired (idle or closed)", ()),
    "hostsdn_nic_entries": ("gauge", "Flows offloaded to the NIC now", ("direction",)),
    "hostsdn_nic_capacity": ("gauge", "NIC flow cache capacity", ("direction",)),
    "hostsdn_flows_offloaded": ("counter", "Flows the NIC accepted", ()),
    "hostsdn_offload_refusals": ("counter", "Flows kept on the host, by reason",
                                 ("reason",)),
    "hostsdn_nic_evictions": ("counter", "NIC entries evicted for a newcomer (full cache)",
                              ()),
    "hostsdn_nic_idle_removals": ("counter", "NIC entries removed for idling (--nic-idle)",
                                  ()),
    "hostsdn_slow_path_setup_seconds": ("histogram", ("Time the slow path spent on a frame "
                                        "that created flows"), ()),
    "hostsdn_slow_path_errors": ("counter", "Exceptions that escaped the datapath (bugs)", ()),
    "hostsdn_policy_generation": ("gauge", "Policy generation (1 at start, +1 per change)",
                                  ()),
    "hostsdn_reloads": ("counter", "Policy reloads and replacements, by outcome",
                        ("outcome",)),
    "hostsdn_uptime_seconds": ("gauge", "Seconds since the packet loop started", ()),
}


@dataclass(slots=True)
class Snapshot:
    """The counters, copied in the loop's thread (see module docstring)."""

    port_traffic: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    """(port, direction, path, packets, bytes)"""
    frames: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    nic_hits: int = 0
    flows: list[tuple[str, str, int]] = field(default_factory=list)
    flows_created: int = 0
    connections: int = 0
    connections_created: int = 0
    connections_expired: int = 0
    nic_entries: dict[str, int] = field(default_factory=dict)
    nic_capacity: dict[str, int] = field(default_factory=dict)
    flows_offloaded: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    evictions: int = 0
    idle_removals: int = 0
    setup: list[tuple[float, int]] = field(default_factory=list)
    setup_sum: float = 0.0
    errors: int = 0
    generation: int = 1
    reloads: dict[str, int] = field(default_factory=dict)
    uptime: float = 0.0


def take_snapshot(dp: Datapath, *, slow: SlowPath | None = None,
                  reloader: Reloader | None = None, uptime: float = 0.0,
                  sync: bool = True) -> Snapshot:
    """Copy the counters (the packet loop's thread).  ``sync`` first pulls the NIC's
    per-entry counters into the host flows."""
    if sync:
        dp.manager.sync_stats()
    sw, mgr = dp.switch, dp.manager
    snap = Snapshot(uptime=uptime)
    for name, ps in sw.ports.items():
        for d, t in sw.port_traffic(name).items():
            snap.port_traffic.append((name, d.value, "host", t.host_packets, t.host_bytes))
            snap.port_traffic.append((name, d.value, "nic", t.nic_packets, t.nic_bytes))
            snap.flows.append((name, d.value, len(ps.tables.table(d))))
    snap.frames = {"forwarded": dp.counters["forwarded"], "dropped": dp.counters["dropped"]}
    snap.dropped = {r.value: dp.drop_reasons.get(r.value, 0) for r in DropReason}
    snap.malformed = {k.split(":", 1)[1]: v for k, v in sw.counters.items()
                      if k.startswith("malformed:")}
    if slow is not None and slow.exceptions_only and dp.backend is not None:
        snap.nic_hits = nic_hits(dp.backend)
    else:
        snap.nic_hits = dp.counters["path_nic"]
    snap.flows_created = sw.counters["flows_created"]
    snap.connections = connection_count(dp)
    snap.connections_created = sw.counters["connections_created"]
    snap.connections_expired = sw.counters["connections_expired"]
    snap.nic_entries = {d.value: len(mgr.offloaded[d]) for d in Direction}
    snap.nic_capacity = {d.value: mgr.capacity[d] for d in Direction}
    snap.flows_offloaded = mgr.counters["flows_offloaded"]
    snap.refusals = {r.value: mgr.refused.get(r.value, 0) for r in OffloadReason
                     if r is not OffloadReason.OFFLOADED}
    snap.evictions = mgr.counters["evictions"]
    snap.idle_removals = mgr.counters["idle_removed"]
    hist = slow.setup_latency if slow is not None else LatencyHistogram()
    snap.setup = hist.cumulative()
    snap.setup_sum = hist.total
    snap.errors = slow.errors if slow is not None else 0
    if reloader is not None:
        snap.generation = reloader.generation
        snap.reloads = {o: reloader.outcomes.get(o, 0) for o in RELOAD_OUTCOMES}
    else:
        snap.reloads = dict.fromkeys(RELOAD_OUTCOMES, 0)
    return snap


def _family(name: str) -> Metric:
    kind, doc, labels = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, doc, labels=labels)
    return HistogramMetricFamily(name, doc, labels=labels)


class SnapshotCollector(Collector):
    """Metric families of one ``Snapshot``."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        packets, bytes_ = _family("hostsdn_port_packets"), _family("hostsdn_port_bytes")
        for port, direction, path, p, b in s.port_traffic:
            packets.add_metric([port, direction, path], p)   # type: ignore[attr-defined]
            bytes_.add_metric([port, direction, path], b)    # type: ignore[attr-defined]
        yield packets
        yield bytes_
        yield _labelled("hostsdn_frames", s.frames)
        yield _labelled("hostsdn_dropped_frames", s.dropped)
        yield _labelled("hostsdn_malformed_frames", s.malformed)
        yield _single("hostsdn_nic_hits", s.nic_hits)
        flows = _family("hostsdn_flows")
        for port, direction, n in s.flows:
            flows.add_metric([port, direction], n)           # type: ignore[attr-defined]
        yield flows
        yield _single("hostsdn_flows_created", s.flows_created)
        yield _single("hostsdn_connections", s.connections)
        yield _single("hostsdn_connections_created", s.connections_created)
        yield _single("hostsdn_connections_expired", s.connections_expired)
        yield _labelled("hostsdn_nic_entries", s.nic_entries)
        yield _labelled("hostsdn_nic_capacity", s.nic_capacity)
        yield _single("hostsdn_flows_offloaded", s.flows_offloaded)
        yield _labelled("hostsdn_offload_refusals", s.refusals)
        yield _single("hostsdn_nic_evictions", s.evictions)
        yield _single("hostsdn_nic_idle_removals", s.idle_removals)
        hist = _family("hostsdn_slow_path_setup_seconds")
        buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in s.setup]
        hist.add_metric([], buckets, s.setup_sum)            # type: ignore[attr-defined]
        yield hist
        yield _single("hostsdn_slow_path_errors", s.errors)
        yield _single("hostsdn_policy_generation", s.generation)
        yield _labelled("hostsdn_reloads", s.reloads)
        yield _single("hostsdn_uptime_seconds", s.uptime)


def _single(name: str, value: float) -> Metric:
    fam = _family(name)
    fam.add_metric([], value)                                 # type: ignore[attr-defined]
    return fam


def _labelled(name: str, values: dict[str, int]) -> Metric:
    fam = _family(name)
    for label, value in sorted(values.items()):
        fam.add_metric([label], value)                        # type: ignore[attr-defined]
    return fam


def render(snap: Snapshot) -> bytes:
    """The Prometheus text format (version 0.0.4) of ``snap``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)

