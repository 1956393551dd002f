"""The planner's specification, one row per rule. Profiles: cheap = 1 $/h, 10 req/s short, no long;
big = 2.5 $/h, 40 req/s short, 10 req/s long (see fixtures.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from optimizer.program import ModelProblem, PlanError, Planner, PlanRequest, Variant, greedy_plan

from .fixtures import BIG, CHEAP, demand, profile


@dataclass
class Case:
    name: str
    short: float
    long: float
    want: dict[str, int]
    coverage: float = 1.0
    u: float = 1.0
    cheap: dict[str, object] = field(default_factory=dict)  # Variant overrides
    big: dict[str, object] = field(default_factory=dict)
    pools: dict[str, float] = field(default_factory=dict)
    churn: float = 0.0


CASES = [
    Case("no demand, no replicas", 0, 0, {"cheap": 0, "big": 0}),
    Case("small short load goes to the cheap type", 8, 0, {"cheap": 1, "big": 0}),
    Case("30 req/s short: one big (2.5) beats three cheap (3)", 30, 0, {"cheap": 0, "big": 1}),
    Case("45 req/s short: big + cheap (3.5) beats two big (5)", 45, 0, {"cheap": 1, "big": 1}),
    Case("long requests only fit the big type", 0, 5, {"cheap": 0, "big": 1}),
    Case("mixed: big's spare capacity absorbs short load", 8, 5, {"cheap": 0, "big": 1}),
    Case("utilisation 0.5 leaves headroom: 8 req/s needs two cheap", 8, 0, {"cheap": 2, "big": 0}, u=0.5),
    Case("15 req/s short: two cheap (2) beat one big (2.5)", 15, 0, {"cheap": 2, "big": 0}),
    Case("max replicas bound shifts load to the dearer type", 15, 0, {"cheap": 0, "big": 1},
         cheap={"max_replicas": 1}),
    Case("min replicas is a floor even without load", 0, 0, {"cheap": 2, "big": 0}, cheap={"min_replicas": 2}),
    Case("held replicas are used instead of buying another type", 8, 0, {"cheap": 0, "big": 1},
         big={"held_replicas": 1}),
    Case("pool capacity caps a type across the plan", 45, 0, {"cheap": 0, "big": 2}, pools={"cheap": 0}),
    Case("demand beyond every bound: serve the most, say coverage", 100, 0, {"cheap": 2, "big": 1},
         coverage=60 / 100, cheap={"max_replicas": 2}, big={"max_replicas": 1}),
    Case("unservable bucket: no replicas bought for it", 0, 5, {"cheap": 0}, coverage=0.0),
    Case("churn keeps the previous mix when costs tie", 30, 0, {"cheap": 3, "big": 0},
         cheap={"previous_replicas": 3}, big={"previous_replicas": 0}, churn=0.5),
]


def _request(case: Case) -> PlanRequest:
    variants = [Variant("cheap", CHEAP, **case.cheap)]  # type: ignore[arg-type]
    if "big" in case.want:
        variants.append(Variant("big", BIG, **case.big))  # type: ignore[arg-type]
    return PlanRequest(
        models=(ModelProblem(demand(case.short, case.long), tuple(variants)),),
        pools=case.pools, utilization=case.u, churn=case.churn,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(case: Case) -> None:
    plan = Planner().plan(_request(case))
    assert plan.status == "optimal"
    assert plan.replicas() == case.want
    assert plan.coverage == pytest.approx(case.coverage, abs=1e-6)
    m = plan.models["m"]
    expected_cost = sum(n * {"cheap": 1.0, "big": 2.5}[v] for v, n in case.want.items())
    assert m.cost_per_hour == pytest.approx(expected_cost)
    for v, n in case.want.items():  # no variant carries more than its replicas can at utilisation u
        assert m.busy[v] <= case.u * n + 1e-6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_greedy_is_feasible_and_never_cheaper_than_optimal(case: Case) -> None:
    request = _request(case)
    optimal = Planner().plan(request)
    fallback = greedy_plan(request)
    m = fallback.models["m"]
    for v, n in m.replicas.items():
        variant = next(x for x in request.models[0].variants if x.name == v)
        assert variant.lower_bound <= n <= variant.max_replicas
        assert m.busy[v] <= case.u * n + 1e-6
    assert fallback.coverage == pytest.approx(optimal.coverage, abs=1e-6)
    if case.churn == 0:  # greedy ignores churn, so only then is the optimum a lower bound on its cost
        assert fallback.cost_per_hour >= optimal.cost_per_hour - 1e-9


def test_shared_pool_across_models() -> None:
    """Two models on one accelerator pool of 3 GPUs: the plan splits the pool, never exceeds it."""
    a = profile("a-l4", 1.0, 10.0, 10.0, accelerator="L4", model="a")
    b = profile("b-l4", 1.0, 10.0, 10.0, accelerator="L4", model="b")
    b_alt = profile("b-a100", 4.0, 40.0, 40.0, accelerator="A100", model="b")
    request = PlanRequest(
        models=(
            ModelProblem(demand(20, 0, model="a"), (Variant("a-l4", a),)),
            ModelProblem(demand(20, 0, model="b"), (Variant("b-l4", b), Variant("b-a100", b_alt))),
        ),
        pools={"L4": 3}, utilization=1.0,
    )
    plan = Planner().plan(request)
    assert plan.replicas() == {"a-l4": 2, "b-l4": 0, "b-a100": 1}
    assert plan.coverage == 1.0


def test_multi_gpu_replicas_count_against_the_pool() -> None:
    two_gpu = profile("tp2", 2.0, 40.0, 10.0, accelerator="A100", gpus=2)
    request = PlanRequest(
        models=(ModelProblem(demand(100, 0), (Variant("tp2", two_gpu),)),), pools={"A100": 5}, utilization=1.0
    )
    plan = Planner().plan(request)
    assert plan.replicas() == {"tp2": 2}  # 3 replicas would need 6 GPUs
    assert plan.coverage == pytest.approx(80 / 100)


def test_replicas_held_by_the_hpa_win_over_a_too_small_pool() -> None:
    request = PlanRequest(
        models=(ModelProblem(demand(5, 0), (Variant("cheap", CHEAP, held_replicas=3),)),), pools={"cheap": 1},
    )
    assert Planner().plan(request).replicas() == {"cheap": 3}


def test_huge_demand_gives_bounded_answer_not_absurd() -> None:
    """AIBrix answered ~5e8 replicas for an unservable bucket; we answer the bound and say coverage."""
    request = PlanRequest(models=(ModelProblem(demand(1e7, 1e7), (Variant("cheap", CHEAP),)),))
    plan = Planner().plan(request)
    n = plan.replicas()["cheap"]
    assert 0 < n <= 1000
    assert 0 < plan.coverage < 0.01
    assert math.isfinite(plan.cost_per_hour)


def test_one_planner_reused_across_demands_answers_like_fresh_ones() -> None:
    planner = Planner()
    variants = (Variant("cheap", CHEAP), Variant("big", BIG))
    results = []
    for short in (8, 30, 45, 8):
        request = PlanRequest((ModelProblem(demand(short, 0), variants),), utilization=1.0)
        results.append(planner.plan(request).replicas())
        assert results[-1] == Planner().plan(request).replicas()
    assert results == [
        {"cheap": 1, "big": 0}, {"cheap": 0, "big": 1}, {"cheap": 1, "big": 1}, {"cheap": 1, "big": 0},
    ]


def test_solver_time_out_falls_back_to_greedy() -> None:
    request = PlanRequest((ModelProblem(demand(45, 3), (Variant("cheap", CHEAP), Variant("big", BIG))),),
                          time_limit_s=0.0)
    plan = Planner().plan(request)
    assert plan.solver == "greedy"
    assert plan.status.startswith("fallback: ")
    assert plan.coverage == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"utilization": 0.0}, "utilization"),
        ({"utilization": 1.5}, "utilization"),
        ({"churn": -1.0}, "churn"),
        ({"pools": {"x": float("nan")}}, "pool x"),
    ],
)
def test_bad_requests_are_named(kwargs: dict[str, object], message: str) -> None:
    request = PlanRequest((ModelProblem(demand(1, 0), (Variant("cheap", CHEAP),)),), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=message):
        Planner().plan(request)


def test_bad_variant_bounds_are_named() -> None:
    request = PlanRequest((ModelProblem(demand(1, 0), (Variant("cheap", CHEAP, min_replicas=3, max_replicas=2),)),))
    with pytest.raises(PlanError, match="cheap: min_replicas 3 > max_replicas 2"):
        Planner().plan(request)


def test_plan_never_negative_or_nan_on_random_inputs() -> None:
    rng = np.random.default_rng(7)
    planner = Planner()
    for _ in range(20):
        short, long = rng.exponential(30), rng.exponential(5)
        big_max = int(rng.integers(0, 4))
        plan = planner.plan(PlanRequest((ModelProblem(demand(short, long), (
            Variant("cheap", CHEAP), Variant("big", BIG, max_replicas=big_max))),)))
        m = plan.models["m"]
        assert all(n >= 0 for n in m.replicas.values())
        assert all(np.all(np.isfinite(x)) and np.all(x >= -1e-9) for x in m.load.values())
        assert 0.0 <= plan.coverage <= 1.0
        assert plan.models["m"].replicas["big"] <= big_max
