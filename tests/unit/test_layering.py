"""Imports go downward only (docs/design.md); the core does no I/O and reads no clock."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "hostsdn"
LEVEL = {"errors": 0, "direction": 0, "packet": 1, "policy": 2, "flows": 2, "offload": 3, "switch": 4,
         "nic": 5, "runtime": 6, "api": 7, "cli": 8}
# The command line sits on the management API: `up` serves it, `reload` (and the operator
# commands) are its clients.
CORE = ("direction", "packet", "policy", "flows", "offload", "switch")
CORE_FILES = ("nic/datapath.py",)
"""Core modules outside the core areas: sans-IO like them (the NIC in front of the switch)."""
FORBIDDEN_IN_CORE = {"socket", "time", "os", "subprocess", "select", "asyncio", "threading",
                     "ctypes", "pyroute2", "dpkt", "datetime"}


def _area(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _is_core(path: Path) -> bool:
    return _area(path) in CORE or path.relative_to(PKG).as_posix() in CORE_FILES


def _module_of(path: Path) -> str:
    parts = ("hostsdn",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None):
    """Absolute names of every module ``path`` imports; relative imports are resolved
    (``from ..offload import x`` in hostsdn/nic/simnic.py is ``hostsdn.offload``)."""
    tree = ast.parse(path.read_text() if source is None else source)
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module:
                    yield node.module
                continue
            base = package[:len(package) - (node.level - 1)]
            if node.module:
                yield ".".join([*base, node.module])
            else:                       # from . import x: x may be a module
                for a in node.names:
                    yield ".".join([*base, a.name])


def test_relative_imports_are_resolved():
    assert _module_of(PKG / "nic" / "simnic.py") == "hostsdn.nic.simnic"
    source = "from ..offload import backend\nfrom . import cachetable\nfrom .x import y\n"
    assert list(_imports(PKG / "nic" / "simnic.py", source)) == [
        "hostsdn.offload", "hostsdn.nic.cachetable", "hostsdn.nic.x"]
    assert list(_imports(PKG / "nic" / "xdp" / "__init__.py", "from ...flows import keys")) \
        == ["hostsdn.flows"]


def test_a_relative_upward_import_is_caught():
    assert _upward(PKG / "packet" / "key.py", "from ..switch import Switch") == [
        "packet/key.py imports hostsdn.switch"]
    assert _upward(PKG / "nic" / "datapath.py", "from ..runtime import replay") == [
        "nic/datapath.py imports hostsdn.runtime"]


def _upward(path: Path, source: str | None = None) -> list[str]:
    area = _area(path)
    bad = []
    for mod in _imports(path, source):
        if not mod.startswith("hostsdn."):
            continue
        target = mod.split(".")[1]
        sibling = area == "flows" and target == "policy"     # siblings: flows uses policy
        if target in LEVEL and target != area and LEVEL[target] >= LEVEL[area] \
                and not sibling:
            bad.append(f"{path.relative_to(PKG)} imports {mod}")
    return bad


def test_imports_go_downward_only():
    bad = []
    for path in PKG.rglob("*.py"):
        if _area(path) in LEVEL:
            bad += _upward(path)
    assert bad == []


def test_core_does_no_io_and_reads_no_clock():
    bad = []
    for path in PKG.rglob("*.py"):
        if not _is_core(path):
            continue
        for mod in _imports(path):
            if mod.split(".")[0] in FORBIDDEN_IN_CORE:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert bad == []


def test_core_opens_no_files():
    bad = []
    for path in PKG.rglob("*.py"):
        if not _is_core(path):
            continue
        text = path.read_text()
        for needle in ("open(", ".read_bytes(", ".read_text(", ".write_bytes(", ".write_text("):
            if needle in text.replace("Path(", ""):
                bad.append(f"{path.relative_to(PKG)}: {needle}")
    assert bad == []
