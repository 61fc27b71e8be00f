"""The shared object cache: checkouts with different BPF sources share it without deleting
each other's freshly built object (pytest runs of two worktrees failed with ENOENT)."""

from __future__ import annotations

import os
from pathlib import Path

from hostsdn.nic.xdp import build


def _obj_dir(cache: Path, name: str, age_s: float, now: float) -> Path:
    d = cache / name
    d.mkdir(parents=True)
    (d / build.OBJECT_NAME).write_bytes(b"\x7fELF")
    os.utime(d, (now - age_s, now - age_s))
    return d


def test_prune_keeps_recent_objects_of_other_sources(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    keep = _obj_dir(tmp_path, "a" * 16, 0, now)
    recent = _obj_dir(tmp_path, "b" * 16, 3600, now)
    stale = _obj_dir(tmp_path, "c" * 16, build.PRUNE_AFTER_S + 1, now)
    other = _obj_dir(tmp_path, "not-a-digest", build.PRUNE_AFTER_S + 1, now)
    build._prune(tmp_path, keep, now)
    assert keep.exists() and recent.exists() and other.exists()
    assert not stale.exists()
