"""Imports go downward only (docs/design.md); the core does no I/O and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "hostsdn"
LEVEL = {"errors": 0, "direction": 0, "packet": 1, "policy": 2, "flows": 2, "offload": 3, "switch": 4,
         "nic": 5, "runtime": 6, "api": 7, "cli": 7}
CORE = ("packet", "policy", "flows", "offload", "switch")
FORBIDDEN_IN_CORE = {"socket", "time", "os", "subprocess", "select", "asyncio", "threading",
                     "ctypes", "pyroute2", "dpkt", "datetime"}


def _area(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_go_downward_only():
    bad = []
    for path in PKG.rglob("*.py"):
        area = _area(path)
        if area not in LEVEL:
            continue
        for mod in _imports(path):
            if not mod.startswith("hostsdn."):
                continue
            target = mod.split(".")[1]
            sibling = area == "flows" and target == "policy"     # siblings: flows uses policy
            if target in LEVEL and target != area and LEVEL[target] >= LEVEL[area] \
                    and not sibling:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []


def test_core_does_no_io_and_reads_no_clock():
    bad = []
    for path in PKG.rglob("*.py"):
        if _area(path) not in CORE:
            continue
        for mod in _imports(path):
            if mod.split(".")[0] in FORBIDDEN_IN_CORE:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []


def test_core_opens_no_files():
    bad = []
    for path in PKG.rglob("*.py"):
        if _area(path) not in CORE:
            continue
        text = path.read_text()
        for needle in ("open(", ".read_bytes(", ".read_text(", ".write_bytes(", ".write_text("):
            if needle in text.replace("Path(", ""):
                bad.append(f"{path.relative_to(PKG)}: {needle}")
    assert bad == []
