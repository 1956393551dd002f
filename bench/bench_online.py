"""Issue 13's experiment: fleets whose profiles claim F× the simulated truth, replayed through the service's
own Controller with the online calibration on (`gpumix`) and off (`gpumix-uncalibrated`, the baseline: as
before issue 13), same fleet, seed and routing. Reports, per trace and claim, overall SLO attainment and
cost, attainment after the first 10 minutes, cost after the first 30 minutes against the uncalibrated 1.0×
run over the same span, and plots each calibrated run's factors, utilisation target and attainment.

    .venv/bin/python -m bench.bench_online [--traces code,diurnal,conversational] [--claims 0.5,1,2]
                                          [--max-minutes N] [--jobs 2] [--no-write] [--routing slo]
                                          [--trace-seeds 2,3]

A `--routing` other than least-outstanding (e.g. `slo`, AIBrix's SLO router, sim/gateway_slo.py) writes its
own section `online-calibration-<routing>-routing` and plot, with the drops by reason per run.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import structlog
from tqdm import tqdm

from bench.report import routing_suffix, write_section
from sim.engine import DEFAULT_ROUTING, ROUTING
from sim.fleet import load_fleet, with_profile_claim
from sim.policies import Gpumix, make_policies
from sim.replay import meets_slo, replay
from sim.traces import builtin, truncated

OUT = Path(__file__).resolve().parent / "out"
TITLES = {"code": "Azure LLM code trace (bursty)", "diurnal": "synthetic diurnal Poisson",
          "conversational": "smooth conversational Poisson"}
POLICIES = ("gpumix", "gpumix-uncalibrated")
SEEDED = ("diurnal", "conversational")  # synthetic: the tables' trace is seed 1, `--trace-seeds` draws more
RECOVER_S, SETTLE_S = 600.0, 1800.0  # the "within 10 minutes" and "within 30 minutes"


@dataclass(frozen=True)
class Run:
    trace: str
    claim: float
    policy: str
    attainment: float
    cost: float
    attainment_after: float  # requests arriving after RECOVER_S
    cost_after: float  # $ spent after SETTLE_S
    cost_times: tuple[float, ...]
    cost_curve: tuple[float, ...]
    calibration: tuple[tuple[float, dict[str, float], float, float | None], ...]
    causes: tuple[tuple[str, int], ...] = ()
    drops: tuple[tuple[str, int], ...] = ()  # dropped requests by reason


def one(job: tuple[str, float, str, float | None, int, str]) -> Run:
    kind, claim, name, minutes, seed, routing = job
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    trace = builtin(kind)
    assert trace is not None
    if minutes:
        trace = truncated(trace, 60.0 * minutes)
    spec = with_profile_claim(load_fleet(), claim)
    (policy,) = make_policies(spec, name)
    result = replay(spec, trace, policy, seed=seed, routing=routing)
    later = [c for c in result.completions if c.arrival >= RECOVER_S]
    after = sum(meets_slo(c, spec) for c in later) / len(later) if later else float("nan")
    times, cost = result.series.times, result.series.cost
    at_settle = next((c for t, c in zip(times, cost, strict=False) if t >= SETTLE_S), cost[-1] if cost else 0.0)
    trail = tuple(policy.calibration_trace) if isinstance(policy, Gpumix) else ()
    return Run(kind, claim, name, result.attainment, result.cost, after, result.cost - at_settle, tuple(times),
               tuple(cost), trail, tuple(result.causes.items()),
               tuple(sorted(result.drops().items())))


def table(runs: Sequence[Run], kind: str) -> list[str]:
    base = next((r for r in runs if r.claim == 1.0 and r.policy == "gpumix-uncalibrated"), None)
    lines = [f"### {TITLES.get(kind, kind)}", "",
             "| profiles claim | policy | SLO attainment | after 10 min | cost $ "
             "| cost after 30 min ÷ uncalibrated 1.0× | misses: routing / cold start / capacity/queueing |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in sorted(runs, key=lambda r: (r.claim, r.policy)):
        rel = f"{r.cost_after / base.cost_after:.2f}" if base is not None and base.cost_after > 0 else "–"
        causes = dict(r.causes)
        lines.append(f"| {r.claim:g}× | {r.policy} | {100 * r.attainment:.2f} % | {100 * r.attainment_after:.2f} % | "
                     f"{r.cost:.2f} | {rel} | {causes.get('routing', 0)} / {causes.get('cold start', 0)} / "
                     f"{causes.get('capacity/queueing', 0)} |")
    return lines


@dataclass(frozen=True)
class Check:
    value: float  # what the goal is judged on (attainment, cost ratio or saving)
    met: bool
    line: str  # as BENCHMARKS states it


def goal_checks(runs: Sequence[Run], kind: str) -> dict[str, Check]:
    """The issue's three goals for one trace and seed, judged from the same run, by claim ("2.0×", ...)."""
    by = {(r.claim, r.policy): r for r in runs}
    base, out = by.get((1.0, "gpumix-uncalibrated")), {}
    over, under, exact = by.get((2.0, "gpumix")), by.get((0.5, "gpumix")), by.get((1.0, "gpumix"))
    smooth = not kind.startswith("code")

    def verdict(met: bool) -> str:
        return "met" if met else "not met"

    if over is not None and base is not None:
        want = 0.99 if smooth else base.attainment
        met = over.attainment_after >= want
        out["2.0×"] = Check(over.attainment_after, met, (
            f"- 2.0×: attainment after 10 min {100 * over.attainment_after:.2f} % (goal ≥ {100 * want:.2f} %"
            f"{'' if smooth else ', the uncalibrated 1.0× run'}): **{verdict(met)}**"))
    if under is not None and base is not None and base.cost_after > 0:
        ratio = under.cost_after / base.cost_after
        out["0.5×"] = Check(ratio, ratio <= 1.25, f"- 0.5×: cost after 30 min {ratio:.2f}× the uncalibrated 1.0× "
                                                  f"run's (goal ≤ 1.25): **{verdict(ratio <= 1.25)}**")
    if smooth and exact is not None and base is not None:
        saving = 1 - exact.cost / base.cost
        met = saving >= 0.15 and exact.attainment >= 0.995
        out["1.0×"] = Check(saving, met, (
            f"- 1.0×: {100 * saving:.1f} % cheaper than uncalibrated at {100 * exact.attainment:.2f} % "
            f"(goal ≥ 15 % at ≥ 99.5 %): **{verdict(met)}**"))
    return out


