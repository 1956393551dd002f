"""The Kubernetes HPA's algorithm for external AverageValue metrics, as pure functions, and its inverse.

Every rule of the HorizontalPodAutoscaler that gpumix depends on lives here once, each next to the upstream
function it follows (kubernetes/kubernetes, pkg/controller/podautoscaler/, v1.33–v1.35):

- the replica proposal of one metric with its per-direction dead band (`proposal_for_average`,
  `desired_replicas`), several metrics (`proposal`);
- the stabilization windows (`in_window`, `stabilize`);
- the rate policies and min/max (`scale_up_limit`, `scale_down_limit`, `normalize`);
- the inverse, `metric_value`: the value to report so the HPA lands on the wanted count (or the nearest safe
  one: more going up, no change going down when the dead band makes the exact count unreachable).

The HPA proposes ceil(value / T) replicas for an AverageValue target T, but keeps the current count while
1 − tol_down ≤ value / (T·current) ≤ 1 + tol_up. So "report N·T to get N replicas" fails for small relative
moves: 10 → 11 never happens with tolerance 0.1.

The HPA's memory (the recommendations and scale events it keeps per object) is the caller's; these functions
take it as sequences of (time, value) pairs on the caller's clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE, HPA_SYNC_PERIOD_S

__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "Behavior",
    "PolicyType",
    "ScalingPolicy",
    "ScalingRules",
    "SelectPolicy",
    "desired_replicas",
    "in_window",
    "metric_value",
    "milli",
    "normalize",
    "normalize_legacy",
    "proposal",
    "proposal_for_average",
    "proposal_milli",
    "scale_down_limit",
    "scale_up_limit",
    "stabilize",
    "stabilize_legacy",
    "within_tolerance",
]

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """One direction of autoscaling/v2 HPAScalingRules. `tolerance` None: the controller's flag applies."""

    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"
    tolerance: float | None = None


# The API server's defaults for an HPA with a behavior (pkg/apis/autoscaling/v2/defaults.go,
# GenerateHPAScaleUpRules / GenerateHPAScaleDownRules): up at once by max(+4 pods, +100 %) per 15 s; down
# after 300 s of lower recommendations, by up to 100 % per 15 s.
DEFAULT_SCALE_UP = ScalingRules(
    0.0, (ScalingPolicy("Percent", 100, HPA_SYNC_PERIOD_S), ScalingPolicy("Pods", 4, HPA_SYNC_PERIOD_S)))
DEFAULT_SCALE_DOWN = ScalingRules(DEFAULT_SCALE_DOWN_WINDOW_S, (ScalingPolicy("Percent", 100, HPA_SYNC_PERIOD_S),))


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN

    def tolerances(self, default: float = DEFAULT_TOLERANCE) -> tuple[float, float]:
        """(up, down) in force: horizontal.go tolerancesForHpa takes a direction's `tolerance` when set (and
        the HPAConfigurableTolerance gate let the API server keep it), else the controller's flag."""
        up = self.scale_up.tolerance
        down = self.scale_down.tolerance
        return (default if up is None else up, default if down is None else down)


# ------------------------------------------------------------------------------------------ one metric


def milli(value: float) -> int:
    """A metric value or target as the HPA reads it (resource.Quantity.MilliValue(): whole thousandths,
    rounded up). Non-finite and negative values count as 0, as KEDA sends them."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return math.ceil(round(value * 1000.0, 6))


def within_tolerance(ratio: float, tolerance_up: float, tolerance_down: float) -> bool:
    """replica_calculator.go Tolerances.isWithin: 1 − down ≤ ratio ≤ 1 + up keeps the current count."""
    return 1.0 - tolerance_down <= ratio <= 1.0 + tolerance_up


def proposal_for_average(usage_milli: int, target_milli: int, status_replicas: int,
                         tolerance_up: float, tolerance_down: float) -> int:
    """replica_calculator.go GetExternalPerPodMetricReplicas: the ratio is taken against the Deployment's
    *status* replicas; outside the dead band the proposal is ceil(usage / target), whatever runs now."""
    if target_milli <= 0:
        raise ValueError(f"target must be > 0, got {target_milli} milli")
    replicas = status_replicas
    ratio = usage_milli / (target_milli * status_replicas) if status_replicas > 0 else math.inf
    if not within_tolerance(ratio, tolerance_up, tolerance_down):
        replicas = math.ceil(usage_milli / target_milli)
    return replicas


def desired_replicas(value: float, target: float, current: int, tolerance: float = DEFAULT_TOLERANCE,
                     tolerance_down: float | None = None) -> int:
    """What the HPA proposes from one AverageValue external metric (before windows, policies, min/max);
    `tolerance` is the up tolerance, and the down one too unless `tolerance_down` is given."""
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    down = tolerance if tolerance_down is None else tolerance_down
    return proposal_for_average(milli(value), max(1, milli(target)), current, tolerance, down)


def proposal_milli(usages: Sequence[int | None], targets: Sequence[int], status_replicas: int,
                   tolerance_up: float = DEFAULT_TOLERANCE, tolerance_down: float = DEFAULT_TOLERANCE) -> int | None:
    """horizontal.go computeReplicasForMetrics over several metrics (usages and targets in milli-units;
    None = that metric could not be read): the largest proposal wins; if every metric failed, or some
    failed and the rest would scale down, the HPA does not act this sync (None)."""
    if len(usages) != len(targets):
        raise ValueError("one target per metric value")
    proposals = [proposal_for_average(u, t, status_replicas, tolerance_up, tolerance_down)
                 for u, t in zip(usages, targets, strict=True) if u is not None]
    if not proposals:
        return None
    best = max(proposals)
    if len(proposals) < len(usages) and best < status_replicas:
        return None
    return best


def proposal(values: Sequence[float | None], targets: Sequence[float], current: int,
             tolerance_up: float = DEFAULT_TOLERANCE, tolerance_down: float = DEFAULT_TOLERANCE) -> int | None:
    """`proposal_milli` for values and targets in their units."""
    return proposal_milli([None if v is None else milli(v) for v in values], [max(1, milli(t)) for t in targets],
                          current, tolerance_up, tolerance_down)


# ------------------------------------------------------------------------------------------ windows


def in_window(t: float, now: float, window_s: float) -> bool:
    """A recommendation counts for a window when strictly newer than now − window (horizontal.go
    stabilizeRecommendationWithBehaviors: `rec.timestamp.After(cutoff)`)."""
    return t > now - window_s


def stabilize(recommendations: Iterable[tuple[float, int]], now: float, desired: int, current: int,
              up_window_s: float, down_window_s: float) -> int:
    """horizontal.go stabilizeRecommendationWithBehaviors: going up, the lowest recommendation of the up
    window; going down, the highest of the down window. `recommendations` are the earlier raw proposals the
    HPA recorded (time, replicas); `desired` is this sync's."""
    up = desired
    down = desired
    for t, n in recommendations:
        if in_window(t, now, up_window_s):
            up = min(up, n)
        if in_window(t, now, down_window_s):
            down = max(down, n)
    return min(max(current, up), down)


