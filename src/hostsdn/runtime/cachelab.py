"""The cache lab: how a trace fares at several NIC cache sizes and eviction policies.

Each setting (cache size x eviction policy) is one full ``replay()`` of the trace through
a fresh ``Datapath`` with the simulated NIC, so a row is exactly what
``hostsdn replay --cache-size S --eviction P`` reports for the same trace.  Per setting:

* NIC hit rate: ``nic_hits / packets``;
* host load: exception-path packets (every packet the NIC did not process), also as
  packets per second of *trace* time (``exceptions / (last - first timestamp)``);
* evictions and offload refusals (by reason: ``conn_state`` = TCP not yet established,
  ``not_yet`` = before ``offload_after``, ``capacity`` = full cache with eviction
  ``none``, ...).

One more replay with an unbounded cache gives the *ceiling*: the hit rate when only the
unavoidable misses remain (first packets, TCP SYN/FIN/RST, broadcast and multicast).

Real captures were not taken behind this switch, so no frame's source MAC is a port MAC
and everything would enter from the uplink and be dropped (``no_port``).
``ports_from_trace`` (``runtime.traceports``, shared with ``hostsdn replay``) turns the
most frequent source MACs of a trace into VM ports with the layers of a template port
(see ``examples/permissive.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostsdn.errors import HostsdnUsageError
from hostsdn.nic.datapath import DatapathOptions, DatapathSummary
from hostsdn.offload.manager import EVICTION_POLICIES
from hostsdn.policy import model as pm
from hostsdn.runtime.replay import replay
from hostsdn.runtime.traceports import (  # noqa: F401  (also this module's API)
    TraceStats,
    port_name_for_mac,
    ports_from_trace,
    scan_trace,
)

DEFAULT_SIZES = (16, 64, 256, 1024)
DEFAULT_EVICTIONS = ("lru", "lfu", "fifo", "random")
UNBOUNDED = 1 << 62
"""Cache size of the ceiling run: larger than any number of flows a trace can create."""

ROW_KEYS = ("cache_size", "eviction", "packets", "nic_hits", "hit_rate", "exceptions",
            "host_pps", "evictions", "refusals", "refused", "flows_created",
            "flows_offloaded", "forwarded", "dropped", "wall_seconds")
"""The keys of every row of ``cachelab.json`` (in this order)."""


# ----------------------------------------------------------------------- arguments

class CacheLabArgumentError(HostsdnUsageError, ValueError):
    """A bad size list, eviction list or setting (also a ``ValueError``, as before)."""


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"16,64,256"`` -> ``(16, 64, 256)``: sorted, duplicates dropped, each >= 1."""
    sizes: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            raise CacheLabArgumentError(f"cache size {part!r} is not an integer") from None
        if size < 1:
            raise CacheLabArgumentError(f"cache size {size} must be at least 1")
        sizes.add(size)
    if not sizes:
        raise CacheLabArgumentError("give at least one cache size")
    return tuple(sorted(sizes))


def parse_evictions(text: str) -> tuple[str, ...]:
    """``"lru,fifo"`` -> ``("lru", "fifo")``: file order kept, duplicates dropped."""
    out: list[str] = []
    for name in (p.strip().lower() for p in text.split(",")):
        if not name:
            continue
        if name not in EVICTION_POLICIES:
            raise CacheLabArgumentError(f"unknown eviction policy {name!r} "
                             f"(choose from {', '.join(EVICTION_POLICIES)})")
        if name not in out:
            out.append(name)
    if not out:
        raise CacheLabArgumentError("give at least one eviction policy")
    return tuple(out)


# ---------------------------------------------------------------------------- runs

