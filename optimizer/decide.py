"""One control cycle's decision, as a pure function: what each variant should run now.

    decide(models, history, now, settings, planner) -> Decision

Per model, in order:
1. Variants without a usable profile are left out of the plan and get no recommendation (the service
   answers NOT_FOUND for them rather than guessing: AIBrix scaled such Deployments anyway, aibrix#507).
2. A model whose demand is unknown this cycle (Prometheus down, empty or stale answer) is not planned: its
   variants keep their last recommendation. Missing data never shrinks a fleet.
3. Lower bounds: `min_replicas`, and what the HPA holds anyway — the highest recommendation published
   inside the variant's scale-down window (those replicas are running and paid for, so the plan uses them
   rather than buying another type on top).
4. Plan every plannable model together (they share accelerator pools) with the integer program.
5. Publish what each variant's planned work needs, ceil(busy / u), not the held floor itself: publishing
   the floor would refresh the HPA's window every cycle and the fleet could never shrink. Held replicas
   that the plan does not load age out of the window; held replicas it does load are kept.
6. Hysteresis against the last recommendation: scale down only when the smaller count still carries the
   planned work with a margin (no 2 ↔ 1 flapping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    scale_down_window_s: float = 300.0
    pool: str | None = None
    gpus_per_replica: int | None = None  # overrides the profile's when the inventory knows better


@dataclass(frozen=True)
class ModelState:
    model: str
    demand: Demand | None  # None: unknown this cycle
    variants: tuple[VariantState, ...]


@dataclass(frozen=True)
class Settings:
    utilization: float = 0.8
    churn: float = 0.05
    hysteresis_margin: float = 0.1
    pools: Mapping[str, float] = field(default_factory=dict)
    time_limit_s: float = 2.0


@dataclass(frozen=True)
class Decision:
    recommendations: dict[str, int]  # variant -> replicas; absent: nothing to publish for it
    reasons: dict[str, str]  # variant -> why it has (or lacks) its recommendation
    plan: Plan | None
    held: dict[str, int]

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
        variants = []
        for v in usable:
            assert v.profile is not None
            profile = v.profile
            if v.gpus_per_replica is not None and v.gpus_per_replica != profile.gpus_per_replica:
                profile = replace(profile, gpus_per_replica=v.gpus_per_replica)
            held[v.name] = held_replicas(history.get(v.name, ()), now, v.scale_down_window_s)
            last = _last(history, v.name)
            if last is not None:
                previous[v.name] = last
            variants.append(
                Variant(
                    name=v.name,
                    profile=profile,
                    min_replicas=min(v.min_replicas, v.max_replicas),
                    max_replicas=v.max_replicas,
                    held_replicas=min(held[v.name], v.max_replicas),
                    previous_replicas=last if last is not None else v.current_replicas,
                    pool=v.pool,
                )
            )
        problems.append(ModelProblem(state.demand.on(grid), tuple(variants)))

    plan: Plan | None = None
    if problems:
        plan = planner.plan(
            PlanRequest(
                models=tuple(problems),
                pools=settings.pools,
                utilization=settings.utilization,
                churn=settings.churn,
                time_limit_s=settings.time_limit_s,
            )
        )
        floors = {v.name: v.min_replicas for p in problems for v in p.variants}
        for model_plan in plan.models.values():
            needed = {
                name: min(n, max(floors[name], math.ceil(model_plan.busy[name] / settings.utilization - 1e-6)))
                for name, n in model_plan.replicas.items()
            }
            final = hysteresis(needed, model_plan.busy, previous, settings.utilization, settings.hysteresis_margin)
            for name, n in final.items():
                recommendations[name] = n
                planned = needed[name]
                if n != planned:
                    reasons[name] = f"planned {planned}; kept {n} until the smaller fleet fits with margin"
                elif plan.solver != "highs":
                    reasons[name] = plan.status
                else:
                    reasons[name] = "planned"
    return Decision(recommendations, reasons, plan, held)
