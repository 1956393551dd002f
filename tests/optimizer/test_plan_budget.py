"""What a cycle's planning may spend, and on which models (issue 14): the hold-aware plan re-plans only the
models whose holds can change their plan, one time limit covers the cycle's plans, and a long-lived Planner
keeps that limit however long its HiGHS instance has run in total."""

from __future__ import annotations

from dataclasses import replace

import pytest
from highspy import _core as highs

from optimizer.decide import ModelState, Settings, VariantState, decide
from optimizer.program import ModelProblem, Plan, Planner, PlanRequest, Variant

from .fixtures import BIG, CHEAP, demand


class Recording(Planner):
    """A Planner that remembers what it was asked: the models and the time limit of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[frozenset[str], float]] = []
        self.plans: list[Plan] = []

    def plan(self, request: PlanRequest) -> Plan:
        self.asked.append((frozenset(mp.demand.model for mp in request.models), request.time_limit_s))
        self.plans.append(super().plan(request))
        return self.plans[-1]


def _model(name: str, short: float, big_pool: str | None = None) -> ModelState:
    return ModelState(name, demand(short, 0, model=name), (
        VariantState(f"{name}-cheap", replace(CHEAP, model=name), scale_down_window_s=60),
        VariantState(f"{name}-big", replace(BIG, model=name), scale_down_window_s=60, pool=big_pool),
    ))


# Model "a" had a burst: its big replica, published at t=0, is held by the HPA while its steady plan needs
# none (releasing). Model "b" has steady traffic and nothing held above its plan.
HISTORY = {"a-big": [(0.0, 1)], "a-cheap": [(0.0, 0)], "b-cheap": [(0.0, 1)], "b-big": [(0.0, 0)]}


@pytest.mark.parametrize("pools, big_pools, replanned", [
    # no capped pool: b's steady plan already runs what the HPA holds, so the holds cannot move it
    ({}, (None, None), {"a"}),
    # a and b draw on one capped pool: a's held replica uses GPUs b could have had, so b is planned again
    ({"gpu-big": 8.0}, ("gpu-big", "gpu-big"), {"a", "b"}),
    # a capped pool only b uses links nothing to a
    ({"gpu-big": 8.0}, (None, "gpu-big"), {"a"}),
])
def test_the_hold_aware_plan_replans_only_models_its_holds_can_move(
        pools: dict[str, float], big_pools: tuple[str | None, str | None], replanned: set[str]) -> None:
    settings = Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0, hold_lead_s=15.0, pools=pools)
    planner = Recording()
    models = [_model("a", 2, big_pools[0]), _model("b", 8, big_pools[1])]
    d = decide(models, HISTORY, 15.0, settings, planner)
    assert [names for names, _ in planner.asked] == [{"a", "b"}, replanned]
    # a's held big replica carries its load (no cheap one bought) and publishes its steady 0 so the hold
    # ages out; b keeps its one cheap replica, as its steady plan said.
    assert d.recommendations == {"a-cheap": 0, "a-big": 0, "b-cheap": 1, "b-big": 0}
    assert d.plan is not None and set(d.plan.models) == {"a", "b"} and not d.plan.greedy


def test_one_time_limit_covers_the_cycles_plans() -> None:
    settings = Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0, hold_lead_s=15.0, time_limit_s=2.0)
    planner = Recording()
    decide([_model("a", 2), _model("b", 8)], HISTORY, 15.0, settings, planner)
    (_, first), (_, second) = planner.asked
    assert first == 2.0
    assert second == pytest.approx(2.0 - planner.plans[0].solve_ms / 1e3)


def _request(name: str, short: float) -> PlanRequest:
    return PlanRequest((ModelProblem(demand(short, 3, model=name), (
        Variant(f"{name}-cheap", CHEAP), Variant(f"{name}-big", BIG))),), time_limit_s=0.05)


def test_a_planner_whose_solver_has_run_past_the_limit_in_total_still_plans_exactly() -> None:
    """HiGHS before 2.0 measures `time_limit` against its instance's run time summed over all runs
    (ERGO-Code/HiGHS#1331): a limit set as the time left timed out every LP of a long-lived Planner."""
    planner = Planner()
    exact = Planner().plan(_request("fresh", 47))
    assert exact.status == "optimal"
    planner.plan(_request("warm", 45))
    solver = planner._solver
    assert solver is not None
    solver.setOptionValue("time_limit", highs.kHighsInf)
    while solver.getRunTime() < 0.2:  # the instance's total, as after many cycles of a running service
        solver.run()
    plan = planner.plan(_request("fresh", 47))  # a model it has no memory of: it needs LPs
    assert plan.status == "optimal" and not plan.greedy
    assert plan.models["fresh"].replicas == exact.models["fresh"].replicas
    # Found by the cutting-plane search, which leaves its duals for the next cycle: with the limit taken as
    # the time left, every LP timed out and only HiGHS's MIP, whose presolve settles a model this small
    # without looking at the clock, answered. At 1,000 models that meant no memory and the greedy fallback.
    assert "fresh" in planner._memories
