"""Where the tests find real captures.

* ``tests/data/pcaps``: the captures the repository carries (redistributable licences, see
  its SOURCES.md).  The default suite's real traffic comes from here, so a fresh clone in
  any folder runs it in full.
* The project corpus ``../shared/pcaps`` beside the clone (or ``$HOSTSDN_SHARED_PCAPS``):
  a superset, with captures we may not redistribute.  When it is there, the corpus-wide
  tests also run over its extra captures (ids ``shared/...``); when it is not, one test
  (``tests/integration/test_shared_pcaps.py::test_shared_corpus``) is skipped and says so.

``capture_params()`` gives the parameter list of a corpus-wide test: every carried capture
(ids ``data/<name>``) plus, when the corpus is there, each corpus capture the repository
does not carry (ids ``shared/<name>``).  It is never empty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_PCAPS = ROOT / "tests" / "data" / "pcaps"
SUFFIXES = (".pcap", ".pcapng", ".cap")


def shared_corpus() -> Path | None:
    """The corpus folder (``$HOSTSDN_SHARED_PCAPS``, else ``<repo>/../shared/pcaps``), or
    None when it is not there."""
    env = os.environ.get("HOSTSDN_SHARED_PCAPS")
    path = Path(env) if env else ROOT.parent / "shared" / "pcaps"
    return path if path.is_dir() else None


def shared_corpus_hint() -> str:
    env = os.environ.get("HOSTSDN_SHARED_PCAPS")
    where = env if env else str(ROOT.parent / "shared" / "pcaps")
    return (f"the capture corpus is not at {where} (set HOSTSDN_SHARED_PCAPS): its "
            f"captures that tests/data/pcaps does not carry are not checked")


def _captures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES)


def carried_captures() -> list[Path]:
    """Every capture under tests/data/pcaps."""
    return _captures(DATA_PCAPS)


def carried(name: str) -> Path:
    """A carried capture by its path under tests/data/pcaps (it must exist)."""
    path = DATA_PCAPS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not carried by the repository (see SOURCES.md)")
    return path


def extra_captures() -> list[Path]:
    """Corpus captures the repository does not carry ([] without the corpus)."""
    corpus = shared_corpus()
    if corpus is None:
        return []
    have = {p.relative_to(DATA_PCAPS).as_posix() for p in carried_captures()}
    return [p for p in _captures(corpus) if p.relative_to(corpus).as_posix() not in have]


def all_captures() -> list[Path]:
    return carried_captures() + extra_captures()


def capture_id(path: Path) -> str:
    if path.is_relative_to(DATA_PCAPS):
        return "data/" + path.relative_to(DATA_PCAPS).as_posix()
    corpus = shared_corpus()
    assert corpus is not None
    return "shared/" + path.relative_to(corpus).as_posix()


def capture_params(paths: list[Path] | None = None) -> list[Any]:
    """``pytest.param`` per capture with its ``data/`` or ``shared/`` id."""
    chosen = all_captures() if paths is None else paths
    assert chosen, "no capture found under tests/data/pcaps"
    return [pytest.param(p, id=capture_id(p)) for p in chosen]