@dataclass(frozen=True, slots=True)
class CacheLabRow:
    """The outcome of one replay at one setting."""

    cache_size: int | None
    """NIC cache capacity per direction (flows); None for the unbounded ceiling run."""
    eviction: str
    """Replacement policy on a full cache."""
    packets: int
    """Frames replayed."""
    nic_hits: int
    """Frames the NIC processed on its own."""
    hit_rate: float
    """``nic_hits / packets`` (0.0 for an empty trace)."""
    exceptions: int
    """Frames that took the exception path to the host (host load)."""
    host_pps: float | None
    """``exceptions`` per second of trace time; None when the trace spans no time."""
    evictions: int
    """NIC entries replaced to make room."""
    refusals: int
    """Offload refusals, all reasons (see ``refused``)."""
    refused: dict[str, int]
    """Refusals by reason."""
    flows_created: int
    """Host flows set up (the slow path)."""
    flows_offloaded: int
    """Offload operations issued (a retried flow counts again)."""
    forwarded: int
    """Frames that produced output."""
    dropped: int
    """Frames that produced none."""
    wall_seconds: float
    """Wall-clock time of this replay."""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values, keys in ``ROW_KEYS`` order."""
        return {k: getattr(self, k) for k in ROW_KEYS}


@dataclass(slots=True)
class CacheLabReport:
    """All rows of a cache-lab run plus what they were computed from."""

    trace: str
    policy: str | None
    stats: TraceStats
    sizes: tuple[int, ...]
    evictions: tuple[str, ...]
    offload_after: int
    rows: list[CacheLabRow] = field(default_factory=list)
    eager_replies: bool = True
    """Reply flows offloaded with their connection's first offloaded flow."""
    ceiling: CacheLabRow | None = None
    ports: tuple[str, ...] = ()
    """Names of the VM ports the replays used."""
    warnings: list[str] = field(default_factory=list)
    """The replays' warnings (``ReplayOutcome.warnings``: they are the same for every
    setting)."""

    def row(self, cache_size: int, eviction: str) -> CacheLabRow:
        """The row of one setting (KeyError when it was not run)."""
        for r in self.rows:
            if r.cache_size == cache_size and r.eviction == eviction:
                return r
        raise KeyError(f"no row for cache size {cache_size} and eviction {eviction!r}")

    def as_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "policy": self.policy,
            "ports": list(self.ports),
            "frames": self.stats.frames,
            "duration": self.stats.duration,
            "sizes": list(self.sizes),
            "evictions": list(self.evictions),
            "offload_after": self.offload_after,
            "eager_replies": self.eager_replies,
            "rows": [r.as_dict() for r in self.rows],
            "ceiling": self.ceiling.as_dict() if self.ceiling is not None else None,
        }


ProgressFn = Callable[[CacheLabRow, int, int], None]
"""Called after each replay with the row, its 1-based number and the number of replays."""


def _row(summary: DatapathSummary, cache_size: int | None, eviction: str,
         duration: float | None, wall: float) -> CacheLabRow:
    packets = summary.packets
    refused = dict(summary.offload_refused)
    return CacheLabRow(
        cache_size=cache_size, eviction=eviction, packets=packets,
        nic_hits=summary.nic_hits,
        hit_rate=summary.nic_hits / packets if packets else 0.0,
        exceptions=summary.exceptions,
        host_pps=summary.exceptions / duration if duration else None,
        evictions=summary.evictions, refusals=sum(refused.values()), refused=refused,
        flows_created=summary.flows_created, flows_offloaded=summary.flows_offloaded,
        forwarded=summary.forwarded, dropped=summary.dropped,
        wall_seconds=round(wall, 4))


