"""docs/operate.md's API and metrics reference is what the code generates today."""

from __future__ import annotations

from pathlib import Path

from hostsdn.api.docgen import main, update

DOC = Path(__file__).resolve().parents[2] / "docs" / "operate.md"


def test_operate_md_reference_is_current() -> None:
    text = DOC.read_text()
    assert update(text) == text, \
        "docs/operate.md is stale: run python3 -m hostsdn.api.docgen docs/operate.md"


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "operate.md"
    stale.write_text(DOC.read_text().replace("| `hostsdn_port_packets_total` |", "| `gone` |"))
    assert main(["--check", str(stale)]) == 1
    assert main([str(stale)]) == 0 and main(["--check", str(stale)]) == 0
    assert stale.read_text() == DOC.read_text()
