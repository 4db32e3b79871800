"""Benchmark of the embedded runtime (a measurement to report, not a timed test).

Measures, each in a fresh runtime folder:
- cold `up`: no servers -> standalone + 6-node cluster with cluster_state:ok and every replica linked;
- warm `up`: everything already running (what every notebook and `make lab` pays);
- `down`;
and, with --suite, the wall time of `make test` with a warm venv.

    .venv/bin/python scripts/benchmark_runtime.py [--runs 5] [--suite]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_lib import runtime, servers  # noqa: E402


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--suite", action="store_true", help="also time `make test`")
    args = parser.parse_args()
    cold, warm, down = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            folder = Path(tmp) / f"run-{run}"
            cold.append(timed(lambda: runtime.up(folder)))
            warm.append(timed(lambda: runtime.up(folder)))
            down.append(timed(lambda: runtime.down(folder)))
    stack_engine = servers.find_binary().label
    print(f"engine: {stack_engine}, runs: {args.runs}")
    for name, values in (("cold up", cold), ("warm up", warm), ("down", down)):
        print(f"{name:8} median {statistics.median(values):6.2f} s   min {min(values):6.2f} s   max {max(values):6.2f} s")
    if args.suite:
        repo = Path(__file__).resolve().parent.parent
        seconds = timed(lambda: subprocess.run(["make", "test"], cwd=repo, check=True))
        print(f"make test (warm venv): {seconds:.0f} s")


if __name__ == "__main__":
    main()
