"""Build the XDP object (``bpf/hostsdn.bpf.c`` -> ``hostsdn.bpf.o``) with clang.

The object is cached: by default in ``$HOSTSDN_CACHE_DIR`` or ``~/.cache/hostsdn/xdp``
(``$XDG_CACHE_HOME`` respected), under a name derived from a hash of every source file,
the compiler version and the flags, so that changing any source rebuilds it and an
unchanged tree never does.  ``build_object(out_dir)`` writes ``out_dir/hostsdn.bpf.o``
instead (rebuilt when the sources' hash in the ``.stamp`` next to it differs).

Command line (CI): ``python -m hostsdn.nic.xdp.build [--out-dir DIR] [--force]`` prints
the object's path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostsdn.errors import NicError

__all__ = ["BPF_SOURCE_DIR", "OBJECT_NAME", "build_object", "clang_command", "source_digest"]

BPF_SOURCE_DIR = Path(__file__).resolve().parent / "bpf"
"""Directory of the BPF C sources (hostsdn.bpf.c and its headers)."""
OBJECT_NAME = "hostsdn.bpf.o"
MAIN_SOURCE = "hostsdn.bpf.c"


def _clang() -> str:
    clang = os.environ.get("HOSTSDN_CLANG") or shutil.which("clang")
    if not clang:
        raise NicError("clang not found: install it (apt-get install clang llvm libbpf-dev) "
                       "or set HOSTSDN_CLANG")
    return clang


def clang_command(clang: str, source: Path, output: Path) -> list[str]:
    """The compiler invocation (docs: PLATFORM.md build flags)."""
    machine = os.uname().machine
    return [clang, "-target", "bpf", "-O2", "-g", "-Wall",
            f"-I/usr/include/{machine}-linux-gnu", "-c", str(source), "-o", str(output)]


def source_digest(clang: str | None = None) -> str:
    """Hash of the sources, the compiler identity and the flags."""
    h = hashlib.sha256()
    for path in sorted(BPF_SOURCE_DIR.iterdir()):
        if path.suffix in (".c", ".h") and path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    if clang is not None:
        try:
            version = subprocess.run([clang, "--version"], capture_output=True, text=True,
                                     check=False).stdout
        except OSError as exc:
            raise NicError(f"cannot run {clang}: {exc}") from exc
        h.update(version.encode())
        h.update(" ".join(clang_command("clang", Path("in"), Path("out"))).encode())
    return h.hexdigest()


def _default_cache_dir() -> Path:
    env = os.environ.get("HOSTSDN_CACHE_DIR")
    if env:
        return Path(env) / "xdp"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hostsdn" / "xdp"


def _compile(clang: str, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".hostsdn.", suffix=".o", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run(clang_command(clang, BPF_SOURCE_DIR / MAIN_SOURCE, tmp),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NicError(f"clang failed to build {MAIN_SOURCE} (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
        os.replace(tmp, output)        # atomic: concurrent builders never see half a file
    finally:
        tmp.unlink(missing_ok=True)


PRUNE_AFTER_S = 7 * 24 * 3600
"""Objects of other sources are kept this long after their last use: two checkouts (or two
installed versions) that share the cache dir must not delete each other's object between
its build and its load."""


def _prune(cache: Path, keep: Path, now: float) -> None:
    """Remove objects built from other sources and unused for PRUNE_AFTER_S (best effort:
    another process may be using or pruning them)."""
    for child in cache.iterdir():
        if child == keep or not child.is_dir() or len(child.name) != 16:
            continue
        try:
            idle = now - child.stat().st_mtime
        except FileNotFoundError:
            continue
        if idle > PRUNE_AFTER_S:
            shutil.rmtree(child, ignore_errors=True)


def build_object(out_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Compile the XDP program if needed and return the object's path.

    Raises NicError when clang is missing or the compile fails (stderr in the message).
    """
    clang = _clang()
    digest = source_digest(clang)
    if out_dir is None:
        cache = _default_cache_dir()
        output = cache / digest[:16] / OBJECT_NAME
        if force or not output.exists():
            _compile(clang, output)
            _prune(cache, keep=output.parent, now=time.time())
        else:
            os.utime(output.parent)        # last use: what _prune measures idleness by
        return output
    output = Path(out_dir) / OBJECT_NAME
    stamp = output.with_name(OBJECT_NAME + ".stamp")
    fresh = (output.exists() and stamp.exists()
             and stamp.read_text(encoding="ascii").strip() == digest)
    if force or not fresh:
        _compile(clang, output)
        stamp.write_text(digest + "\n", encoding="ascii")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hostsdn.nic.xdp.build",
                                     description="Build the hostsdn XDP object.")
    parser.add_argument("--out-dir", help="write hostsdn.bpf.o here (default: cache dir)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        path = build_object(args.out_dir, force=args.force)
    except NicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