# ------------------------------------------------------------------------------------------ rate policies


def _change_in_period(events: Iterable[tuple[float, int]], now: float, period_s: float) -> int:
    # horizontal.go getReplicasChangePerPeriod: events strictly after now − period.
    return sum(change for t, change in events if t > now - period_s)


def _period_start(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                  now: float, period_s: float) -> int:
    return current - _change_in_period(up_events, now, period_s) + _change_in_period(down_events, now, period_s)


def scale_up_limit(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                   rules: ScalingRules, now: float) -> int:
    """horizontal.go calculateScaleUpLimitWithScalingRules: each policy starts from the count at the
    beginning of its period (current − added + removed within periodSeconds); Percent rounds up, so +x % of
    1 still adds one; Max takes the most permissive policy, Min the least, Disabled keeps the count."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, up_events, down_events, now, p.period_s)
        if p.type == "Pods":
            proposals.append(start + p.value)
        else:
            proposals.append(math.ceil(start * (1 + p.value / 100.0)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                     rules: ScalingRules, now: float) -> int:
    """horizontal.go calculateScaleDownLimitWithBehaviors: Percent truncates (the controller's int32 cast);
    "Max" selects the biggest change, which going down is the smallest count."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, up_events, down_events, now, p.period_s)
        if p.type == "Pods":
            proposals.append(start - p.value)
        else:
            proposals.append(int(start * (1 - p.value / 100.0)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def normalize(desired: int, current: int, min_replicas: int, max_replicas: int,
              up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
              behavior: Behavior, now: float) -> int:
    """horizontal.go convertDesiredReplicasWithBehaviorRate: the stabilized recommendation bounded by the rate
    limits (never past the current count in the wrong direction) and by min/max."""
    if desired > current:
        limit = max(current, scale_up_limit(current, up_events, down_events, behavior.scale_up, now))
        return min(desired, max_replicas, limit)
    if desired < current:
        limit = min(current, scale_down_limit(current, up_events, down_events, behavior.scale_down, now))
        return max(desired, min_replicas, limit)
    return desired


def stabilize_legacy(recommendations: Iterable[tuple[float, int]], now: float, desired: int, window_s: float) -> int:
    """horizontal.go stabilizeRecommendation, for an HPA without `behavior` (KEDA writes none when the
    ScaledObject has none): the highest recommendation not older than the down window (a sample exactly at
    the cutoff still counts here, unlike the behavior path); no up window."""
    return max([desired, *(n for t, n in recommendations if not t < now - window_s)])


def normalize_legacy(desired: int, current: int, min_replicas: int, max_replicas: int) -> int:
    """horizontal.go convertDesiredReplicasWithRules: min/max, and at most max(2·current, 4) going up
    (calculateScaleUpLimit)."""
    limit = min(max_replicas, max(2 * current, 4))
    return max(min_replicas, min(desired, limit))


# ------------------------------------------------------------------------------------------ the inverse


def metric_value(
    desired: int, current: int | None, target: float, tolerance: float = DEFAULT_TOLERANCE
) -> tuple[float, int]:
    """(value to report, replicas the HPA will then propose) for wanting `desired` replicas while it runs
    `current` (None: unknown, report desired·T); `tolerance` is the one of the move's direction."""
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
