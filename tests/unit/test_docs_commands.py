"""Every command and Python snippet of the documentation works as written (the ones that
need root and namespaces: tests/kernel/test_docs_up.py).  See tests/doccmds.py for the
convention and the few commands not run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import doccmds

UNIT = doccmds.all_commands(kernel=False)


def test_command_blocks_are_marked_sh():
    """A block of commands without ```sh would be skipped by these tests: refuse it."""
    unmarked = [f"{b.where}: {line}" for b in doccmds.blocks() if b.lang == ""
                for line in b.text.splitlines() if doccmds.COMMAND_START.match(line)]
    assert unmarked == [], ("mark command blocks ```sh (and output ```text): "
                            + "; ".join(unmarked))


def test_the_docs_have_commands():
    assert len(UNIT) >= 3
    assert any("--ports-from-trace" in c for _, c in UNIT)


@pytest.mark.parametrize("block, command", UNIT, ids=[f"{b.where}:{c[:60]}" for b, c in UNIT])
def test_docs_command(block, command, tmp_path):
    if command in doccmds.EXEMPT:            # the reason is in doccmds.EXEMPT
        return
    r = doccmds.run(command, doccmds.scratch(tmp_path))
    assert r.returncode == 0, f"{block.where}: {command}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr


PY = doccmds.python_snippets(kernel=False)


@pytest.mark.parametrize("block", PY, ids=[b.where for b in PY])
def test_docs_python_snippet(block, tmp_path):
    """The snippet runs; a line ``expr  # number`` must give that number (4 digits)."""
    checks = []
    for line in block.text.splitlines():
        m = re.match(r"^(\S.*?)\s+#\s*(-?\d+(?:\.\d+)?)\s*$", line)
        if m:
            checks.append(f"assert round({m.group(1)}, 4) == {m.group(2)}, "
                          f"({m.group(1)!r}, {m.group(1)})")
    program = block.text + "\n" + "\n".join(checks) + "\n"
    r = subprocess.run([sys.executable, "-c", program], check=False,
                       cwd=doccmds.scratch(tmp_path),
                       env=doccmds.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{block.where}\n{r.stderr}"
    assert checks, f"{block.where}: no figure to check"


def test_the_readme_replay_leaves_its_outputs(tmp_path):
    (readme,) = [c for _, c in UNIT if c.startswith("pip install")]
    work = doccmds.scratch(tmp_path)
    assert doccmds.run(readme, work).returncode == 0
    assert {p.name for p in (work / "out").iterdir()} == {"web.pcap", "db.pcap",
                                                         "uplink.pcap"}


def test_exempt_commands_are_documented_ones():
    documented = {c for _, c in doccmds.all_commands(kernel=False)}
    assert set(doccmds.EXEMPT) <= documented
    assert Path(doccmds.ROOT / ".ci" / "run").is_file()
