"""Rich renderings of what the operator commands show (trace, flows, stats).

They take the JSON forms (``Trace.as_json()``, flow rows, stats dicts), so the same
rendering serves a policy alone and a running ``up`` answering over its API.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

HEX_BYTES = 64
"""Output frames show this many bytes of hex unless --full-hex."""


def _hex(h: str, full: bool) -> str:
    data = bytes.fromhex(h)
    shown = data if full else data[:HEX_BYTES]
    lines = [shown[i:i + 16].hex(" ") for i in range(0, len(shown), 16)]
    if len(shown) < len(data):
        lines.append(f"... {len(data) - len(shown)} more bytes (--full-hex)")
    return "\n".join(lines)


def _layers_table(flow: dict[str, Any]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    t.add_column("layer", style="bold")
    t.add_column("decided by")
    t.add_column("does")
    t.add_column("where", style="dim")
    for step in flow["layers"]:
        how = step["how"]
        who = step["rule"] if how == "rule" else how
        does = step["actions"]
        style = "red" if "block" in does and how in ("rule", "default") else ""
        where = f"{step['file'] or 'policy'}:{step['line']}" if step["line"] else ""
        t.add_row(step["layer"], who, Text(does, style=style), where)
    return t


def _flow_block(flow: dict[str, Any], title: str) -> Group:
    state = "[bold green]new flow[/]" if flow["new"] else "existing flow"
    head = Text.from_markup(f"[bold]{title}[/] {escape(flow['port'])}/{flow['direction']}  "
                            f"{state}")
    rows = Table.grid(padding=(0, 1))
    rows.add_column(style="dim", justify="right")
    rows.add_column()
    rows.add_row("key", flow["key"])
    rows.add_row("actions", flow["transposition"] if not flow["drop"]
                 else Text(f"drop ({flow['drop']})", style="bold red"))
    if flow["meters"]:
        rows.add_row("meters", ", ".join(flow["meters"]))
    rows.add_row("to", flow["dest"])
    rows.add_row("conn", flow["conn_state"])
    before, after = flow["offload_before"], flow["offload_after"]
    rows.add_row("offload", after if before in ("-", after) else f"{before} -> {after}")
    return Group(head, _layers_table(flow), rows)


def _result_lines(side: dict[str, Any]) -> list[Text]:
    out = [Text(f"-> {o['port']}  {o['len']} B  {o['decoded']}", style="green")
           for o in side["outputs"]]
    out += [Text(f"x dropped on {d['port']}: {d['reason']}", style="bold red")
            for d in side["drops"]]
    if not out:
        out.append(Text("x no output", style="bold red"))
    return out


def _nic_panel(t: dict[str, Any]) -> Panel:
    nic = t["nic"]
    parts: list[Any] = []
    if nic["hit"]:
        parts.append(Text("HIT: processed in the NIC", style="bold green"))
        for f in nic["flows"]:
            parts.append(Text(f"entry #{f['nic_handle']} {f['port']}/{f['direction']}: "
                              f"{f['transposition'] if not f['drop'] else 'drop'}"))
        parts += _result_lines(nic)
    else:
        parts.append(Text(f"MISS: {nic['miss']}", style="bold yellow"))
        parts.append(Text(nic["why"]))
        parts.append(Text(f"-> exception to the host ({t['path']} path)", style="dim"))
        after = [op for op in t["nic_ops"] if op["op"] == "add"]
        if after:
            parts.append(Text("after this packet the NIC holds:", style="bold"))
            for op in after:
                eager = " (eager reply)" if op.get("eager") else ""
                parts.append(Text(f"+ #{op['handle']} {op['port']}/{op['direction']} "
                                  f"{op['key']}: {op['actions']}{eager}"))
    gone = [op for op in t["nic_ops"] if op["op"] == "delete"]
    for op in gone:
        parts.append(Text(f"- #{op['handle']} {op.get('port', '?')}/{op.get('direction', '?')} "
                          f"{op.get('key', '')} ({op.get('reason', '')})", style="yellow"))
    style = "green" if nic["decides"] else "yellow"
    title = "NIC" + (" (handles it)" if nic["decides"] else "")
    return Panel(Group(*parts), title=title, border_style=style)


def _host_panel(t: dict[str, Any]) -> Panel:
    host = t["host"]
    parts: list[Any] = []
    if not host["decides"]:
        parts.append(Text("what the host would do (not run: the NIC hit)", style="dim"))
    for i, f in enumerate(host["flows"]):
        parts.append(_flow_block(f, f"stage {i + 1}:"))
    if not host["flows"]:
        parts.append(Text(t["detail"] or "no flow (dropped before the layers)", style="dim"))
    parts += _result_lines(host)
    style = "green" if host["decides"] else "blue"
    title = "host" + (" (handles it)" if host["decides"] else " (what-if)")
    return Panel(Group(*parts), title=title, border_style=style)


def print_trace(t: dict[str, Any], *, full_hex: bool = False,
                console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text.from_markup(
        f"[bold]hostsdn trace[/]: {t['frame_len']} B from [bold]{escape(t['in_port'])}[/] "
        f"at t={t['now']:.6f}"))
    console.print(Text(f"  {t['key']}"))
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=2)
    grid.add_column(ratio=3)
    grid.add_row(_nic_panel(t), _host_panel(t))
    console.print(grid)
    where = "in the NIC" if t["path"] == "nic" else f"by the host ({t['path']} path)"
    if t["outputs"]:
        ports = escape(", ".join(o["port"] for o in t["outputs"]))
        verdict = f"[bold green]forwarded[/] {where} to {ports}"
    else:
        reasons = escape(", ".join(f"{d['reason']} on {d['port']}" for d in t["drops"])
                         or "no output")
        verdict = f"[bold red]dropped[/] {where}: {reasons}"
    if t["agree"] is True:
        verdict += "  [green](the host alone gives the same bytes)[/]"
    elif t["agree"] is False:
        verdict += "  [bold red](the host alone would differ!)[/]"
    console.print(Text.from_markup("verdict: " + verdict))
    if t["expired_connections"]:
        console.print(f"before it: {t['expired_connections']} idle connection(s) expire")
    if t["created"]:
        ct = Table(title="flows this packet creates", box=box.SIMPLE_HEAD, title_justify="left")
        for col in ("port/dir", "key", "actions", "offload"):
            ct.add_column(col)
        for f in t["created"]:
            ct.add_row(f"{f['port']}/{f['direction']}", f["key"],
                       f["transposition"] if not f["drop"] else f"drop ({f['drop']})",
                       f["offload_after"])
        console.print(ct)
    for o in t["outputs"]:
        console.print(Panel(_hex(o["hex"], full_hex),
                            title=Text(f"out {o['port']}: {o['decoded']}"),
                            title_align="left", border_style="dim", box=box.SQUARE))
