"""The HorizontalPodAutoscaler KEDA creates for a ScaledObject, as the controller runs it, on the caller's
clock; and the in-process external scaler replay uses in place of a gRPC channel.

`HPA` is the controller's per-object memory (recommendations, scale events) and its reconcile
(kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go reconcileAutoscaler). Every arithmetic
rule it applies is a function of optimizer/hpa.py; this class only keeps the state those functions take.
KEDA's side (polling, activation, fallback, the metrics server) is sim/keda_emulator.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE
from optimizer.hpa import Behavior, normalize, normalize_legacy, proposal_milli, stabilize, stabilize_legacy
from scaler.metric import legacy_int, metric_name, report_value
from sim.keda_emulator import MetricSpec, MetricValue, ScaledObjectRef, ScalerCallError


@dataclass(frozen=True)
class HPAResult:
    at: float
    current: int
    proposal: int | None  # raw metric proposal (None: metrics unavailable, no action)
    desired: int  # after stabilization, policies, min/max
    reason: str


class HPA:
    """One HPA: remembers raw recommendations and scale events like the controller does. `behavior` None is
    an HPA without spec.behavior (the controller's legacy normalization)."""

    def __init__(self, min_replicas: int, max_replicas: int, behavior: Behavior | None,
                 tolerance_up: float = DEFAULT_TOLERANCE, tolerance_down: float | None = None,
                 downscale_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.behavior = behavior
        self.tolerance_up = tolerance_up
        self.tolerance_down = tolerance_up if tolerance_down is None else tolerance_down
        self.downscale_window_s = downscale_window_s  # --horizontal-pod-autoscaler-downscale-stabilization
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []

    def _keep_s(self) -> float:
        if self.behavior is None:
            return self.downscale_window_s
        b = self.behavior
        periods = [p.period_s for r in (b.scale_up, b.scale_down) for p in r.policies]
        return max([b.scale_up.stabilization_window_s, b.scale_down.stabilization_window_s, *periods, 0.0])

    def sync(self, now: float, current: int, values_milli: Sequence[int | None], targets_milli: Sequence[int]
             ) -> HPAResult:
        """reconcileAutoscaler with the Deployment at `current` replicas and these metric readings (milli)."""
        if not self.recommendations:
            # recordInitialRecommendation: the first reconcile remembers the current count as a proposal.
            self.recommendations.append((now, current))
        if current == 0 and self.min_replicas != 0:
            return HPAResult(now, current, None, 0, "ScalingDisabled: replicas are 0 (KEDA scales from zero)")
        if current > self.max_replicas:
            return self._apply(now, current, None, self.max_replicas, "current above maxReplicas")
        if current < self.min_replicas:
            return self._apply(now, current, None, self.min_replicas, "current below minReplicas")
        raw = proposal_milli(values_milli, targets_milli, current, self.tolerance_up, self.tolerance_down) \
            if values_milli else None
        if raw is None:
            return HPAResult(now, current, None, current, "FailedGetExternalMetric: not scaling")
        earlier = list(self.recommendations)
        self.recommendations = [(t, n) for t, n in self.recommendations if t > now - self._keep_s()]
        self.recommendations.append((now, raw))
        if self.behavior is None:
            stabilized = stabilize_legacy(earlier, now, raw, self.downscale_window_s)
            desired = normalize_legacy(stabilized, current, self.min_replicas, self.max_replicas)
        else:
            b = self.behavior
            stabilized = stabilize(earlier, now, raw, current, b.scale_up.stabilization_window_s,
                                   b.scale_down.stabilization_window_s)
            desired = normalize(stabilized, current, self.min_replicas, self.max_replicas,
                                self.up_events, self.down_events, b, now)
        if desired == raw:
            reason = "desired within range"
        elif desired == stabilized:
            reason = "stabilization window"
        else:
            reason = "rate policy or min/max"
        return self._apply(now, current, raw, desired, reason)

    def _apply(self, now: float, current: int, raw: int | None, desired: int, reason: str) -> HPAResult:
        keep = self._keep_s()
        self.up_events = [(t, c) for t, c in self.up_events if t > now - keep]
        self.down_events = [(t, c) for t, c in self.down_events if t > now - keep]
        # storeScaleEvent records only with a behavior (the legacy path has no rate memory).
        if self.behavior is not None:
            if desired > current:
                self.up_events.append((now, desired - current))
            elif desired < current:
                self.down_events.append((now, current - desired))
        return HPAResult(now, current, raw, desired, reason)


class RecommendationScaler:
    """A minimal external scaler for the emulator's own tests and the outage bench: a fixed recommendation
    reported through `scaler.metric`. The replay does not use it: it calls sim/inprocess.py, which answers
    with the servicer's own functions (scaler/answer.py) over the Controller's table."""

    def __init__(self, recommend: Callable[[ScaledObjectRef], int | None],
                 current: Callable[[ScaledObjectRef], int | None], target: float = 1.0,
                 tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.recommend = recommend
        self.current = current
        self.target = target
        self.tolerance = tolerance

    @staticmethod
    def metric_name(ref: ScaledObjectRef) -> str:
        return metric_name(ref.namespace, ref.scaler_metadata.get("variant", ref.name))

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        return [MetricSpec(self.metric_name(ref), max(1, round(self.target)), self.target)]

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        if metric_name.lower() != self.metric_name(ref):
            raise ScalerCallError("NOT_FOUND", f"unknown metric {metric_name}")
        desired = self.recommend(ref)
        if desired is None:
            raise ScalerCallError("UNAVAILABLE", f"no recommendation for {ref.namespace}/{ref.name}")
        value = report_value(desired, self.current(ref), self.target, self.tolerance, self.tolerance)
        return [MetricValue(metric_name, legacy_int(value), value)]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        desired = self.recommend(ref)
        return desired is not None and desired > 0