def goals(runs: Sequence[Run], kind: str) -> list[str]:
    return [check.line for check in goal_checks(runs, kind).values()]


def other_seeds(runs: Sequence[Run], kind: str, seeds: Sequence[int]) -> list[str]:
    """The same goals on the trace drawn with other seeds: one seed can meet a goal by luck (the 2× runs move
    ±1 point from one draw of the same traffic to the next)."""
    per = {seed: goal_checks([r for r in runs if r.trace == f"{kind}:{seed}"], kind) for seed in seeds}
    shown = {"2.0×": lambda v: f"{100 * v:.2f} %", "0.5×": lambda v: f"{v:.2f}×", "1.0×": lambda v: f"{100 * v:.1f} %"}
    parts = []
    for name, fmt in shown.items():
        got = [per[seed][name] for seed in seeds if name in per[seed]]
        if got:
            met = sum(check.met for check in got)
            parts.append(f"{name} {' / '.join(fmt(check.value) for check in got)} ({met} of {len(got)} met)")
    return [f"- trace seeds {', '.join(map(str, seeds))}: " + "; ".join(parts)] if parts else []


def plot(runs: Sequence[Run], path: Path) -> Path:
    calibrated = sorted((r for r in runs if r.policy == "gpumix"), key=lambda r: (r.trace, r.claim))
    fig, axes = plt.subplots(len(calibrated), 2, figsize=(11, 2.4 * max(1, len(calibrated))), squeeze=False)
    for row, r in zip(axes, calibrated, strict=True):
        times = [t / 60 for t, *_ in r.calibration]
        for variant in sorted({v for _, f, _, _ in r.calibration for v in f}):
            factors = [f.get(variant, float("nan")) for _, f, _, _ in r.calibration]
            row[0].plot(times, factors, label=variant.rsplit("-", 1)[-1])
        row[0].set_ylabel(f"{r.trace} {r.claim:g}×\nfactor k")
        row[0].axhline(1.0 / r.claim, color="grey", ls=":", lw=1)  # the truth: claim × k = 1
        row[0].legend(fontsize=6, loc="upper right")
        row[1].plot(times, [u for _, _, u, _ in r.calibration], label="utilisation target u")
        row[1].plot(times, [a if a is not None else float("nan") for *_, a in r.calibration], ".", ms=2,
                    label="attainment (window)")
        row[1].axhline(0.99, color="grey", ls=":", lw=1)
        row[1].set_ylim(0.4, 1.02)
        row[1].legend(fontsize=6, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle("online calibration: factors (dotted: 1 / claim) and headroom over time")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default="code,diurnal,conversational")
    ap.add_argument("--claims", default="0.5,1,2")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace-seeds", default="2,3",
                    help="the synthetic traces also drawn with these seeds (the tables show seed 1); '' for none")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--routing", default=DEFAULT_ROUTING, choices=ROUTING,
                    help="the simulated gateway's routing, the same for every run")
    args = ap.parse_args(argv)
    kinds = [k for k in args.traces.split(",") if k]
    claims = sorted({float(c) for c in args.claims.split(",") if c})
    seeds = [int(x) for x in args.trace_seeds.split(",") if x]
    traces = [*kinds, *(f"{k}:{seed}" for k in kinds if k in SEEDED for seed in seeds)]
    jobs = [(k, c, p, args.max_minutes, args.seed, args.routing) for k in traces for c in claims for p in POLICIES]
    suffix = routing_suffix(args.routing)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(tqdm(pool.map(one, jobs), total=len(jobs), desc="replays", unit="run"))
    lines = ["## Online calibration: mis-claiming profiles, calibration on and off (issue 13)",
             "The fleet's profiles claim F× what the simulated replicas do; `gpumix` runs the service's Controller "
             "with its default calibration (scaler/config.py), `gpumix-uncalibrated` the same with "
             f"`calibration: false`. Seed {args.seed}, {args.routing} routing. \"after 10 min\": requests "
             "arriving after 600 s; \"cost after 30 min\": $ spent after 1800 s, against the uncalibrated 1.0× "
             "run." + (" The synthetic traces' tables are trace seed 1; their goals are judged again on the same "
                       f"traffic drawn with seeds {', '.join(map(str, seeds))}." if seeds else ""), ""]
    for kind in kinds:
        mine = [r for r in runs if r.trace == kind]
        drops = [f"- {r.claim:g}× {r.policy}: dropped " + ", ".join(f"{n} {why}" for why, n in r.drops)
                 for r in sorted(mine, key=lambda r: (r.claim, r.policy)) if r.drops]
        more = other_seeds(runs, kind, seeds) if kind in SEEDED else []
        section = [*table(mine, kind), "", *goals(mine, kind), *more,
                   *(drops if args.routing != DEFAULT_ROUTING else []), ""]
        lines += section
        print("\n".join(section), flush=True)
    png = plot([r for r in runs if r.trace in kinds], OUT / f"online-calibration{suffix}.png")
    lines.append(f"Plot: `bench/out/{png.name}`.")
    if not args.no_write:
        write_section("online-calibration" + suffix, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
