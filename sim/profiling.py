"""Profiles of simulated variants, obtained the way AIBrix's `aibrix_benchmark` obtains real ones: one
replica, for every (input, output) cell of a grid and every offered rate, 100 requests with Poisson
arrivals, then TPUT/TT/E2E/TTFT/TPOT rows (mean, P50, P90, P99), and `optimizer.profile.derive_profile`
under the fleet's SLO. Nothing is read off the analytical model directly: the profile is what the
simulator measurably does, queueing included.

`python -m sim.profiling [--fleet FILE] [--out DIR]` rewrites the bundled fleet's profiles.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from optimizer.profile import BenchmarkRow, Profile, derive_profile
from sim.engine import Completion, Fleet, Request
from sim.fleet import FleetSpec, VariantSpec, load_fleet

# aibrix_benchmark's sweep (reference/aibrix-gpu-optimizer.md) restricted to the cells its published
# llama2-7b profiles cover.
AIBRIX_INPUTS = (128, 256, 512, 1024, 2048)
AIBRIX_OUTPUTS = (4, 8, 16, 32, 64, 128, 256, 512)
AIBRIX_RATES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# Ours: longer prompts (code traces reach 8k) and half-octave rates, so capacity is not rounded down to a
# power of two.
FLEET_INPUTS = (128, 256, 512, 1024, 2048, 4096, 8192)
FLEET_OUTPUTS = (4, 8, 16, 32, 64, 128, 256, 512)
FLEET_RATES = tuple(float(2 ** (k / 2)) for k in range(-4, 13))  # 0.25 … 64 req/s
SAMPLES = 100


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": 0.0, "P50": 0.0, "P90": 0.0, "P99": 0.0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "P50": float(p50), "P90": float(p90), "P99": float(p99)}


def measure_point(
    variant: VariantSpec, fleet: FleetSpec, input_tokens: int, output_tokens: int, rate: float,
    samples: int = SAMPLES, seed: int = 0,
) -> list[BenchmarkRow]:
    """One benchmark point on one fresh, warm replica."""
    one = replace(variant, initial_replicas=1, cold_start_s=0.0)
    sim = Fleet(replace(fleet, variants=(one,), max_queue_s=1e9), seed=seed)
    rng = random.Random(hash((seed, input_tokens, output_tokens, rate)) & 0xFFFFFFFF)
    t = 0.0
    for _ in range(samples):
        t += rng.expovariate(rate)
        sim.submit(Request(input_tokens, output_tokens), t)
    done: list[Completion] = []
    horizon = t
    while sim.in_flight and horizon < t + 1e6:
        horizon += 600.0
        done.extend(sim.advance(horizon))
    ok = [c for c in done if not c.dropped]
    first = min(c.arrival for c in done) if done else 0.0
    last = max(c.finish for c in ok) if ok else first
    duration = max(last - first, 1e-9)
    tput = len(ok) / duration
    base = {"input_tokens": input_tokens, "output_tokens": output_tokens, "request_rate": rate}
    rows = [
        BenchmarkRow(**base, metric="TPUT", mean=tput),
        BenchmarkRow(**base, metric="TT", mean=tput * (input_tokens + output_tokens)),
    ]
    for metric, vals in (
        ("E2E", [c.e2e for c in ok]),
        ("TTFT", [c.ttft or 0.0 for c in ok]),
        ("TPOT", [c.tpot or 0.0 for c in ok]),
    ):
        s = _stats(vals)
        rows.append(BenchmarkRow(**base, metric=metric, mean=s["mean"], p50=s["P50"], p90=s["P90"], p99=s["P99"]))
    return rows


def sweep_points(
    inputs: Sequence[int], outputs: Sequence[int], rates: Sequence[float]
) -> Iterator[tuple[int, int, float]]:
    for o in outputs:
        for i in inputs:
            for r in rates:
                yield i, o, r


def benchmark_variant(
    variant: VariantSpec, fleet: FleetSpec, inputs: Sequence[int] = FLEET_INPUTS,
    outputs: Sequence[int] = FLEET_OUTPUTS, rates: Sequence[float] = FLEET_RATES,
    samples: int = SAMPLES, seed: int = 0, progress: bool = False,
) -> list[BenchmarkRow]:
    points = list(sweep_points(inputs, outputs, rates))
    iterator: Sequence[tuple[int, int, float]] = points
    if progress:
        from tqdm import tqdm

        iterator = tqdm(points, desc=variant.name, unit="pt")
    rows: list[BenchmarkRow] = []
    for i, o, r in iterator:
        if i + o > variant.perf.kv_capacity_tokens:
            continue  # the server would reject it: no row, so the cell stays 0
        rows.extend(measure_point(variant, fleet, i, o, r, samples, seed))
    return rows


def variant_profile(
    variant: VariantSpec, fleet: FleetSpec, rows: Sequence[BenchmarkRow], created: float = 0.0
) -> Profile:
    profile = derive_profile(
        rows, fleet.slo, model=fleet.model, variant=variant.name, accelerator=variant.accelerator,
        cost_per_hour=variant.cost_per_hour, gpus_per_replica=variant.gpus, created=created,
    )
    return profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.profiling", description=__doc__)
    parser.add_argument("--fleet", default=None, help="fleet YAML (default: the bundled one)")
    parser.add_argument("--out", default=None, help="directory for profile JSON (default: next to the fleet)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fleet = load_fleet(args.fleet)
    for v in fleet.variants:
        rows = benchmark_variant(v, fleet, seed=args.seed, progress=True)
        profile = variant_profile(v, fleet, rows)
        path = Path(args.out) / f"{v.name}.json" if args.out else v.profile_path
        if path is None:
            path = Path(fleet.source).parent / "profiles" / f"{v.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(profile.to_json()) + "\n")
        cap = profile.capacity
        print(f"{v.name}: {path} — servable cells {int((cap > 0).sum())}/{cap.size}, "
              f"max {cap.max():.2f} req/s, at (2048 in, 32 out) {cap[3, 4]:.2f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
