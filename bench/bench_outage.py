"""What a 10-minute gpumix outage does to the fleet, per ScaledObject fallback setting and KEDA release, with
KEDA emulated as upstream implements it (sim/outage.py, sim/keda_emulator.py). Deterministic and fast (a
simulated clock); writes the "Outage behaviour" section of BENCHMARKS.md."""

from __future__ import annotations

from typing import Any

from bench.report import write_section
from sim.outage import BEFORE, rendered, run_outage

VERSIONS = [(2, 17), (2, 18), (2, 19), (2, 20)]
CONFIGS: dict[str, dict[str, Any] | None] = {
    "no fallback (render now)": None,
    "replicas 0, currentReplicasIfHigher (render before)": {"failureThreshold": 3, "replicas": 0,
                                                            "behavior": "currentReplicasIfHigher"},
    "replicas 1, currentReplicasIfHigher": {"failureThreshold": 3, "replicas": 1,
                                            "behavior": "currentReplicasIfHigher"},
    "replicas 2, static": {"failureThreshold": 3, "replicas": 2},
}


def main() -> int:
    rows = ["| ScaledObject fallback | gpumix | " + " | ".join(f"KEDA {a}.{b}" for a, b in VERSIONS) + " |",
            "|---|---|" + "---|" * len(VERSIONS)]
    for label, fallback in CONFIGS.items():
        for mode in ("killed", "stale"):
            cells = []
            for version in VERSIONS:
                manifests = rendered()
                if fallback is not None:
                    for m in manifests:
                        m["spec"]["fallback"] = dict(fallback)
                r = run_outage(manifests, version, mode)
                cells.append(f"−{r.serving_lost} / +{r.idle_started} / {r.extra_replica_hours:.2f} h")
            rows.append(f"| {label} | {mode} | " + " | ".join(cells) + " |")
    serving = sum(1 for n in BEFORE.values() if n)
    body = f"""## Outage behaviour: 10 minutes without gpumix, per fallback setting and KEDA release

Fleet: {serving} serving variants ({', '.join(f'{v} × {n}' for v, n in BEFORE.items() if n)}) and
{len(BEFORE) - serving} idle ones, cooldownPeriod and scale-down window 300 s, polling and HPA sync 15 s.
gpumix `killed` (every rpc refused) or `stale` (up, GetMetrics UNAVAILABLE). Each cell: serving replicas lost
at the worst moment / idle replicas started / replica-hours run beyond holding the fleet as it was.
What render writes (no fallback) loses and starts nothing on every release; see deploy/README.md,
"When gpumix is down".

{chr(10).join(rows)}
"""
    write_section("outage", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