def run_cachelab(policy: pm.Policy, trace: str | os.PathLike[str], *,
                 sizes: Iterable[int] = DEFAULT_SIZES,
                 evictions: Iterable[str] = DEFAULT_EVICTIONS,
                 options: DatapathOptions | None = None,
                 ports_from_trace_count: int | None = None,
                 ceiling: bool = True,
                 progress: ProgressFn | None = None) -> CacheLabReport:
    """Replay ``trace`` once per (size, eviction) setting, each through a fresh simnic
    ``Datapath`` built from ``options`` (its ``nic``, ``cache_size`` and ``eviction`` are
    replaced); with ``ceiling`` one more replay with an unbounded cache."""
    size_list = tuple(sizes)
    eviction_list = tuple(evictions)
    if not size_list or any(s < 1 for s in size_list):
        raise CacheLabArgumentError("cache sizes must be a non-empty list of integers >= 1")
    for name in eviction_list:
        if name not in EVICTION_POLICIES:
            raise CacheLabArgumentError(f"unknown eviction policy {name!r}")
    if not eviction_list:
        raise CacheLabArgumentError("give at least one eviction policy")
    base = options or DatapathOptions()
    stats = scan_trace(trace)
    if ports_from_trace_count is not None:
        policy = ports_from_trace(policy, stats, ports_from_trace_count)
    report = CacheLabReport(trace=str(trace), policy=policy.source, stats=stats,
                            sizes=size_list, evictions=eviction_list,
                            offload_after=base.offload_after,
                            eager_replies=base.eager_replies,
                            ports=tuple(p.name for p in policy.ports))
    settings: list[tuple[int | None, str]] = [(s, e) for s in size_list for e in eviction_list]
    if ceiling:
        settings.append((None, "none"))
    for number, (size, eviction) in enumerate(settings, start=1):
        opts = dataclasses.replace(base, nic="simnic", eviction=eviction,
                                   cache_size=UNBOUNDED if size is None else size)
        started = time.perf_counter()
        outcome = replay(policy, trace, options=opts)
        if number == 1:
            report.warnings = list(outcome.warnings)
        row = _row(outcome.summary, size, eviction, stats.duration,
                   time.perf_counter() - started)
        if size is None:
            report.ceiling = row
        else:
            report.rows.append(row)
        if progress is not None:
            progress(row, number, len(settings))
    return report


# ------------------------------------------------------------------------- outputs

def write_json(report: CacheLabReport, path: str | os.PathLike[str]) -> None:
    """``cachelab.json`` (its folder is made; ``HostsdnUsageError`` when it cannot be)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report.as_json(), indent=2) + "\n")
    except OSError as exc:
        raise HostsdnUsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def write_plot(report: CacheLabReport, path: str | os.PathLike[str]) -> None:
    """Hit rate vs cache size (log2 x axis), one line per eviction policy, as a PNG.

    matplotlib is imported here, and only its Agg canvas is used (no pyplot, no display).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, PercentFormatter

    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^vx*"
    for i, eviction in enumerate(report.evictions):
        pts = sorted((r.cache_size, r.hit_rate * 100) for r in report.rows
                     if r.eviction == eviction and r.cache_size is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)],
                    label=eviction)
    if report.ceiling is not None:
        ax.axhline(report.ceiling.hit_rate * 100, color="grey", linestyle="--", linewidth=1,
                   label=f"unbounded cache ({report.ceiling.hit_rate:.1%})")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(report.sizes)))
    ax.set_xticklabels([str(s) for s in report.sizes])
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_ylim(0, 100)
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_xlabel("NIC cache size per direction (flows, log2 scale)")
    ax.set_ylabel("NIC hit rate (nic_hits / packets)")
    name = Path(report.trace).name
    ax.set_title(f"hostsdn cache lab: {name} ({report.stats.frames} packets, "
                 f"offload after {report.offload_after}"
                 f"{'' if report.eager_replies else ', no eager replies'})", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="eviction", loc="best", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(os.fspath(path), format="png")
    except OSError as exc:
        raise HostsdnUsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def format_pps(value: float | None) -> str:
    """Packets per second for a table cell ("-" when undefined)."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 0.01 or value == 0:
        return f"{value:.2f}"
    return f"{value:.1e}"


def summarize_refusals(rows: Sequence[CacheLabRow]) -> str:
    """``"conn_state 120, not_cacheable 8"`` over the reasons of all rows (max per reason)."""
    worst: dict[str, int] = {}
    for r in rows:
        for reason, n in r.refused.items():
            worst[reason] = max(worst.get(reason, 0), n)
    return ", ".join(f"{k} {v}" for k, v in sorted(worst.items())) or "none"
