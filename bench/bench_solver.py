"""Solve time and plan cost of the gpumix planner, side by side with AIBrix's own solver on identical inputs.

    .venv/bin/python -m bench.bench_solver [--demands 40] [--quick]

For each shape (variants × buckets) it draws a sequence of changing demands and plans each one warm (one
Planner, compiled once), recording the time of the whole `Planner.plan` call. On the same profiles and
demands it runs AIBrix's Mélange solver (`aibrix` 0.8.0's MelangeSolver, PuLP + CBC, 4 slices per bucket,
whole replicas), fetched from PyPI into bench/.cache on first use. Both plan whole replicas at utilisation
1.0 so costs compare like for like; the LP relaxation's cost is the lower bound for both.

Profiles: variant k is one of AIBrix's two llama2-7b profiles (A100, A40) with its capacity scaled by a
deterministic factor in [0.5, 2] and a cost in [0.3, 4] $/h, so that mixes matter. The 16×16 grid comes from
resampling onto a finer geometric grid (conservatively, as the service does).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.report import write_section
from optimizer.demand import Demand
from optimizer.profile import Grid, load_profile, resample
from optimizer.program import ModelProblem, Planner, PlanRequest, Variant

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
AIBRIX_VERSION = "0.8.0"


def variants_for(n: int, grid: Grid) -> tuple[Variant, ...]:
    base = [
        load_profile(REPO / "data/aibrix/simulator-llama2-7b-a100.json", model="m"),
        load_profile(REPO / "data/aibrix/simulator-llama2-7b-a40.json", model="m"),
    ]
    rng = np.random.default_rng(1000 + n)
    out = []
    for k in range(n):
        src = resample(base[k % 2], grid)
        scale = float(rng.uniform(0.5, 2.0))
        cost = round(float(rng.uniform(0.3, 4.0)), 2)
        profile = replace(src, variant=f"v{k}", accelerator=f"acc{k}", cost_per_hour=cost,
                          capacity=src.capacity * scale)
        out.append(Variant(f"v{k}", profile))
    return tuple(out)


def demands_for(grid: Grid, variants: tuple[Variant, ...], count: int, seed: int) -> list[Demand]:
    """Random bucket mixes over the buckets some variant can serve, 20–200 req/s in all."""
    servable = np.any([v.profile.capacity > 0 for v in variants], axis=0).ravel()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        weights = rng.dirichlet(np.full(grid.size, 0.3)) * servable
        weights /= weights.sum()
        out.append(Demand("m", grid, (weights * rng.uniform(20, 200)).reshape(grid.shape)))
    return out


# ------------------------------------------------------------------------------------------- AIBrix


def aibrix_solver() -> Callable[..., object] | None:
    """AIBrix's MelangeSolver from its published wheel (no dependencies but pulp 2.8.0, which it pins)."""
    wheel_dir = CACHE / f"aibrix-{AIBRIX_VERSION}"
    if not (wheel_dir / "aibrix").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"aibrix=={AIBRIX_VERSION}",
                        "-d", str(CACHE)], check=True)
        wheel = next(CACHE.glob(f"aibrix-{AIBRIX_VERSION}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(wheel_dir)
    try:
        importlib.import_module("pulp")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pulp==2.8.0"], check=True)
    # Import the solver module alone: the package __init__ pulls in AIBrix's whole service.
    path = wheel_dir / "aibrix/gpu_optimizer/optimizer/solver/melange"
    sys.path.insert(0, str(path.parent))
    module = importlib.import_module("melange.solver")
    return module.MelangeSolver  # type: ignore[no-any-return]


def run_aibrix(solver_cls: Callable[..., object], variants: tuple[Variant, ...], demand: Demand) -> tuple[float, float]:
    total = demand.total
    gpu_info = {v.name: {"cost": v.profile.cost_per_hour, "tputs": v.profile.capacity.tolist()} for v in variants}
    solver = solver_cls((demand.rates / total).tolist(), total, gpu_info, 4)
    started = time.perf_counter()
    result = solver.run()  # type: ignore[attr-defined]
    elapsed = (time.perf_counter() - started) * 1e3
    if result is None:
        return elapsed, float("nan")
    return elapsed, float(result["cost"])


# -------------------------------------------------------------------------------------------- bench


@dataclass
class Row:
    n_variants: int
    grid: str
    buckets: int
    ms: list[float]
    cost: list[float]
    lp: list[float]
    aibrix_ms: list[float]
    aibrix_cost: list[float]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def bench_shape(n: int, grid_name: str, grid: Grid, count: int, aibrix: Callable[..., object] | None,
                aibrix_count: int, bar: tqdm) -> Row:
    variants = variants_for(n, grid)
    demands = demands_for(grid, variants, count + 1, seed=n * 31 + grid.size)
    planner = Planner()
    lp_planner = Planner()
    row = Row(n, grid_name, grid.size, [], [], [], [], [])
    for k, demand in enumerate(demands):
        request = PlanRequest((ModelProblem(demand, variants),), utilization=1.0, churn=0.0, time_limit_s=10.0)
        plan = planner.plan(request)
        relaxed = lp_planner.plan(replace(request, integer=False))
        bar.update(1)
        if k == 0:
            continue  # the first solve compiles the problem; the service pays that once per shape
        row.ms.append(plan.solve_ms)
        row.cost.append(plan.cost_per_hour)
        m = relaxed.models["m"]
        row.lp.append(sum(v.profile.cost_per_hour * m.busy[v.name] for v in variants))
        if aibrix is not None and k <= aibrix_count:
            ms, cost = run_aibrix(aibrix, variants, demand)
            row.aibrix_ms.append(ms)
            row.aibrix_cost.append(cost)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demands", type=int, default=40, help="demands per shape")
    parser.add_argument("--aibrix-demands", type=int, default=15, help="how many of them AIBrix also solves")
    parser.add_argument("--no-aibrix", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and demands (smoke run)")
    args = parser.parse_args()

    aibrix_grid = load_profile(REPO / "data/aibrix/simulator-llama2-7b-a100.json").grid
    fine = Grid(inputs=tuple(int(x) for x in np.geomspace(64, 8192, 16).round()),
                outputs=tuple(int(x) for x in np.geomspace(4, 1024, 16).round()))
    shapes = [(n, "8×5 (AIBrix)", aibrix_grid) for n in (2, 4, 8, 16)] + [(n, "16×16", fine) for n in (2, 4, 8, 16)]
    if args.quick:
        shapes = [shapes[1], shapes[7]]
        args.demands, args.aibrix_demands = 6, 3
    aibrix = None if args.no_aibrix else aibrix_solver()
    rows = []
    with tqdm(total=len(shapes) * (args.demands + 1), desc="planning", unit="plan") as bar:
        for n, name, grid in shapes:
            # AIBrix's CBC model has 4·buckets·variants binaries: on 16×16 it is solved for fewer demands.
            budget = args.aibrix_demands if grid.size <= 40 else max(2, args.aibrix_demands // 5)
            rows.append(bench_shape(n, name, grid, args.demands, aibrix, budget, bar))

    lines = [
        "## Planner solve time and cost vs AIBrix (Mélange, PuLP/CBC)",
        "",
        f"Warm solves over {args.demands} changing demands per shape (first, compiling solve excluded); "
        "AIBrix's MelangeSolver on the first few of the same demands and profiles. Utilisation 1.0 and whole "
        "replicas for both. `cost/LP` is plan cost over the LP-relaxation bound (1.0 = provably optimal).",
        "",
        "| variants | grid | buckets | gpumix median ms | gpumix p99 ms | AIBrix median ms | speed-up (median) "
        "| gpumix cost/LP | AIBrix cost / gpumix cost |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pairs = [(a, g) for a, g in zip(r.aibrix_cost, r.cost, strict=False) if g > 0 and a == a]
        cost_ratio = statistics.median(a / g for a, g in pairs) if pairs else float("nan")
        worse = sum(1 for a, g in pairs if g > a + 1e-6)
        lp_ratio = statistics.median(c / lp for c, lp in zip(r.cost, r.lp, strict=True) if lp > 0)
        a_med = pct(r.aibrix_ms, 50)
        lines.append(
            f"| {r.n_variants} | {r.grid} | {r.buckets} | {pct(r.ms, 50):.1f} | {pct(r.ms, 99):.1f} | "
            f"{a_med:.1f} | {a_med / pct(r.ms, 50):.1f}× | {lp_ratio:.3f} | "
            f"{cost_ratio:.3f}{f' ({worse} worse)' if worse else ''} |"
        )
    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    by_shape = {(r.n_variants, r.buckets): r for r in rows}
    small, large = by_shape.get((4, 40)), by_shape.get((16, 256))
    speedups = [pct(r.aibrix_ms, 50) / pct(r.ms, 50) for r in rows if r.aibrix_ms]
    never_worse = all(g <= a + 1e-6 for r in rows for a, g in zip(r.aibrix_cost, r.cost, strict=False) if a == a)
    lines += ["", "Goals (issue #2):"]
    if small:
        lines.append(f"- under 10 ms median for 4 variants × 40 buckets: {pct(small.ms, 50):.1f} ms, "
                     f"{verdict(pct(small.ms, 50) < 10)}. The time is HiGHS's fixed branch-and-bound overhead "
                     "(one node, ~50 simplex iterations); cvxpy's parameterised re-solve adds ~5 ms.")
    if large:
        lines.append(f"- under 100 ms median for 16 × 256: {pct(large.ms, 50):.1f} ms, "
                     f"{verdict(pct(large.ms, 50) < 100)}.")
    if speedups:
        lines.append(f"- at least 2× faster than AIBrix: {min(speedups):.1f}× to {max(speedups):.1f}× "
                     f"(median {statistics.median(speedups):.1f}×), {verdict(min(speedups) >= 2)} for every shape.")
    lines.append(f"- equal or lower cost than AIBrix on every demand: {verdict(never_worse)}.")
    text = "\n".join(lines)
    print(text)
    write_section("solver", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
