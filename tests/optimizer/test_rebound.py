"""A one-model program moved onto new demand and bounds (`_Program.rebound`) is the program a fresh build
gives, array for array, and it refuses whatever would change the matrix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optimizer.program import ModelProblem, PlanRequest, Variant, _Program, model_arrays

from .fixtures import BIG, CHEAP, demand

ARRAYS = ("col_cost", "col_lower", "col_upper", "integrality", "row_lower", "row_upper", "a_index", "a_value",
          "a_start", "y_cols", "d_cols", "prev")


def _problem(short: float, long: float, held: int = 0, previous: int | None = None) -> ModelProblem:
    return ModelProblem(demand(short, long), (Variant("cheap", CHEAP, held_replicas=held, previous_replicas=previous),
                                               Variant("big", BIG, max_replicas=9)))


def _built(problem: ModelProblem, request: PlanRequest) -> _Program:
    return _Program([model_arrays(problem, request.utilization)], {}, request)


@pytest.mark.parametrize("churn", [0.0, 0.05])
@pytest.mark.parametrize("before, after", [
    (_problem(30, 4), _problem(45, 2)),  # demand moved
    (_problem(30, 4), _problem(30, 4, held=2)),  # a hold raised a lower bound
    (_problem(30, 4, previous=1), _problem(33, 5, previous=3)),  # other previous counts (churn rows)
])
def test_rebound_equals_a_fresh_build(churn: float, before: ModelProblem, after: ModelProblem) -> None:
    request = PlanRequest((after,), churn=churn)
    moved = _built(before, request).rebound(model_arrays(after, request.utilization), request)
    fresh = _built(after, request)
    assert moved is not None
    for name in ARRAYS:
        a, b = getattr(moved, name), getattr(fresh, name)
        assert (a is None and b is None) or np.array_equal(a, b), name
    for mine, theirs in zip(moved.slices[0], fresh.slices[0], strict=True):
        if isinstance(mine, tuple):
            assert all(np.array_equal(x, y) for x, y in zip(mine, theirs, strict=True))
        else:
            assert np.array_equal(mine, theirs)


@pytest.mark.parametrize("case, after, request_after", [
    ("a bucket no longer demanded", _problem(30, 0), PlanRequest(())),
    ("other capacities", ModelProblem(demand(30, 4), (Variant("cheap", replace(CHEAP, capacity=CHEAP.capacity * 2)),
                                                       Variant("big", BIG, max_replicas=9))), PlanRequest(())),
    ("other prices", ModelProblem(demand(30, 4), (Variant("cheap", replace(CHEAP, cost_per_hour=1.5)),
                                                   Variant("big", BIG, max_replicas=9))), PlanRequest(())),
    ("other utilisation", _problem(30, 4), PlanRequest((), utilization=0.7)),
    ("other churn", _problem(30, 4), PlanRequest((), churn=0.2)),
])
def test_rebound_refuses_what_changes_the_matrix(case: str, after: ModelProblem, request_after: PlanRequest) -> None:
    request = PlanRequest(())
    program = _built(_problem(30, 4), request)
    assert program.rebound(model_arrays(after, request_after.utilization), request_after) is None, case
