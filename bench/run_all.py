"""Every benchmark in turn; each rewrites its own section of BENCHMARKS.md. `make bench` runs this."""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    "bench.bench_solver",
    "bench.bench_grpc",
    "bench.bench_cycle",
    "bench.bench_replay",
    "bench.bench_calibration",
    "bench.bench_autofit",
    "bench.bench_outage",
]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
