"""The run directory of ``hostsdn up``: pidfile, state, answers, log and API socket.

``/run/hostsdn`` (``$HOSTSDN_RUN_DIR`` overrides) holds, per policy file stem:
``<stem>.pid``, ``<stem>.state.json`` (pid, policy file, NIC, uplink namespace, remote IPs,
topology plan, API socket), ``<stem>.reload.json`` (the answer to the last reload),
``<stem>.log`` (``--daemon``) and ``<stem>.sock`` (the management API, mode 0600).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hostsdn.errors import DaemonError

RUN_DIR = "/run/hostsdn"
"""Where pidfiles, state and daemon logs go (``$HOSTSDN_RUN_DIR`` overrides)."""


def run_dir() -> Path:
    return Path(os.environ.get("HOSTSDN_RUN_DIR", RUN_DIR))


def _file(policy_path: str | os.PathLike[str], suffix: str) -> Path:
    return run_dir() / f"{Path(policy_path).stem}{suffix}"


def pidfile_path(policy_path: str | os.PathLike[str]) -> Path:
    return _file(policy_path, ".pid")


def state_path(policy_path: str | os.PathLike[str]) -> Path:
    return _file(policy_path, ".state.json")


def log_path(policy_path: str | os.PathLike[str]) -> Path:
    return _file(policy_path, ".log")


def reload_path(policy_path: str | os.PathLike[str]) -> Path:
    return _file(policy_path, ".reload.json")


def socket_path(policy_path: str | os.PathLike[str]) -> Path:
    """The management API's Unix socket, beside the pidfile."""
    return _file(policy_path, ".sock")


def read_pid(policy_path: str | os.PathLike[str]) -> int | None:
    try:
        return int(pidfile_path(policy_path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive_hostsdn(pid: int) -> bool:
    """True when ``pid`` runs and is a hostsdn process (not a reused pid, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and b"hostsdn" in cmdline


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def write_state(policy_path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Record a starting ``up``: its state (``pid`` in it) and the pidfile."""
    d = run_dir()
    d.mkdir(parents=True, exist_ok=True)
    unlink(reload_path(policy_path))          # a crashed run's answer is no answer of ours
    for path, text in ((state_path(policy_path), json.dumps(state) + "\n"),
                       (pidfile_path(policy_path), f"{state['pid']}\n")):
        write_atomically(path, text)


def remove_state(policy_path: str | os.PathLike[str], pid: int | None = None) -> None:
    """Remove the pidfile, state, answer and socket (only ours when ``pid`` is given)."""
    if pid is not None and read_pid(policy_path) not in (None, pid):
        return
    for path in (pidfile_path(policy_path), state_path(policy_path),
                 reload_path(policy_path), socket_path(policy_path)):
        unlink(path)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object written by this module ({} when absent, unreadable or not an object)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_state(policy_path: str | os.PathLike[str]) -> dict[str, Any]:
    return read_json(state_path(policy_path))


def check_not_running(policy_path: str | os.PathLike[str]) -> None:
    pid = read_pid(policy_path)
    if pid is not None and pid != os.getpid() and alive_hostsdn(pid):
        raise DaemonError(f"hostsdn is already up for {policy_path} (pid {pid}); "
                          f"run 'hostsdn down {policy_path}' first")


def running_pid(policy_path: str | os.PathLike[str]) -> int:
    """The pid of the live ``hostsdn up`` of ``policy_path`` (``DaemonError`` if none)."""
    pid = read_pid(policy_path)
    if pid is None or not alive_hostsdn(pid):
        raise DaemonError(f"hostsdn is not up for {policy_path} (no live process in "
                          f"{pidfile_path(policy_path)}); start it with 'hostsdn up "
                          f"{policy_path}'")
    return pid
