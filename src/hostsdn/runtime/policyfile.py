"""Reading a policy file (the core parses text; only runtime/ touches files)."""

from __future__ import annotations

from pathlib import Path

from hostsdn.errors import PolicyError
from hostsdn.policy.loader import load_policy_text
from hostsdn.policy.model import Policy


def load_policy(path: str | Path) -> Policy:
    """Read, parse and validate the policy file at ``path``.  Raises ``PolicyError``
    (also when the file cannot be read or is not UTF-8)."""
    return load_policy_text(read_policy_text(path), str(path))


def read_policy_text(path: str | Path) -> str:
    """The text of the policy file at ``path`` (``PolicyError`` when it cannot be read or
    is not UTF-8)."""
    filename = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file: {exc.strerror or exc}",
                          file=filename) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"the policy file is not UTF-8 text (byte {exc.start})",
                          file=filename) from None
    return text
