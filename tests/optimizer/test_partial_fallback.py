"""Out of time, a plan keeps what it solved: the models planned exactly keep their exact plans, only the
rest get the greedy fallback's, and the next plan searches those first (issue 14: 1,000 models once fell
back to greedy all together, every cycle, because one request outgrew one time limit)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import optimizer.program as program
from optimizer.program import ModelProblem, Planner, PlanRequest, Variant

from .fixtures import BIG, CHEAP, demand

NAMES = ("m0", "m1", "m2")


def request() -> PlanRequest:
    # Three independent models (no capped pool): each is its own lattice search.
    return PlanRequest(tuple(ModelProblem(demand(45 + 5 * i, 3, model=name), (
        Variant(f"{name}-cheap", CHEAP), Variant(f"{name}-big", BIG))) for i, name in enumerate(NAMES)))


@pytest.fixture()
def budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Lets `allowed` lattice searches run, then answers the rest as out of time."""
    state: dict[str, Any] = {"allowed": 1}
    real = program._Program.lattice_search

    def search(self: Any, solver: Any, deadline: float, gap: float, max_points: int, memories: Any) -> Any:
        if state["allowed"] <= 0:
            return "time limit reached", None
        state["allowed"] -= 1
        return real(self, solver, deadline, gap, max_points, memories)

    monkeypatch.setattr(program._Program, "lattice_search", search)
    yield state


def test_out_of_time_keeps_the_exact_plans_and_falls_back_only_for_the_rest(budget: dict[str, Any]) -> None:
    budget["allowed"] = 99
    exact = Planner().plan(request())
    assert not exact.greedy
    budget["allowed"] = 1
    planner = Planner()
    plan = planner.plan(request())
    assert plan.solver == "highs+greedy" and plan.status.startswith("fallback for 2 of 3 models")
    assert plan.greedy == frozenset({"m1", "m2"}) and plan.exact("m0")
    assert plan.models["m0"].replicas == exact.models["m0"].replicas  # the exact answer, kept
    for name in ("m1", "m2"):  # the fallback's answer still serves the model
        assert plan.models[name].coverage == 1.0

    # The next plan searches the two that fell behind first, so they are the ones planned exactly now.
    budget["allowed"] = 2
    later = planner.plan(request())
    assert later.greedy == frozenset({"m0"})
    assert later.models["m1"].replicas == exact.models["m1"].replicas
    assert later.models["m2"].replicas == exact.models["m2"].replicas


def test_every_model_out_of_time_is_the_plain_fallback(budget: dict[str, Any]) -> None:
    budget["allowed"] = 0
    plan = Planner().plan(request())
    assert plan.solver == "greedy" and plan.status.startswith("fallback: ")
    assert plan.greedy == frozenset(NAMES)
