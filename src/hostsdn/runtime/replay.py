"""Replay a packet trace through a switch (and a NIC backend): the main job of hostsdn.

The port a frame enters from: in a pcapng file whose interface names (``if_name``) are
port names (or ``uplink``), the interface the frame was captured on, so that a frame
from a VM with somebody else's source MAC is replayed as what it is (a spoofing test).
Otherwise (pcap files, other interface names): the VM whose MAC is the frame's source
(outbound), else the uplink (inbound).  The trace timestamp is ``now``.  Records the
trace lies about (cut short, longer than the snaplen) are not replayed: they are
counted in the summary (``trace_warnings``) and listed (``trace_warning_list``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hostsdn.errors import HostsdnUsageError, NicError
from hostsdn.nic.datapath import Datapath, DatapathOptions, DatapathSummary, DpResult
from hostsdn.offload.backend import backend_info
from hostsdn.policy import model as pm
from hostsdn.runtime.pcap import PcapWriter, TraceFrame, TraceReader, TraceWarning
from hostsdn.runtime.traceports import link_type_warning
from hostsdn.switch import UPLINK

if TYPE_CHECKING:
    from hostsdn.flows.table import Flow
    from hostsdn.nic.trace import RuleBook


@dataclass(slots=True)
class ReplayOutcome:
    summary: DatapathSummary
    """The datapath's summary at the end of the trace."""
    trace: str
    emitted: dict[str, int]
    """Frames sent out of each port."""
    outputs: dict[str, list[bytes]] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What may make the result not what was meant (a non-Ethernet capture, a capture
    none of whose frames comes from a port)."""
    trace_warnings: list[TraceWarning] = field(default_factory=list)
    """Records of the trace that lie (cut short, longer than the snaplen): not replayed."""

    def to_json(self) -> dict[str, Any]:
        """The summary ``hostsdn replay --json`` prints (``DatapathSummary.to_json()`` plus
        ``emitted``, ``trace``, ``trace_warnings`` (a count) and ``trace_warning_list``)."""
        out = self.summary.to_json()
        out["emitted"] = dict(self.emitted)
        out["trace"] = self.trace
        out["trace_warnings"] = len(self.trace_warnings)
        out["trace_warning_list"] = [{"index": w.index, "message": w.message}
                                     for w in self.trace_warnings]
        return out


def classify_port(frame: bytes, by_mac: dict[bytes, str]) -> str:
    """The port a trace frame enters from: the VM whose MAC is its source, else the uplink."""
    return by_mac.get(frame[6:12], UPLINK) if len(frame) >= 12 else UPLINK


def ingress_port(tf: TraceFrame, by_mac: dict[bytes, str], ports: frozenset[str]) -> str:
    """The port ``tf`` enters from: its pcapng interface when that is named after a port
    (or ``uplink``), else ``classify_port``."""
    if tf.interface is not None and (tf.interface in ports or tf.interface == UPLINK):
        return tf.interface
    return classify_port(tf.data, by_mac)


def replay(policy: pm.Policy, trace: str | os.PathLike[str], *,
           options: DatapathOptions | None = None,
           out_dir: str | os.PathLike[str] | None = None,
           verdicts: IO[str] | None = None,
           keep_outputs: bool = False,
           keep_verdicts: bool = False,
           dump_flows: IO[str] | None = None,
           progress: Callable[[int, int], None] | None = None) -> ReplayOutcome:
    """Run the whole trace; write per-port pcaps and verdict lines as asked, and the
    flows left at the end (one JSON object per line, ``nic.flowdump.flow_row``) to
    ``dump_flows``."""
    options = options or DatapathOptions()
    check_privileges(options.nic)
    reader = TraceReader(trace)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        try:
            out_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reader.close()
            raise HostsdnUsageError(f"{out_path}: cannot make the output folder: "
                                    f"{exc.strerror or exc}") from None
    outputs: dict[str, list[bytes]] = {}
    verdict_lines: list[dict[str, Any]] = []
    writers: dict[str, PcapWriter] = {}
    emitted: Counter[str] = Counter()
    by_mac = {p.mac: p.name for p in policy.ports}
    names = frozenset(p.name for p in policy.ports)
    last_time = 0.0
    from_ports = 0
    book = None
    if verdicts is not None or keep_verdicts:
        from hostsdn.nic.trace import RuleBook

        book = RuleBook(policy)
    with Datapath(policy, options) as dp:
        try:
            for tf in reader:
                last_time = tf.time
                in_port = ingress_port(tf, by_mac, names)
                if in_port != UPLINK:
                    from_ports += 1
                res = dp.receive(tf.data, in_port, tf.time)
                for port, frame in res.outputs:
                    emitted[port] += 1
                    if out_path is not None:
                        w = writers.get(port)
                        if w is None:
                            w = writers[port] = _writer(out_path / f"{port}.pcap")
                        w.write(frame, tf.time)
                    if keep_outputs:
                        outputs.setdefault(port, []).append(frame)
                if verdicts is not None or keep_verdicts:
                    assert book is not None
                    line = _verdict_line(tf.index, tf.time, in_port, res, dp, book)
                    if verdicts is not None:
                        verdicts.write(json.dumps(line) + "\n")
                    if keep_verdicts:
                        verdict_lines.append(line)
                if progress is not None and tf.index % 256 == 0:
                    progress(reader.progress, reader.size)
        finally:
            for w in writers.values():
                w.close()
        dp.finish(last_time)
        summary = dp.summary()
        if dump_flows is not None:
            from hostsdn.nic.flowdump import flow_rows

            for row in flow_rows(dp, last_time):
                dump_flows.write(json.dumps(row, sort_keys=True) + "\n")
    if progress is not None:
        progress(reader.size, reader.size)
    outcome = ReplayOutcome(summary, str(trace), dict(sorted(emitted.items())), outputs,
                            verdict_lines, trace_warnings=list(reader.warnings))
    link = link_type_warning(trace, reader.linktype)
    if link is not None:
        outcome.warnings.append(link)
    elif policy.ports and not from_ports and summary.packets:
        outcome.warnings.append(
            f"{trace}: no frame has the MAC of a port of the policy as its source, so every "
            "frame entered from the uplink (and is dropped no_port unless it is addressed to "
            "a port); for a capture taken elsewhere, make ports of its busiest MACs with "
            "--ports-from-trace N")
    return outcome


def _writer(path: Path) -> PcapWriter:
    try:
        return PcapWriter(path)
    except OSError as exc:
        raise HostsdnUsageError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _verdict_line(index: int, time: float, in_port: str, res: DpResult, dp: Datapath,
                  book: RuleBook) -> dict[str, Any]:
    line: dict[str, Any] = {
        "index": index,
        "time": time,
        "in_port": in_port,
        "path": res.path,
        "outputs": [{"port": p, "len": len(f)} for p, f in res.outputs],
        "drop": res.drop_reason.value if res.drop_reason else None,
        "drops": [{"port": p, "reason": r.value} for p, r in res.drops],
        "decided_by": res.decided_by,
    }
    if res.detail:
        line["detail"] = res.detail
    line["flows"] = [_verdict_flow(f, dp, book) for f in res.flows]
    return line


def _verdict_flow(flow: Flow, dp: Datapath, book: RuleBook) -> dict[str, Any]:
    """One flow that processed a frame: its key, the file:line deciding each layer, and
    the offload decision after this frame."""
    from hostsdn.nic.trace import describe_key

    ps = dp.switch.ports.get(flow.port)
    state, reason, _ = dp.manager.status(flow, ps.generation if ps is not None else -1)
    return {"port": flow.port, "direction": flow.direction.value,
            "key": describe_key(flow.key),
            "rules": [f"{s.layer}: {s.where}" + ("" if s.how == "rule" else f" ({s.how})")
                      for s in book.steps(flow)],
            "offload": state, "offload_reason": reason}


def check_privileges(nic: str) -> None:
    """A backend that needs root (``BackendInfo.needs_root``, e.g. xdp: kernel objects and
    test interfaces) fails with a NicError naming it before anything is made."""
    if nic != "none" and backend_info(nic).needs_root and os.geteuid() != 0:
        raise NicError(f"--nic {nic} needs root (it loads a BPF program and creates "
                       "interfaces)")


def replay_into(dp: Datapath, trace: str | os.PathLike[str], *, stop_at: int | None = None,
                by_mac: dict[bytes, str] | None = None,
                names: frozenset[str] | None = None) -> tuple[TraceFrame | None, float]:
    """Feed ``dp`` the frames of ``trace`` before index ``stop_at`` (all when None), to
    build the state a later frame meets (``hostsdn trace``).  Returns the frame at
    ``stop_at`` (None when not asked or the trace is shorter) and the last time fed."""
    if by_mac is None:
        by_mac = {p.port.mac: name for name, p in dp.switch.ports.items()}
    if names is None:
        names = frozenset(dp.switch.ports)
    last = 0.0
    for tf in TraceReader(trace):
        if stop_at is not None and tf.index >= stop_at:
            return tf, last
        dp.receive(tf.data, ingress_port(tf, by_mac, names), tf.time)
        last = tf.time
    return None, last
