"""The peak-hold forecast in replay (`gpumix-hold`) and the synthetic diurnal trace used to check it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.fleet import load_fleet
from sim.policies import Trace, default_horizon, make_policies
from sim.replay import TraceError, load_trace, replay, synthetic_trace

AZURE = Path(__file__).resolve().parents[2] / "data" / "traces" / "azure-llm-2023-code.csv"


@pytest.fixture(scope="module")
def spec():
    return load_fleet()


def test_synthetic_trace_is_seeded_and_follows_its_rate():
    a, b = synthetic_trace(3, duration_s=1200.0, mean_rps=2.0, period_s=1200.0), synthetic_trace(3, 1200.0, 2.0, 1200.0)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.prompts, b.prompts)
    assert not np.array_equal(a.times, synthetic_trace(4, 1200.0, 2.0, 1200.0).times)
    assert 2400 * 0.85 < len(a) < 2400 * 1.15  # mean 2 req/s over 20 min
    # starts at the trough, peaks mid-period
    trough = np.sum(a.times < 200.0)
    peak = np.sum((a.times >= 500.0) & (a.times < 700.0))
    assert peak > 2 * trough
    assert a.prompts.min() >= 1 and a.prompts.max() <= 8001 and a.outputs.max() <= 1025


def test_synthetic_trace_refuses_bad_parameters():
    with pytest.raises(TraceError, match="amplitude"):
        synthetic_trace(0, amplitude=1.5)


def test_hold_policy_names(spec):
    (hold,) = make_policies(spec, "gpumix-hold")
    assert hold.horizon_s == default_horizon(spec) == 180.0 and hold.name == "gpumix-hold:180"
    assert make_policies(spec, "gpumix-hold:600")[0].horizon_s == 600.0
    with pytest.raises(ValueError, match="gpumix-hold"):
        make_policies(spec, "gpumix-hold:soon")
    assert [p.name for p in make_policies(spec, "all")].count("gpumix-hold:180") == 1


def test_trend_policy_sets_the_services_forecast_trend(spec):
    (trend,) = make_policies(spec, "gpumix-trend:300")
    assert trend.name == "gpumix-trend:300" and trend.config.forecast_trend == 300.0
    assert make_policies(spec, "gpumix")[0].config.forecast_trend == 0.0  # the service's default: off
    for bad in ("gpumix-trend:soon", "gpumix-trend:0"):
        with pytest.raises(ValueError, match="gpumix-trend"):
            make_policies(spec, bad)


def test_replayed_variants_carry_the_fleets_cold_starts(spec):
    (policy,) = make_policies(spec, "gpumix")
    inventory = policy.controller.inventory.current()
    assert {v.name: v.cold_start_s for m in inventory.models for v in m.variants} == {
        v.name: v.cold_start_s for v in spec.variants}


def test_hold_keeps_capacity_through_gaps_between_bursts(spec):
    full = load_trace(AZURE)
    keep = full.times < 900.0  # the first bursts and the idle minutes between them
    trace = Trace(full.times[keep], full.prompts[keep], full.outputs[keep])
    plain = replay(spec, trace, make_policies(spec, "gpumix")[0])
    hold = replay(spec, trace, make_policies(spec, "gpumix-hold:600")[0])
    assert hold.requests == plain.requests == len(trace)
    # in the gap after the first burst (minutes 5-9) the held fleet keeps what the burst needed
    gap = [k for k, t in enumerate(hold.series.times) if 330.0 <= t <= 540.0]
    total = lambda r, k: sum(c[k] for c in r.series.replicas.values())  # noqa: E731
    assert min(total(hold, k) for k in gap) >= total(hold, gap[0]) > 0
    assert hold.attainment >= plain.attainment
