"""optimizer.forecast.peak_hold: the demand to plan for over the cold-start lead time."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.demand import Demand
from optimizer.forecast import ForecastError, peak_hold, trend_peak
from optimizer.profile import Grid

GRID = Grid(inputs=(128, 1024), outputs=(16, 256))


def demand(short: float, long: float) -> Demand:
    """`short` req/s of 128-in/16-out requests and `long` req/s of 1024-in/256-out ones."""
    return Demand("m", GRID, np.array([[short, 0.0], [0.0, long]]))


CASES = [
    # (name, observations, now, horizon, expected [short, long] or None)
    ("no hold: the latest estimate", [(0.0, demand(9, 1)), (15.0, demand(1, 0))], 15.0, 0.0, (1, 0)),
    # the peak total 10 with the pooled mix (10 short : 1 long)
    ("peak inside the horizon is held", [(0.0, demand(9, 1)), (15.0, demand(1, 0))], 15.0, 60.0,
     (100 / 11, 10 / 11)),
    ("peak outside the horizon is forgotten", [(0.0, demand(9, 1)), (100.0, demand(1, 0))], 100.0, 60.0, (1, 0)),
    # pooled mix (10 short : 1 long) scaled to the peak total 8 gives the long bucket 8/11; the latest
    # estimate's 1 req/s there is higher and wins: a bucket rising now is never planned below its rate
    ("peak total with the pooled mix, never below now",
     [(0.0, demand(8, 0)), (15.0, demand(2, 1))], 15.0, 60.0, (80 / 11, 1.0)),
    ("idle horizon keeps zero", [(0.0, demand(0, 0)), (15.0, demand(0, 0))], 15.0, 60.0, (0, 0)),
    ("nothing inside the horizon: unknown", [(0.0, demand(5, 5))], 200.0, 60.0, None),
    ("future estimates are ignored", [(0.0, demand(1, 0)), (30.0, demand(50, 50))], 15.0, 60.0, (1, 0)),
]


@pytest.mark.parametrize(("name", "observations", "now", "horizon", "expected"), CASES, ids=[c[0] for c in CASES])
def test_peak_hold(name, observations, now, horizon, expected):
    got = peak_hold(observations, now, horizon)
    if expected is None:
        assert got is None
        return
    assert got is not None and got.grid == GRID
    assert got.rates[0, 0] == pytest.approx(expected[0])
    assert got.rates[1, 1] == pytest.approx(expected[1])


def test_hold_never_exceeds_the_peak_total_when_the_mix_is_steady():
    obs = [(15.0 * k, demand(r, r / 10)) for k, r in enumerate((1, 7, 3, 2))]
    got = peak_hold(obs, 45.0, 300.0)
    assert got is not None and got.total == pytest.approx(7.7)


@pytest.mark.parametrize("horizon", [-1.0, float("nan"), float("inf")])
def test_bad_horizon_is_refused(horizon):
    with pytest.raises(ForecastError, match="horizon_s"):
        peak_hold([(0.0, demand(1, 1))], 0.0, horizon)


def test_mixed_grids_are_refused():
    other = Demand("m", Grid(inputs=(128,), outputs=(16,)), np.array([[1.0]]))
    with pytest.raises(ForecastError, match="grid"):
        peak_hold([(0.0, other), (15.0, demand(1, 1))], 15.0, 60.0)


def ramp(rates, step=15.0):
    return [(step * k, demand(r, 0.0)) for k, r in enumerate(rates)]


TREND_CASES = [
    # (name, observations, trend look-back, lead, expected total); no peak hold (peak_s = 0)
    # 1, 2, ..., 9 req/s every 15 s: slope 1/15 per s, level 9 at now; projected min(lead, horizon) = 60 s ahead
    ("a ramp is projected one lead ahead", ramp(range(1, 10)), 120.0, 60.0, 9.0 + 60.0 / 15.0),
    ("the projection reaches no further than the horizon looked back", ramp(range(1, 10)), 60.0, 600.0,
     9.0 + 60.0 / 15.0),
    ("no lead: the latest estimate", ramp(range(1, 10)), 120.0, 0.0, 9.0),
    ("a falling trend releases nothing", ramp(range(9, 0, -1)), 120.0, 60.0, 1.0),
    ("a lone burst is no trend (poor fit)", ramp([1, 1, 1, 1, 1, 1, 1, 1, 9]), 120.0, 60.0, 9.0),
    # the line of this step (R² ≈ 0.5) would project above 10 req/s
    ("a step after a flat run is no trend (poor fit)", ramp([1, 1, 1, 1, 1, 1, 1, 9, 9]), 120.0, 60.0, 9.0),
    # the falling line's level (≈ 0.66) lies above the latest 0.1, and 5 s ahead still above it
    ("a falling line is never projected, even above the latest", ramp([9, 8, 7, 6, 5, 4, 3, 2, 0.1]), 120.0, 5.0,
     0.1),
    ("too few estimates: no trend", ramp([1, 5]), 120.0, 60.0, 5.0),
    ("estimates older than the look-back do not count", ramp([1, 2, 3, 4, 5, 5, 5, 5, 5]), 60.0, 60.0, 5.0),
]


@pytest.mark.parametrize(("name", "observations", "horizon", "lead", "total"), TREND_CASES,
                         ids=[c[0] for c in TREND_CASES])
def test_trend_peak(name, observations, horizon, lead, total):
    now = observations[-1][0]
    got = trend_peak(observations, now, 0.0, horizon, lead)
    assert got is not None and got.total == pytest.approx(total)
    assert np.all(got.rates >= observations[-1][1].rates - 1e-12)  # never below the latest estimate


def test_trend_keeps_the_latest_mix():
    obs = [(15.0 * k, demand(r, r)) for k, r in enumerate(range(1, 10))]
    got = trend_peak(obs, obs[-1][0], 0.0, 120.0, 60.0)
    assert got is not None and got.rates[0, 0] == pytest.approx(got.rates[1, 1])


def test_trend_raises_the_peak_hold_never_lowers_it():
    # peak 10 at t=0 held for 120 s; the trend of the last 100 s (2 … 8, 1/15 req/s per s) gives 8 + 4 = 12
    obs = ramp([10, 1, 2, 3, 4, 5, 6, 7, 8])
    now = obs[-1][0]
    held = peak_hold(obs, now, 120.0)
    got = trend_peak(obs, now, 120.0, 100.0, 60.0)
    assert held is not None and got is not None
    assert got.total == pytest.approx(12.0) and np.all(got.rates >= held.rates - 1e-12)
    # a higher peak wins over a lower projection
    higher = trend_peak(ramp([20, 1, 2, 3, 4, 5, 6, 7, 8]), now, 120.0, 100.0, 60.0)
    assert higher is not None and higher.total == pytest.approx(20.0)


def test_bad_lead_is_refused():
    with pytest.raises(ForecastError, match="lead_s"):
        trend_peak([(0.0, demand(1, 1))], 0.0, 0.0, 60.0, float("nan"))


def test_a_flattening_ramp_projects_the_slope_of_its_latter_half():
    # 1 → 5 in a minute, then +0.1 per 15 s: the whole look-back's line (R² ≈ 0.85) is steeper than the trend
    # as it is now; the projection takes the line's level at now and the latter half's slope.
    values = [1, 2, 3, 4, 5, 5.1, 5.2, 5.3, 5.4]
    obs = ramp(values)
    now = obs[-1][0]
    t = np.array([x for x, _ in obs]) - now
    level = np.polyfit(t, values, 1)[1]
    late_slope = np.polyfit(t[t >= -60.0], np.array(values)[t >= -60.0], 1)[0]
    got = trend_peak(obs, now, 0.0, 120.0, 60.0)
    assert got is not None and got.total == pytest.approx(level + late_slope * 60.0)
