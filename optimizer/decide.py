"""One control cycle's decision, as a pure function: what each variant should run now.

    decide(models, history, now, settings, planner) -> Decision

Per model, in order:
1. Variants without a usable profile are left out of the plan and get no recommendation (the service
   answers NOT_FOUND for them rather than guessing: AIBrix scaled such Deployments anyway, aibrix#507).
2. A model whose demand is unknown this cycle (Prometheus down, empty or stale answer) is not planned: its
   variants keep their last recommendation. Missing data never shrinks a fleet.
3. Plan every plannable model together (they share accelerator pools): the *steady* plan, bounded below
   only by `min_replicas`, is the fleet to converge to.
4. The HPA keeps the highest recommendation of its scale-down window running; those replicas are paid for
   anyway. If a variant is held above its steady count for longer than the model's hold lead (the longest
   cold start among its variants plus a cycle, so a replacement is ready before the hold ends), plan again
   with those holds as lower bounds:
   the other variants then buy only what the held capacity does not cover. A held variant itself always
   publishes its steady count, so its hold ages out instead of being renewed by its own publication.
5. Publish what each variant's planned work needs, ceil(busy / u) (at least min_replicas), then apply
   hysteresis against the last recommendation: scale down only when the smaller count still carries the
   planned work with a margin (no 2 ↔ 1 flapping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S
from optimizer.demand import Demand
from optimizer.profile import Profile, common_grid
from optimizer.program import (
    DEFAULT_MAX_REPLICAS,
    ModelPlan,
    ModelProblem,
    Plan,
    Planner,
    PlanRequest,
    Variant,
    components,
)
from optimizer.stabilize import held_replicas, hysteresis

History = Mapping[str, Sequence[tuple[float, int]]]  # variant -> [(time, published recommendation)]


@dataclass(frozen=True)
class VariantState:
    """What is known about one variant this cycle."""

    name: str
    profile: Profile | None  # None: no profile, or an invalid one
    min_replicas: int = 0
    max_replicas: int = DEFAULT_MAX_REPLICAS
    current_replicas: int | None = None
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    pool: str | None = None
    gpus_per_replica: int | None = None  # overrides the profile's when the inventory knows better


@dataclass(frozen=True)
class ModelState:
    model: str
    demand: Demand | None  # None: unknown this cycle
    variants: tuple[VariantState, ...]
    # How long before a hold ends its replacement must be ordered: the longest cold start among the model's
    # variants plus a cycle. None: Settings.hold_lead_s.
    hold_lead_s: float | None = None


@dataclass(frozen=True)
class Settings:
    utilization: float = 0.8
    churn: float = 0.05
    hysteresis_margin: float = 0.1
    pools: Mapping[str, float] = field(default_factory=dict)
    time_limit_s: float = 2.0
    hold_lead_s: float = 120.0  # a model's hold lead when its state gives none


@dataclass(frozen=True)
class Decision:
    recommendations: dict[str, int]  # variant -> replicas; absent: nothing to publish for it
    reasons: dict[str, str]  # variant -> why it has (or lacks) its recommendation
    plan: Plan | None  # the plan the recommendations come from (with holds, when holds were used)
    held: dict[str, int]  # replicas the HPA keeps anyway, counted as capacity this cycle
    steady: Plan | None = None  # the plan without holds: where the fleet converges

    def model_plan(self, model: str) -> ModelPlan | None:
        return None if self.plan is None else self.plan.models.get(model)


def _last(history: History, variant: str) -> int | None:
    entries = history.get(variant)
    return entries[-1][1] if entries else None


def decide(
    models: Sequence[ModelState],
    history: History,
    now: float,
    settings: Settings,
    planner: Planner,
) -> Decision:
    recommendations: dict[str, int] = {}
    reasons: dict[str, str] = {}
    held: dict[str, int] = {}
    problems: list[ModelProblem] = []
    previous: dict[str, int] = {}

    for state in models:
        usable = [v for v in state.variants if v.profile is not None]
        for v in state.variants:
            if v.profile is None:
                reasons[v.name] = "no usable profile: not scaled by gpumix"
        if state.demand is None or not usable:
            for v in usable:
                last = _last(history, v.name)
                if last is not None:
                    recommendations[v.name] = last
                    reasons[v.name] = "demand unknown this cycle: keeping the last recommendation"
                else:
                    reasons[v.name] = "demand unknown and nothing published yet"
            continue
        grid = common_grid(v.profile.grid for v in usable if v.profile is not None)
        lead = settings.hold_lead_s if state.hold_lead_s is None else state.hold_lead_s
        variants = []
        for v in usable:
            assert v.profile is not None
            profile = v.profile
            if v.gpus_per_replica is not None and v.gpus_per_replica != profile.gpus_per_replica:
                profile = replace(profile, gpus_per_replica=v.gpus_per_replica)
            window = max(0.0, v.scale_down_window_s - lead)
            held[v.name] = min(held_replicas(history.get(v.name, ()), now, window), v.max_replicas)
            last = _last(history, v.name)
            if last is not None:
                previous[v.name] = last
            variants.append(
                Variant(
                    name=v.name,
                    profile=profile,
                    min_replicas=min(v.min_replicas, v.max_replicas),
                    max_replicas=v.max_replicas,
                    previous_replicas=last if last is not None else v.current_replicas,
                    pool=v.pool,
                )
            )
        problems.append(ModelProblem(state.demand.on(grid), tuple(variants)))

    if not problems:
        return Decision(recommendations, reasons, None, held)

    steady = _plan(planner, problems, settings, settings.time_limit_s)
    steady_needs = _needs(steady, settings.utilization)
    releasing = {name for name, n in held.items() if name in steady_needs and n > steady_needs[name]}
    plan = steady
    if releasing:
        replan = _linked(problems, releasing, settings.pools)
        with_holds = [
            ModelProblem(mp.demand, tuple(replace(v, held_replicas=held[v.name]) for v in mp.variants))
            for mp in problems if mp.demand.model in replan
        ]
        # One time limit for the cycle's planning, not one per plan.
        left = max(0.0, settings.time_limit_s - steady.solve_ms / 1e3)
        plan = steady.overlay(_plan(planner, with_holds, settings, left))
    needs = _needs(plan, settings.utilization)
    busy = {name: b for mp in plan.models.values() for name, b in mp.busy.items()}
    for name in releasing:  # publish the steady count so the hold ages out
        needs[name] = steady_needs[name]
        busy[name] = next(m.busy[name] for m in steady.models.values() if name in m.busy)
    final = hysteresis(needs, busy, previous, settings.utilization, settings.hysteresis_margin)
    by_greedy = {v for m in plan.greedy for v in plan.models[m].replicas}
    for name, n in final.items():
        recommendations[name] = n
        if n != needs[name]:
            reasons[name] = f"planned {needs[name]}; kept {n} until the smaller fleet fits with margin"
        elif name in releasing:
            reasons[name] = f"held by the HPA at {held[name]}; its capacity is used while the hold lasts"
        elif name in by_greedy:
            reasons[name] = plan.status
        else:
            reasons[name] = "planned"
    return Decision(recommendations, reasons, plan, held, steady)


def _plan(planner: Planner, problems: Sequence[ModelProblem], settings: Settings, time_limit_s: float) -> Plan:
    return planner.plan(
        PlanRequest(
            models=tuple(problems),
            pools=settings.pools,
            utilization=settings.utilization,
            churn=settings.churn,
            time_limit_s=time_limit_s,
        )
    )


def _linked(problems: Sequence[ModelProblem], releasing: set[str], pools: Mapping[str, float]) -> set[str]:
    """The models the hold-aware plan must plan again: those with a releasing variant, and every model linked
    to one through a capped pool. Any other model's steady plan already runs at least what the HPA holds
    (nothing of it is releasing), so it stays feasible, hence optimal, once the holds are lower bounds; and
    a model sharing no capped pool with a re-planned one cannot be moved by it."""
    out: set[str] = set()
    for group in components([[v.pool_name for v in mp.variants] for mp in problems], pools):
        if any(v.name in releasing for k in group for v in problems[k].variants):
            out.update(problems[k].demand.model for k in group)
    return out


def _needs(plan: Plan, utilization: float) -> dict[str, int]:
    """Replicas each variant's planned work needs at utilisation u, never below its min or above its plan."""
    out: dict[str, int] = {}
    for mp in plan.models.values():
        for name, n in mp.replicas.items():
            out[name] = min(n, max(mp.floors.get(name, 0), math.ceil(mp.busy[name] / utilization - 1e-6)))
    return out
