"""Every policy against the clairvoyant bound on four traces, in one run: the bundled Azure code trace
(bursty), the synthetic diurnal trace, a seeded reproduction of AIBrix's autoscaler experiment (ramp) and a
smooth conversational trace (sim/traces.py). Same fleet, seed and routing for every policy; per trace a
table (cost, cost ÷ clairvoyant, SLO attainment, misses by cause) and a PNG, and one summary PNG.

    .venv/bin/python -m bench.bench_replay                               # the full run, ~10 min on 2 cores
    .venv/bin/python -m bench.bench_replay --policies gpumix,gpumix-hold:180 --no-write   # after a change
    .venv/bin/python -m bench.bench_replay --max-minutes 20              # every trace cut to 20 min
    .venv/bin/python -m bench.bench_replay --claims 0.5,1,2 --policies gpumix --traces code,conversational
    .venv/bin/python -m bench.bench_replay --routing slo                 # AIBrix's SLO router (sim/gateway_slo.py)

`--routing` other than least-outstanding writes its own sections (`replay-slo-routing`,
`replay-claims-slo-routing`) and plots, so the default ones stay as they are; with it each trace also gets
the drops by reason (the SLO router rejects requests and times them out at its queue).

`--claims` is issue 13's experiment instead: the policies on fleets whose profiles claim F× the simulated
replicas (cost relative to the 1.0× run; no clairvoyant), written to its own section `replay-claims`.

`clairvoyant` is always run (it is the denominator); `--clairvoyant-time-limit` bounds each HiGHS round of
its MILP (up to 3 rounds per trace).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from bench.report import routing_suffix, write_section
from sim.engine import DEFAULT_ROUTING, ROUTING
from sim.fleet import FleetSpec, load_fleet, with_profile_claim
from sim.plot import plot_results
from sim.policies import Policy, Trace, make_policies
from sim.replay import Result, replay, with_cost_ratios, worst_minute
from sim.traces import BUILTIN, builtin, truncated

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
DEFAULT_POLICIES = ("gpumix", "gpumix-hold:180", "gpumix-trend:300", "hpa-gke", "hpa-queue", "static-peak",
                    "oracle")
TITLES = {
    "code": "Azure LLM code trace (bundled, 1 h, bursty)",
    "diurnal": "synthetic diurnal Poisson (seed 1, 1 h, 4 req/s ± 60 %)",
    "aibrix-ramp": "AIBrix autoscaler experiment reproduction (seed 1, ~1000 s, 0.5→2→4→5→1→3 req/s)",
    "conversational": "smooth conversational Poisson (seed 1, 1 h, 5 req/s ± 20 %, chat lengths)",
}
# issue 12's goals for gpumix: (SLO attainment at least, cost ÷ clairvoyant at most)
GOALS = {"code": (0.975, 1.15), "aibrix-ramp": (0.99, 1.10), "diurnal": (0.99, 1.10)}


def run_all(spec: FleetSpec, trace: Trace, names: Sequence[str], seed: int = 0,
            routing: str = DEFAULT_ROUTING) -> tuple[list[Result], dict[str, float]]:
    policies: list[Policy] = [p for n in names for p in make_policies(spec, n)]
    results, seconds = [], {}
    for policy in tqdm(policies, desc="replay", unit="policy", leave=False):
        started = time.process_time()
        results.append(replay(spec, trace, policy, seed=seed, routing=routing))
        seconds[policy.name] = time.process_time() - started
    with_cost_ratios(results)
    return results, seconds


def table(spec: FleetSpec, results: Sequence[Result], seconds: dict[str, float]) -> list[str]:
    kinds = list(results[0].causes) if results else []
    lines = [
        "| policy | cost $ | cost ÷ clairvoyant | SLO attainment | TTFT p99 s | scale events | CPU s | misses: "
        + " / ".join(kinds) + " | worst minute: misses / requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "–" if r.cost_ratio is None else f"{r.cost_ratio:.2f}"
        causes = " / ".join(str(r.causes.get(k, 0)) for k in kinds)
        worst = worst_minute(spec, r)
        at = "–" if worst is None else f"min {worst[0]}: {worst[1]} / {worst[2]}"
        lines.append(f"| {r.policy} | {r.cost:.2f} | {ratio} | {100 * r.attainment:.2f} % | {r.ttft_p99:.1f} | "
                     f"{r.scale_events} | {seconds[r.policy]:.1f} | {causes} | {at} |")
    return lines


def goal_lines(kind: str, results: Sequence[Result]) -> list[str]:
    if kind not in GOALS:
        return []
    slo, ratio = GOALS[kind]
    out = []
    for r in results:
        if not r.policy.startswith("gpumix") or r.cost_ratio is None:
            continue
        ok_slo, ok_cost = r.attainment >= slo, r.cost_ratio <= ratio
        out.append(f"- {r.policy}: SLO {100 * r.attainment:.1f} % (goal ≥ {100 * slo:.1f} %: "
                   f"**{'met' if ok_slo else 'not met'}**), cost {r.cost_ratio:.2f} × clairvoyant "
                   f"(goal ≤ {ratio:.2f}: **{'met' if ok_cost else 'not met'}**)")
    return out


def drop_lines(results: Sequence[Result]) -> list[str]:
    out = []
    for r in results:
        reasons = r.drops()
        if reasons:
            out.append(f"- {r.policy}: dropped " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())))
    return out


def summary_png(runs: dict[str, list[Result]], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.0), squeeze=False)
    for ax, (kind, results) in zip(axes[0], runs.items(), strict=True):
        for r in results:
            if r.cost_ratio is None:
                continue
            marker = "*" if r.policy == "clairvoyant" else ("o" if r.policy.startswith("gpumix") else ".")
            ax.scatter(r.cost_ratio, 100 * r.attainment, marker=marker, s=80 if marker != "." else 40)
            ax.annotate(r.policy.replace("deepseek-coder-7b-", ""), (r.cost_ratio, 100 * r.attainment),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        if kind in GOALS:
            slo, ratio = GOALS[kind]
            ax.axhline(100 * slo, color="grey", lw=0.6, ls="--")
            ax.axvline(ratio, color="grey", lw=0.6, ls="--")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("cost ÷ clairvoyant")
        ax.set_ylabel("SLO attainment %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                    help="comma-separated policy names (sim.policies.make_policies); clairvoyant is added")
    ap.add_argument("--traces", default=",".join(BUILTIN), help=f"comma-separated, from {', '.join(BUILTIN)}")
    ap.add_argument("--max-minutes", type=float, default=None, help="cut every trace to its first N minutes")
    ap.add_argument("--clairvoyant-time-limit", type=float, default=40.0,
                    help="MILP seconds per HiGHS round (up to 3 rounds per trace)")
    ap.add_argument("--profile-claim", type=float, default=1.0, help="profiles claim F× the simulated truth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--routing", default=DEFAULT_ROUTING, choices=ROUTING,
                    help="the simulated gateway's routing, the same for every policy")
    ap.add_argument("--claims", default=None,
                    help="comma-separated profile claims (e.g. 0.5,1,2): issue 13's mis-profiled fleets instead")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    return ap.parse_args(argv)


def claims_run(args: argparse.Namespace, kinds: Sequence[str], names: Sequence[str]) -> str:
    claims = sorted({float(c) for c in args.claims.split(",") if c.strip()})
    base = load_fleet()
    lines = [
        "## Replay with mis-claiming profiles (issue 13's experiment)",
        "The policies plan with profiles whose capacity tables are scaled by F while the simulated replicas "
        f"stay as they are (`gpumix replay --profile-claim F`). Same fleet, seed {args.seed}, {args.routing} "
        "routing. Cost relative to the same policy's 1.0× run.",
        "",
    ]
    for kind in kinds:
        trace = builtin(kind)
        assert trace is not None
        if args.max_minutes:
            trace = truncated(trace, 60.0 * args.max_minutes)
        by: dict[tuple[str, float], Result] = {}
        for claim in claims:
            results, _ = run_all(with_profile_claim(base, claim), trace, names, seed=args.seed,
                                 routing=args.routing)
            by.update({(r.policy, claim): r for r in results})
        lines += [f"### {TITLES[kind]}", "", "| policy | profiles claim | cost $ | cost ÷ 1.0× | SLO attainment | "
                  "misses: cold start / capacity / routing |", "|---|---|---|---|---|---|"]
        for (policy, claim), r in sorted(by.items()):
            ref = by.get((policy, 1.0))
            rel = f"{r.cost / ref.cost:.2f}" if ref is not None and ref.cost > 0 else "–"
            lines.append(f"| {policy} | {claim:g}× | {r.cost:.2f} | {rel} | {100 * r.attainment:.2f} % | "
                         f"{r.causes['cold start']} / {r.causes['capacity/queueing']} / {r.causes['routing']} |")
        lines.append("")
        print("\n".join(lines[-(len(by) + 4):]), flush=True)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.traces.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BUILTIN]
    if unknown:
        raise SystemExit(f"bench_replay: unknown traces {unknown}; use {', '.join(BUILTIN)}")
    if args.claims:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        body = claims_run(args, kinds, names)
        if not args.no_write:
            write_section("replay-claims" + routing_suffix(args.routing), body)
        return 0
    spec = with_profile_claim(load_fleet(), args.profile_claim)
    names = [n.strip() for n in args.policies.split(",") if n.strip() and not n.strip().startswith("clairvoyant")]
    names.append(f"clairvoyant:{args.clairvoyant_time_limit:g}")
    started = time.perf_counter()
    runs: dict[str, list[Result]] = {}
    lines = [
        "## Trace replay: every policy against the clairvoyant bound",
        f"Bundled fleet `sim/fleets/default.yaml` (deepseek-coder-7b on L4, A10G, L40S, A100-80GB; cold start "
        f"150–180 s; SLO TTFT ≤ {spec.slo.ttft} s and TPOT ≤ {spec.slo.tpot} s per request), seed {args.seed}, "
        f"{args.routing} routing, profiles claiming {spec.profile_claim:g}× the simulated replicas. "
        + (f"Every trace cut to its first {args.max_minutes:g} min. " if args.max_minutes else "")
        + "CPU s: replay of one policy on one core (clairvoyant: its MILP included).",
        "",
        "- **clairvoyant** (`sim/clairvoyant.py`): knows the whole trace; ready capacity at utilisation 0.8 "
        "carries the next minute's demand by the fleet's profiles (the oracle's criterion), checked every 15 s; "
        "replica counts change once a minute and every replica is ordered a cold start before it serves and paid "
        "from the order, as the engine bills it. A MILP over the whole trace (cvxpy + HiGHS), replayed through "
        "the same engine. It bounds the criterion, not the SLO: bursts inside the minute, queueing and routing "
        "are outside it, so its attainment is below 100 %. HiGHS stops at its time limit: the schedule replayed is "
        "its best, and the optimum lies between HiGHS's dual bound and it (given per trace), so a ratio against "
        "the optimum could be up to the gap higher than the ratio shown.",
        "- **oracle**: the same criterion with no cold start (replicas ready the moment they are asked for): "
        "not reachable by any real fleet, shown for reference.",
        "- **hpa-gke:<type>**: the HPA as GKE's LLM-inference autoscaling guide sets it up (waiting + running "
        "requests per pod, AverageValue target from a load test: the mean waiting + running one replica holds at "
        "0.8 × its profile's capacity for the trace's length mix; the HPA's default stabilization: scale up at "
        "once, down after 300 s). **hpa-queue:<type>**: "
        "the earlier baseline, waiting requests only (target 3), which swings between 1 and the maximum.",
        "- **static-peak**: the cheapest single type that serves every bucket some type can serve, sized for "
        "the trace's peak minute, fixed.",
        "- Misses by cause: `sim.replay.miss_causes`, first matching cause.",
        "",
    ]
    for kind in kinds:
        trace = builtin(kind)
        assert trace is not None
        if args.max_minutes:
            trace = truncated(trace, 60.0 * args.max_minutes)
        results, seconds = run_all(spec, trace, names, seed=args.seed, routing=args.routing)
        runs[kind] = results
        png = plot_results(results, OUT / f"replay{routing_suffix(args.routing)}-{kind}.png", title=TITLES[kind])
        cv = next(r for r in results if r.policy == "clairvoyant")
        lines += [
            f"### {TITLES[kind]}: {len(trace)} requests over {trace.duration / 60:.0f} min",
            "",
            *table(spec, results, seconds),
            "",
            f"Clairvoyant: {cv.notes}; replayed ${cv.cost:.2f}.",
            *goal_lines(kind, results),
            *(drop_lines(results) if args.routing != DEFAULT_ROUTING else []),
            "",
            f"Plot: `{png.relative_to(ROOT)}`.",
            "",
        ]
        print("\n".join(lines[-(len(results) + 8):]), flush=True)
    summary = summary_png(runs, OUT / f"replay{routing_suffix(args.routing)}-summary.png")
    lines += [f"Summary plot (cost ÷ clairvoyant against SLO, goals dashed): `{summary.relative_to(ROOT)}`. "
              f"Whole run: {(time.perf_counter() - started) / 60:.1f} min wall."]
    body = "\n".join(lines)
    if not args.no_write:
        write_section("replay" + routing_suffix(args.routing), body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
