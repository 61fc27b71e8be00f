"""Start-up of the hostsdn command: ``hostsdn --help`` and the example replay.

Each command runs as a fresh process (what a user waits for), N times, interleaved with
its peers so that load on the machine hits them alike; the table gives the median and
the fastest run, and the ratio of the medians to bare ``python3 -c pass`` (the floor: an
interpreter that does nothing) measured in the same run.  Peers: ``import click`` (the
floor of any click program) and ``import pydantic`` (what the policy schema costs before
a model is built).  ``hostsdn`` is run the way its console script runs it (``from
hostsdn.cli.main import main; main()``) from this checkout's ``src``.

    python3 bench/bench_cli_startup.py [--runs N] [--compare SRC]

``--compare SRC`` also runs the hostsdn commands from another checkout's ``src`` (say, a
worktree of an older commit) in the same interleaved rounds, as "(compare)" rows.

To see where the time goes: ``PYTHONPATH=src python3 -X importtime -m hostsdn.cli.main
replay examples/policy.yaml examples/example.pcap --json > /dev/null``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "import sys; from hostsdn.cli.main import main; sys.argv[0] = 'hostsdn'; main()"
REPLAY = ["replay", "examples/policy.yaml", "examples/example.pcap", "--json"]

CASES: list[tuple[str, list[str], str]] = [
    ("python3 -c pass", ["-c", "pass"], "floor"),
    ("python3 -c 'import click'", ["-c", "import click"], "peer"),
    ("python3 -c 'import pydantic'", ["-c", "import pydantic"], "peer"),
    ("hostsdn --help", ["-c", CLI, "--help"], "< 0.15 s"),
    ("hostsdn replay --help", ["-c", CLI, "replay", "--help"], ""),
    ("hostsdn replay <example> --json", ["-c", CLI, *REPLAY], "< 0.4 s"),
]


def run_once(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    parser.add_argument("--compare", type=Path, default=None, metavar="SRC",
                        help="also run the hostsdn commands from this src folder")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cases = [(name, argv, aim, env) for name, argv, aim in CASES]
    if args.compare is not None:
        other = dict(os.environ, PYTHONPATH=str(args.compare.resolve()))
        cases += [(f"{name} (compare)", argv, "", other) for name, argv, _ in CASES
                  if name.startswith("hostsdn")]
    times: dict[str, list[float]] = {name: [] for name, _, _, _ in cases}
    for _, argv, _, e in cases:                    # warm the file cache and .pyc files
        run_once(argv, e)
    for _ in range(args.runs):
        for name, argv, _, e in cases:
            times[name].append(run_once(argv, e))
    floor = statistics.median(times["python3 -c pass"])
    print(f"hostsdn start-up: {args.runs} runs each, interleaved; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    header = ("command", "median ms", "fastest ms", "median / python -c pass", "aim")
    rows = []
    for name, _, aim, _ in cases:
        med = statistics.median(times[name])
        rows.append((name, f"{med * 1000:.0f}", f"{min(times[name]) * 1000:.0f}",
                     f"{med / floor:.2f}x", aim))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for i, row in enumerate((header, *rows)):
        print("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
