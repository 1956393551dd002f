"""The Kubernetes HPA's replica arithmetic for one external metric, and its inverse.

The HPA (autoscaling/v2, `AverageValue` target T, KEDA's default) proposes ceil(value / T) replicas, but
ignores the proposal while |value / (T·current) − 1| ≤ tolerance (0.1 by default). So "report N·T to get N
replicas" fails for small relative moves: 10 → 11 never happens with tolerance 0.1. `metric_value` picks
the value that lands the HPA on the wanted count when that is possible, and otherwise on the nearest count
on the safe side (more replicas going up, no change going down), and says which count it will be.
"""

from __future__ import annotations

import math

DEFAULT_TOLERANCE = 0.1


def desired_replicas(value: float, target: float, current: int, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """What the HPA proposes from one AverageValue external metric (before windows, policies, min/max)."""
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    if not math.isfinite(value) or value < 0:
        value = 0.0
    # The controller's own test (Tolerances.isWithin: 1 − tol ≤ ratio ≤ 1 + tol), so float edge cases agree.
    if current > 0 and 1.0 - tolerance <= value / (target * current) <= 1.0 + tolerance:
        return current
    return math.ceil(value / target - 1e-12)


def metric_value(
    desired: int, current: int | None, target: float, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[float, int]:
    """(value to report, replicas the HPA will then propose) for wanting `desired` replicas while it runs
    `current` (None: unknown, report desired·T)."""
    if desired < 0:
        raise ValueError(f"desired must be >= 0, got {desired}")
    if current is None or current <= 0 or desired == current or desired == 0:
        return float(desired * target), desired  # 0 is always reachable: the ratio 0 is outside any band
    if desired > current:
        # ceil(v/T) = d needs v in ((d−1)T, dT]; leaving the dead band needs v > (1+tol)·c·T.
        land = max(desired, math.floor((1.0 + tolerance) * current) + 1)
        return float(land * target), land
    # Going down: v in ((d−1)T, dT] and v < (1−tol)·c·T.
    upper = min(float(desired), (1.0 - tolerance) * current)
    lower = float(desired - 1)
    if upper <= lower:
        return float(current * target), current  # cannot land there: stay (never shrink below the plan)
    return (lower + upper) / 2.0 * target, desired
