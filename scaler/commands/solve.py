"""`gpumix solve`: the planner on files, for trying profiles and demands before deploying anything."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optimizer.demand import DemandError, parse_demand
from optimizer.profile import Profile, ProfileError, common_grid, load_profile
from optimizer.program import ModelProblem, Plan, PlanError, Planner, PlanRequest, Variant


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profiles", nargs="+", required=True, metavar="PATH",
                   help="profile files (gpumix or AIBrix JSON) or directories of them")
    p.add_argument("--demand", required=True, metavar="FILE",
                   help='JSON {"model": ..., "buckets": [{"input_tokens", "output_tokens", "rps"}]}')
    p.add_argument("--utilization", type=float, default=0.8, help="target utilisation per replica (headroom)")
    p.add_argument("--min", action="append", default=[], metavar="VARIANT=N", help="min replicas of a variant")
    p.add_argument("--max", action="append", default=[], metavar="VARIANT=N", help="max replicas of a variant")
    p.add_argument("--pool", action="append", default=[], metavar="ACCELERATOR=GPUS",
                   help="GPUs available in an accelerator pool")
    p.add_argument("--time-limit", type=float, default=5.0, help="solver time limit, seconds")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def _profile_paths(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return out


def _pairs(items: list[str], flag: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise SystemExit(f"gpumix solve: {flag} {item!r}: expected NAME=NUMBER") from None
    return out


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    try:
        demand_doc = json.loads(Path(args.demand).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"gpumix solve: {args.demand}: cannot read JSON: {exc}", file=sys.stderr)
        return 2
    model = demand_doc.get("model") if isinstance(demand_doc, dict) else None
    profiles: list[Profile] = []
    for path in _profile_paths(args.profiles):
        try:
            profiles.append(load_profile(path, model=model if isinstance(model, str) else None))
        except ProfileError as exc:
            problems.append(str(exc))
    if not profiles and not problems:
        problems.append(f"--profiles {' '.join(args.profiles)}: no profile files found")
    if problems:
        print("gpumix solve: " + "\n  ".join(["bad input:", *problems]), file=sys.stderr)
        return 2
    grid = common_grid(p.grid for p in profiles)
    try:
        demand = parse_demand(demand_doc, grid, args.demand)
    except DemandError as exc:
        print(f"gpumix solve: {exc}", file=sys.stderr)
        return 2
    mins, maxs = _pairs(args.min, "--min"), _pairs(args.max, "--max")
    variants = tuple(
        Variant(
            name=p.variant,
            profile=p,
            min_replicas=int(mins.get(p.variant, 0)),
            max_replicas=int(maxs.get(p.variant, 1000)),
        )
        for p in profiles
    )
    request = PlanRequest(
        models=(ModelProblem(demand, variants),),
        pools=_pairs(args.pool, "--pool"),
        utilization=args.utilization,
        time_limit_s=args.time_limit,
    )
    try:
        plan = Planner().plan(request)
    except PlanError as exc:
        print(f"gpumix solve: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan_json(plan), indent=2) if args.json else plan_table(plan, {p.variant: p for p in profiles}))
    return 0


def plan_json(plan: Plan) -> dict[str, object]:
    return {
        "replicas": plan.replicas(),
        "cost_per_hour": round(plan.cost_per_hour, 6),
        "coverage": round(plan.coverage, 6),
        "status": plan.status,
        "solver": plan.solver,
        "solve_ms": round(plan.solve_ms, 3),
        "models": {
            name: {
                "demand_rps": round(m.demand_rps, 6),
                "served_rps": round(m.served_rps, 6),
                "unservable_rps": round(m.unservable_rps, 6),
                "load_rps": {v: round(float(load.sum()), 6) for v, load in m.load.items()},
                "busy_replicas": {v: round(b, 4) for v, b in m.busy.items()},
            }
            for name, m in plan.models.items()
        },
    }


def plan_table(plan: Plan, profiles: dict[str, Profile]) -> str:
    lines = [f"{'variant':<32} {'accelerator':<14} {'replicas':>8} {'load rps':>10} {'busy':>6} {'$/h':>9}"]
    for m in plan.models.values():
        for v, n in m.replicas.items():
            p = profiles[v]
            lines.append(
                f"{v:<32} {p.accelerator:<14} {n:>8d} {float(m.load[v].sum()):>10.2f} "
                f"{m.busy[v]:>6.2f} {n * p.cost_per_hour:>9.2f}"
            )
        lines.append(
            f"model {m.model}: demand {m.demand_rps:.2f} req/s, served {m.served_rps:.2f}"
            + (f", unservable under the SLO {m.unservable_rps:.2f}" if m.unservable_rps > 0 else "")
        )
    lines.append(
        f"cost {plan.cost_per_hour:.2f}/h  coverage {plan.coverage:.1%}  status {plan.status}  "
        f"solved in {plan.solve_ms:.1f} ms ({plan.solver})"
    )
    return "\n".join(lines)
