"""`gpumix replay TRACE [--fleet FILE] [--policy NAME[,NAME…]] [--speedup X] [--profile-claim F] [--json]
[--out DIR] [--minutes]`"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scaler import logs

if TYPE_CHECKING:  # sim is imported only when a replay runs
    from sim.fleet import FleetSpec
    from sim.replay import Result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="Azure CSV (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake JSONL, or a "
                                      "built-in trace: code | diurnal[:seed] | aibrix-ramp[:seed] | "
                                      "conversational[:seed]")
    parser.add_argument("--fleet", default=None, help="fleet YAML (default: the bundled 4-accelerator fleet)")
    parser.add_argument("--policy", default="all",
                        help="comma-separated: gpumix | gpumix-hold[:<seconds>] (plan for the peak demand of the last "
                             "cold start) | hpa-gke[:<variant>] (HPA on waiting+running per pod, GKE's guide) | "
                             "hpa-queue[:<variant>] (HPA on waiting only) | static-peak | oracle (no cold start) | "
                             "clairvoyant[:<MILP seconds>] (knows the future, pays cold starts: the cost bound) | "
                             "all (default)")
    parser.add_argument("--speedup", type=float, default=1.0, help="compress trace time by this factor")
    # sim.engine.ROUTING, written out: the CLI imports sim only when a replay runs (a test keeps them equal)
    parser.add_argument("--routing", default="least-outstanding",
                        choices=("least-outstanding", "round-robin", "plan-weighted", "slo"),
                        help="how the simulated load balancer spreads requests over replicas (slo: AIBrix's "
                             "SLO router, sim/gateway_slo.py)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    parser.add_argument("--profile-claim", type=float, default=1.0, metavar="F",
                        help="the profiles every policy plans with claim F× what the simulated replicas do "
                             "(2: they over-claim twice; the replicas stay as they are)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--minutes", action="store_true",
                        help="also print each policy's run minute by minute: replicas (ready) per variant, and "
                             "requests served / missed per variant by arrival minute")
    # Not the current directory: a run's files go where caches go (XDG), and the command prints their paths.
    parser.add_argument("--out", default=str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                             / "gpumix" / "replay"),
                        help="directory for the PNG and results JSON")


def _table(results: list) -> str:  # type: ignore[type-arg]
    head = (f"{'policy':<34} {'cost $':>8} {'÷ clairv':>8} {'SLO %':>7} {'TTFT p50/p99 s':>16} "
            f"{'TPOT p50/p99 ms':>16} {'dropped':>7} {'scale ev':>8}  GPU-hours")
    lines = [head, "-" * len(head)]
    for r in results:
        gh = ", ".join(f"{k.rsplit('-', 1)[-1]} {v:.2f}" for k, v in r.gpu_hours.items() if v > 0)
        ratio = "-" if r.cost_ratio is None else f"{r.cost_ratio:.2f}"
        lines.append(
            f"{r.policy:<34} {r.cost:>8.2f} {ratio:>8} {100 * r.attainment:>7.2f} "
            f"{r.ttft_p50:>7.2f}/{r.ttft_p99:<8.2f} {1e3 * r.tpot_p50:>7.0f}/{1e3 * r.tpot_p99:<8.0f} "
            f"{r.dropped:>7} {r.scale_events:>8}  {gh}"
        )
    lines += ["", "misses by cause (sim.replay.miss_causes, first matching cause):"]
    for r in results:
        causes = ", ".join(f"{k} {n}" for k, n in r.causes.items() if n)
        lines.append(f"  {r.policy:<32} {causes or 'none'}" + (f"  [{r.notes}]" if r.notes else ""))
    return "\n".join(lines)


def _minutes(spec: FleetSpec, result: Result) -> str:
    from sim.replay import minutes

    def short(variant: str) -> str:
        return variant.rsplit("-", 1)[-1]

    lines = [f"{result.policy}: minute, arrivals, misses | per variant: replicas(ready) served/missed"]
    for row in minutes(spec, result):
        cells = []
        for v in sorted(set(row.replicas) | set(row.served)):
            n, ready = row.replicas.get(v, (0, 0))
            cells.append(f"{short(v)} {n}({ready}) {row.served.get(v, 0)}/{row.missed.get(v, 0)}")
        lines.append(f"  {row.minute:>4} {row.arrivals:>6} {sum(row.missed.values()):>5} | " + "  ".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logs.configure()
    log = logs.get("replay")
    from tqdm import tqdm

    from sim.fleet import FleetError, load_fleet, with_profile_claim
    from sim.plot import plot_results
    from sim.policies import make_policies
    from sim.replay import TraceError, load_trace, replay, with_cost_ratios
    from sim.traces import builtin, compressed

    try:
        spec = with_profile_claim(load_fleet(args.fleet), args.profile_claim)
        known = builtin(args.trace)
        trace = load_trace(args.trace, args.speedup) if known is None else compressed(known, args.speedup)
        names = [n.strip() for n in args.policy.split(",") if n.strip()]
        if not names:
            raise ValueError("--policy: give at least one policy name")
        policies = [p for n in names for p in make_policies(spec, n)]
    except (FleetError, TraceError, ValueError, KeyError) as exc:
        print(f"gpumix replay: {exc}", file=sys.stderr)
        return 2
    log.info("replay", trace=args.trace, requests=len(trace), duration_s=round(trace.duration, 1),
             fleet=spec.source, policies=[p.name for p in policies])
    results = []
    steps = int(trace.duration // 15.0 + 1)
    with tqdm(total=steps * len(policies), desc="replay", unit="cycle", disable=args.json) as bar:
        for policy in policies:
            bar.set_postfix_str(policy.name)
            results.append(replay(spec, trace, policy, seed=args.seed, routing=args.routing,
                                  on_step=lambda _t: bar.update(1)))
    with_cost_ratios(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_results(results, out / "replay.png", title=f"{Path(args.trace).name} on {Path(spec.source).name}")
    doc = {"trace": args.trace, "fleet": spec.source, "slo": spec.slo.to_json(), "profile_claim": spec.profile_claim,
           "results": [r.to_json() for r in results], "png": str(png)}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(_table(results))
        if args.minutes:
            for r in results:
                print("\n" + _minutes(spec, r))
        print(f"\nplot: {png}\nnumbers: {out / 'results.json'}")
    return 0
