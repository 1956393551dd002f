from __future__ import annotations

from optimizer.decide import ModelState, Settings, VariantState, decide
from optimizer.program import Planner

from .fixtures import BIG, CHEAP, demand

SETTINGS = Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0, hold_lead_s=15.0)


def _state(short: float | None, **over: object) -> list[ModelState]:
    return [ModelState("m", None if short is None else demand(short, 0), (
        VariantState("cheap", CHEAP, scale_down_window_s=60, **over),  # type: ignore[arg-type]
        VariantState("big", BIG, scale_down_window_s=60),
        VariantState("orphan", None),
    ))]


def test_variant_without_profile_is_never_scaled() -> None:
    d = decide(_state(8), {}, 0, SETTINGS, Planner())
    assert "orphan" not in d.recommendations
    assert "no usable profile" in d.reasons["orphan"]
    assert d.recommendations == {"cheap": 1, "big": 0}


def test_missing_demand_keeps_the_last_recommendation() -> None:
    history = {"cheap": [(0.0, 3)], "big": [(0.0, 1)]}
    d = decide(_state(None), history, 15, SETTINGS, Planner())
    assert d.recommendations == {"cheap": 3, "big": 1}
    assert d.plan is None
    assert "keeping the last" in d.reasons["cheap"]


def test_held_replicas_serve_a_rebound_and_then_age_out() -> None:
    planner = Planner()
    history: dict[str, list[tuple[float, int]]] = {}
    out = []
    for t, short in [(0, 30), (15, 2), (30, 8), (90, 8)]:
        d = decide(_state(short), history, t, SETTINGS, planner)
        for v, n in d.recommendations.items():
            history.setdefault(v, []).append((t, n))
        out.append(d.recommendations)
    assert out[0] == {"cheap": 0, "big": 1}
    # at t=15 and t=30 the HPA still holds the big replica (60 s window, published at t=0): its capacity
    # serves the load, so no cheap replica is bought; big publishes its steady count 0 so the hold ends
    assert out[1] == {"cheap": 0, "big": 0}
    assert out[2] == {"cheap": 0, "big": 0}
    # by t=90 the hold is over: the cheap type carries the load
    assert out[3] == {"cheap": 1, "big": 0}


def test_a_hold_about_to_end_is_not_relied_on() -> None:
    """With a lead time as long as the window, holds are never counted: buy the steady fleet at once."""
    history = {"big": [(0.0, 1)], "cheap": [(0.0, 0)]}
    settings = Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0, hold_lead_s=60.0)
    d = decide(_state(8), history, 15, settings, Planner())
    assert d.recommendations == {"cheap": 1, "big": 0}


def test_min_replicas_apply_without_traffic() -> None:
    d = decide(_state(0, min_replicas=2), {}, 0, SETTINGS, Planner())
    assert d.recommendations == {"cheap": 2, "big": 0}
