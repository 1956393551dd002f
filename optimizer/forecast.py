"""Short-term demand forecast over the cold-start lead time (DESIGN step 2).

A replica asked for now serves only after its cold start (minutes), so the demand that matters for
today's plan is the demand of the next few minutes, not of the last one. Without a model of the traffic,
the honest short-term forecast for bursty LLM traffic is a *peak hold*: whatever rate the model reached
within the recent horizon is assumed able to come back before new capacity could be ready. On traffic that
changes slowly (diurnal) the peak of the last minutes is close to the current rate, so the hold costs
little; on traffic made of bursts separated by gaps shorter than a cold start, it keeps the capacity the
bursts need instead of releasing it in every gap and ordering it again too late.

    peak_hold(observations, now, horizon_s) -> Demand | None
    trend_peak(observations, now, peak_s, trend_s, lead_s) -> Demand | None

A ramp is the other case a peak hold misses: demand that rises steadily for longer than a cold start is
always one cold start ahead of what was ordered. `trend_peak` adds Holt's linear trend (Hyndman &
Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed., §8.2): the least-squares level and slope of
the look-back's totals, the level projected one lead time (the cold start) ahead, rises only — a falling trend
never releases capacity early; releasing is the scale-down window's job. Peers: Knative's KPA holds its
count while in panic mode ("the Revision will not scale down to avoid churn"); Dynamo's SLA planner
predicts the next interval's load (constant, ARIMA, Prophet or a Kalman filter on level and trend).

The forecast keeps the peak *total* rate of the horizon, spread over buckets with the horizon's pooled
length mix, and never goes below the latest estimate in any bucket. Taking each bucket's own maximum
instead would add up peaks of different moments (and the noise of short windows) into a rate the model
never reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from optimizer.demand import Demand

Observation = tuple[float, Demand]  # (time the estimate was made, the estimate)


class ForecastError(ValueError):
    pass


def peak_hold(observations: Sequence[Observation], now: float, horizon_s: float) -> Demand | None:
    """The demand to plan for at `now` from the estimates made in (now - horizon_s, now].

    `observations` are in time order and share one grid; the last one inside the horizon is the current
    estimate. Returns None when no estimate falls inside the horizon (demand unknown: the caller keeps
    its last decision rather than planning for zero). horizon_s = 0 returns the latest estimate as is.
    """
    if not math.isfinite(horizon_s) or horizon_s < 0:
        raise ForecastError(f"horizon_s: must be a finite non-negative number of seconds, got {horizon_s}")
    recent = [(t, d) for t, d in observations if now - horizon_s <= t <= now] if horizon_s > 0 else []
    if not recent:
        past = [(t, d) for t, d in observations if t <= now]
        if horizon_s == 0 and past:
            return past[-1][1]
        return None
    grid = recent[-1][1].grid
    for t, d in recent:
        if d.grid != grid:
            raise ForecastError(f"observation at t={t}: grid differs from the latest estimate's")
    latest = recent[-1][1]
    peak = max(d.total for _, d in recent)
    pooled = np.sum([d.rates for _, d in recent], axis=0)
    mass = float(pooled.sum())
    if peak <= 0 or mass <= 0:
        return latest
    held = np.maximum(latest.rates, pooled / mass * peak)
    return Demand(latest.model, grid, held)


MIN_TREND_POINTS = 3  # fewer estimates give a slope that is only the noise between two rate windows
MIN_TREND_FIT = 0.8  # R² of the line: a burst or noise is not a trend, a ramp is


def trend_peak(observations: Sequence[Observation], now: float, peak_s: float, trend_s: float,
               lead_s: float) -> Demand | None:
    """The peak hold of the last `peak_s`, raised to the linear trend of the last `trend_s` projected
    `lead_s` ahead (at most `trend_s`: no further ahead than the line was seen).

    The trend is fitted to the totals of the estimates in (now - trend_s, now] (at least MIN_TREND_POINTS,
    spanning at least half of it, and a line that explains at least MIN_TREND_FIT of their variance: the
    rising edge of one burst inside a long window is no trend). A rising projection is spread over buckets
    with the latest estimate's mix (the mix of what is rising now) and never lowers the peak hold.
    """
    for name, value in (("trend_s", trend_s), ("lead_s", lead_s)):
        if not math.isfinite(value) or value < 0:
            raise ForecastError(f"{name}: must be a finite non-negative number of seconds, got {value}")
    held = peak_hold(observations, now, peak_s)
    if held is None or trend_s <= 0 or lead_s <= 0:
        return held
    recent = [(t, d) for t, d in observations if now - trend_s <= t <= now]
    times = np.array([t for t, _ in recent])
    if len(recent) < MIN_TREND_POINTS or times.max() - times.min() < trend_s / 2:
        return held
    totals = np.array([d.total for _, d in recent])
    slope, level = np.polyfit(times - now, totals, 1)
    spread = float(np.sum((totals - totals.mean()) ** 2))
    explained = 1.0 - float(np.sum((totals - (level + slope * (times - now))) ** 2)) / spread if spread > 0 else 0.0
    # A ramp that flattens is still a good line over the whole look-back: the slope of its latter half, when
    # smaller, is the one projected (the trend as it is now, not as it was).
    late = times >= now - trend_s / 2
    if int(late.sum()) >= MIN_TREND_POINTS:
        slope = min(slope, float(np.polyfit(times[late] - now, totals[late], 1)[0]))
    projected = float(level + slope * min(lead_s, trend_s))
    latest = recent[-1][1]
    if slope <= 0 or explained < MIN_TREND_FIT or projected <= held.total or latest.total <= 0:
        return held
    return Demand(held.model, held.grid, np.maximum(held.rates, latest.rates / latest.total * projected))
