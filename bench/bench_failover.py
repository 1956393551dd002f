"""Failover of two `gpumix serve --ha redis` replicas: kill -9 the leader N times (a fresh replica joins
after each kill, so there are always two), real Redis and Prometheus on loopback.

    .venv/bin/python -m bench.bench_failover [--kills 20] [--lease 2] [--interval 0.5]

Per kill: takeover time (kill → the survivor's first plan published from fresh data), whether KEDA got an
error from the survivor meanwhile, and whether any answer or published recommendation went below what
was published before the kill; the published history (the HPA's window) must survive every handover.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from bench.report import write_section
from tests.ha.pair import Pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    takeovers: list[float] = []
    acquired: list[float] = []
    errors = decreases = lost_history = 0
    with tempfile.TemporaryDirectory(prefix="gpumix-bench-failover-") as tmp:
        pair = Pair(Path(tmp), args.lease, args.interval)
        try:
            pair.start_replica()
            pair.start_replica()
            for _ in tqdm(range(args.kills), desc="leader kills"):
                pair.wait_ready()
                before = pair.published()
                assert before is not None
                floor = int(before["replicas"])  # type: ignore[call-overload]
                history_before = {tuple(h) for h in before["history"]}  # type: ignore[union-attr]
                _, killed_at = pair.kill_leader()
                survivor = pair.replicas[0]
                took_over = lease_at = None
                deadline = killed_at + args.lease + args.interval + 15
                while time.time() < deadline and took_over is None:
                    answer = survivor.metric()
                    errors += answer is None
                    decreases += answer is not None and answer < floor
                    if lease_at is None and pair.leader_pid() == survivor.proc.pid:
                        lease_at = time.time() - killed_at
                    state = pair.published()
                    if state is not None:
                        decreases += int(state["replicas"]) < floor  # type: ignore[call-overload]
                        if pair.leader_pid() == survivor.proc.pid and float(state["at"]) > killed_at:  # type: ignore[arg-type]
                            took_over = float(state["at"]) - killed_at  # type: ignore[arg-type]
                            after = {tuple(h) for h in state["history"]}  # type: ignore[union-attr]
                            oldest = min(h[0] for h in after)
                            lost_history += not {h for h in history_before if h[0] >= oldest} <= after
                    time.sleep(0.05)
                takeovers.append(float("nan") if took_over is None else took_over)
                acquired.append(float("nan") if lease_at is None else lease_at)
                pair.start_replica()  # back to two
        finally:
            pair.close()
    ok = [t for t in takeovers if t == t]
    got = [t for t in acquired if t == t]
    bound = args.lease + args.interval
    lines = [
        "## Failover: two replicas, one leader (Redis lock with fencing)",
        "",
        f"{args.kills} kills (SIGKILL) of the leader of two `gpumix serve --ha redis` processes, lease "
        f"{args.lease:g} s, interval {args.interval:g} s; a new replica joins after each kill. Takeover = kill → "
        "the survivor's first recommendation planned from fresh data and published in Redis.",
        "",
        "| kills | took over | lease acquired: median / max | first plan: median | p90 | max "
        "| bound (lease + interval) | errors to KEDA | answers or recommendations below the pre-kill value "
        "| windows lost |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.kills} | {len(ok)} | {statistics.median(got):.2f} s / {max(got):.2f} s | "
        f"{statistics.median(ok):.2f} s | {sorted(ok)[int(0.9 * (len(ok) - 1))]:.2f} s | "
        f"{max(ok):.2f} s | {bound:.2f} s | {errors} | {decreases} | {lost_history} |",
        "",
        f"First plan within the bound: {sum(1 for t in ok if t <= bound)} of {args.kills}; lease acquired within it: "
        f"{sum(1 for t in got if t <= bound)} of {args.kills}. The lease is acquired at most a lease "
        "after the dead leader's last renewal plus the survivor's election period, min(lease/3, interval/2); the "
        "survivor plans at once when it wins (one cycle: Prometheus, plan, publish), not at its next interval.",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("failover", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
