"""Run the benchmark suite: ``make bench`` (about ten minutes) or ``--full`` (the issue's sizes).

Each script prints its table and writes JSON under benchmarks/results/; benchmarks/README.md
holds the recorded numbers and the machine they were measured on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: script -> (arguments for the quick suite, arguments for --full)
SCRIPTS = {
    "bench_outcomes.py": (["--quick"], ["--cost"]),
    "bench_real_ope.py": ([], []),
    "bench_planted.py": (["--seeds", "2"], ["--full"]),
    "bench_http.py": (["--quick"], []),
    "bench_batch.py": (["--quick"], []),
    "bench_train.py": (["--quick"], []),
    "bench_scaling.py": (["--quick"], []),
    "bench_quality.py": ([], []),
    "bench_side_info.py": (["--seeds", "2"], ["--seeds", "3"]),
    "bench_spark.py": (["--quick"], ["--full"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run every script at full size")
    parser.add_argument("--only", nargs="*", help="run only these scripts")
    args = parser.parse_args()
    failed = []
    for script, (quick, full) in SCRIPTS.items():
        if args.only and script not in args.only:
            continue
        if not (HERE / script).exists():
            print(f"-- {script}: not present yet, skipped")
            continue
        command = [sys.executable, str(HERE / script), *(full if args.full else quick)]
        print(f"-- {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.call(command) != 0:
            failed.append(script)
        print(f"-- {script}: {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
