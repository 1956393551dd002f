"""Short-term demand forecast over the cold-start lead time (DESIGN step 2, optional).

A replica asked for now serves only after its cold start (minutes), so the demand that matters for
today's plan is the demand of the next few minutes, not of the last one. Without a model of the traffic,
the honest short-term forecast for bursty LLM traffic is a *peak hold*: whatever rate the model reached
within the recent horizon is assumed able to come back before new capacity could be ready. On traffic that
changes slowly (diurnal) the peak of the last minutes is close to the current rate, so the hold costs
little; on traffic made of bursts separated by gaps shorter than a cold start, it keeps the capacity the
bursts need instead of releasing it in every gap and ordering it again too late.

    peak_hold(observations, now, horizon_s) -> Demand | None

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
