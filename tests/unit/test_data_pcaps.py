"""The captures the repository carries (tests/data/pcaps) are what SOURCES.md and
SHA256SUMS say: byte for byte the upstream files, each under a licence that lets us
redistribute it."""

from __future__ import annotations

import hashlib
import re

from captures import DATA_PCAPS, carried_captures

ALLOWED = ("BSD-", "MIT", "Apache-", "MPL-", "Unlicense", "public domain")
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<packets>\d+) \| [^|]+ \| "
                 r"\[(?P<repo>[\w.-]+/[\w.-]+)\]\(https://github\.com/(?P=repo)\) @ "
                 r"`(?P<commit>[0-9a-f]{40})` : `(?P<path>[^`]+)` \| (?P<licence>[^|]+) \|$")


def _sums() -> dict[str, str]:
    sums = {}
    for line in (DATA_PCAPS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    return sums


def _rows() -> dict[str, re.Match[str]]:
    rows = {}
    for line in (DATA_PCAPS / "SOURCES.md").read_text().splitlines():
        if line.startswith("| `"):
            m = ROW.match(line)
            assert m, f"SOURCES.md row not in the documented form: {line}"
            rows[m["file"]] = m
    return rows


def _names() -> set[str]:
    return {p.relative_to(DATA_PCAPS).as_posix() for p in carried_captures()}


def test_every_carried_capture_matches_its_checksum() -> None:
    sums = _sums()
    assert set(sums) == _names()
    for name, digest in sums.items():
        assert hashlib.sha256((DATA_PCAPS / name).read_bytes()).hexdigest() == digest, name


def test_every_carried_capture_has_a_source_and_a_redistributable_licence() -> None:
    rows = _rows()
    assert set(rows) == _names()
    for name, row in rows.items():
        licence = row["licence"].strip()
        assert licence.startswith(ALLOWED) and "GPL" not in licence, (name, licence)

