"""KEDA's side of the emulator: polling, activation from zero, cooldown to zero, external-push, fallback on
errors, and the whole chain from a recommendation to the Deployment's replicas (RecommendationScaler →
GetMetrics value → HPA arithmetic), driven by a clock the test owns."""

from __future__ import annotations

import pytest
import yaml

from optimizer.hpa import Behavior, ScalingPolicy, ScalingRules
from sim.hpa_emulator import RecommendationScaler
from sim.keda_emulator import (
    EmulatorConfigError,
    Fallback,
    MetricSpec,
    MetricValue,
    ScaledObjectEmulator,
    ScaledObjectRef,
    ScaledObjectSpec,
    ScalerCallError,
    StreamBackoff,
    parse_scaled_object,
)


class Fleet:
    """The Deployment side: spec replicas, plus what the scaler would recommend."""

    def __init__(self, replicas: int = 0) -> None:
        self.replicas = replicas
        self.recommendation: int | None = 0
        self.broken: set[str] = set()  # rpc names that fail

    def scaler(self, target: float = 1.0) -> RecommendationScaler:
        fleet = self

        class Flaky(RecommendationScaler):
            def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
                if "spec" in fleet.broken:
                    raise ScalerCallError("UNAVAILABLE", "down")
                return super().get_metric_spec(ref)

            def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
                if "metrics" in fleet.broken:
                    raise ScalerCallError("UNAVAILABLE", "no data")
                return super().get_metrics(ref, metric_name)

            def is_active(self, ref: ScaledObjectRef) -> bool:
                if "active" in fleet.broken:
                    raise ScalerCallError("UNAVAILABLE", "no data")
                return super().is_active(ref)

        return Flaky(lambda ref: fleet.recommendation, lambda ref: fleet.replicas, target)


def spec(**kw: object) -> ScaledObjectSpec:
    base: dict[str, object] = dict(name="so-a100", namespace="llm", deployment="m-a100",
                                   metadata={"scalerAddress": "x", "model": "m", "variant": "m-a100"})
    base.update(kw)
    return ScaledObjectSpec(**base)  # type: ignore[arg-type]


def run(emu: ScaledObjectEmulator, fleet: Fleet, until: float, step: float = 1.0, start: float = 0.0
        ) -> list[tuple[float, int]]:
    out = []
    t = start
    while t <= until:
        fleet.replicas = emu.advance(t, fleet.replicas)
        out.append((t, fleet.replicas))
        t += step
    return out


@pytest.mark.parametrize(
    ("min_replicas", "expected"),
    [(0, 1), (3, 3)],
)
def test_activation_from_zero_waits_for_poll(min_replicas: int, expected: int) -> None:
    fleet = Fleet(0)
    emu = ScaledObjectEmulator(spec(min_replicas=min_replicas), fleet.scaler(), created_at=0.0)
    fleet.recommendation = 0
    run(emu, fleet, 10)
    assert fleet.replicas == (min_replicas if min_replicas else 0)
    fleet.replicas = 0
    fleet.recommendation = 5
    trace = dict(run(emu, fleet, 40, start=11))
    assert trace[29] == 0  # polls at 0, 30, 60...: nothing before the next poll
    # The poll at t=30 activates to max(1, min); the HPA sync at t=30 (same instant, after the poll)
    # then moves on towards the recommendation within its rate policy.
    first_scale = next(e for e in emu.events if e.kind == "scale" and e.at == 30)
    assert (first_scale.replicas_before, first_scale.replicas_after) == (0, expected)
    assert trace[30] == 5


def test_push_true_scales_from_zero_at_once_and_false_is_ignored() -> None:
    fleet = Fleet(0)
    emu = ScaledObjectEmulator(spec(trigger_type="external-push"), fleet.scaler(), created_at=0.0)
    run(emu, fleet, 5)
    assert fleet.replicas == 0
    assert emu.push(False, 5.5, 0) == 0
    fleet.recommendation = 2
    fleet.replicas = emu.push(True, 6.0, fleet.replicas)
    assert fleet.replicas == 1
    trace = dict(run(emu, fleet, 16, start=7))
    assert trace[15] == 2  # HPA sync at 15 takes it to the recommendation


def test_cooldown_to_zero() -> None:
    fleet = Fleet(0)
    fast_down = Behavior(scale_down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))
    emu = ScaledObjectEmulator(spec(polling_interval_s=10, cooldown_period_s=60, behavior=fast_down),
                               fleet.scaler(), created_at=0.0)
    fleet.recommendation = 2
    run(emu, fleet, 20)
    assert fleet.replicas == 2
    fleet.recommendation = 0
    trace = dict(run(emu, fleet, 200, start=21))
    # Last active poll at t=20: the HPA keeps ≥ 1 (its min), KEDA takes 1 → 0 at the first poll after
    # 20 + 60 (strictly later), which is t=90.
    assert trace[80] == 1
    assert trace[89] == 1
    assert trace[90] == 0
    assert trace[200] == 0


def test_never_active_scales_to_zero_after_initial_cooldown() -> None:
    fleet = Fleet(2)
    emu = ScaledObjectEmulator(spec(initial_cooldown_period_s=45), fleet.scaler(), created_at=0.0)
    fleet.recommendation = 0
    trace = dict(run(emu, fleet, 70))
    assert trace[59] > 0
    assert trace[60] == 0  # the poll at 60 is the first past the initial cooldown


@pytest.mark.parametrize(
    ("version", "first_fallback_at"),
    [
        # Up to v2.18 only the HPA's metric reads (every 15 s) count failures: syncs at 30, 45, 60 fail,
        # the 4th (t=75) passes failureThreshold 3.
        ((2, 18), 75),
        # From v2.19 the scale loop's poll counts too (getScalerState → GetMetricsWithFallback): poll 30,
        # syncs 30 and 45, poll 60 → the threshold passes at t=60.
        ((2, 20), 60),
    ],
)
def test_fallback_after_threshold_then_recovery(version: tuple[int, int], first_fallback_at: int) -> None:
    fleet = Fleet(4)
    emu = ScaledObjectEmulator(
        spec(min_replicas=1, fallback=Fallback(failure_threshold=3, replicas=6),
             behavior=Behavior(scale_down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))),
        fleet.scaler(), created_at=0.0, keda_version=version)
    fleet.recommendation = 4
    run(emu, fleet, 20)
    assert fleet.replicas == 4
    fleet.broken = {"metrics"}
    trace = dict(run(emu, fleet, 100, start=21))
    assert trace[first_fallback_at - 1] == 4
    assert trace[first_fallback_at] == 6
    fleet.broken = set()
    trace = dict(run(emu, fleet, 130, start=101))
    assert trace[105] == 4  # first good read resets the count and goes back to the recommendation
    assert emu.failures == 0


def test_errors_without_fallback_do_not_scale() -> None:
    fleet = Fleet(4)
    emu = ScaledObjectEmulator(spec(min_replicas=1), fleet.scaler(), created_at=0.0)
    fleet.recommendation = 4
    fleet.broken = {"active"}  # IsActive failing discards the whole read
    trace = dict(run(emu, fleet, 200))
    assert set(trace.values()) == {4}
    # fallback.go GetMetricsWithFallback tracks health only for ScaledObjects with a valid fallback.
    assert emu.failures == 0
    assert any(e.kind == "error" for e in emu.events)


def test_recommendation_survives_tolerance_through_metric_value() -> None:
    """10 → 11 is within the HPA's ±10 % when the scaler reports 11·T; the scaler's value choice (from the
    current count) lands it beyond the dead band, on the safe side."""
    fleet = Fleet(10)
    emu = ScaledObjectEmulator(spec(min_replicas=1, max_replicas=40), fleet.scaler(target=1.0), created_at=0.0)
    fleet.recommendation = 10
    run(emu, fleet, 10)
    fleet.recommendation = 11
    run(emu, fleet, 20, start=11)
    assert fleet.replicas == 12  # the nearest count the HPA will move to, never fewer than asked


def test_max_replicas_and_rate_policy_bound_scale_up() -> None:
    fleet = Fleet(1)
    emu = ScaledObjectEmulator(spec(min_replicas=1, max_replicas=12), fleet.scaler(), created_at=0.0)
    fleet.recommendation = 50
    trace = dict(run(emu, fleet, 31))
    assert trace[0] == 5  # +4 pods beats +100 % from 1
    assert trace[15] == 10
    assert trace[30] == 12  # max


MANIFEST = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: m-a100, namespace: llm}
spec:
  scaleTargetRef: {name: m-a100}
  pollingInterval: 5
  cooldownPeriod: 120
  minReplicaCount: 0
  maxReplicaCount: 8
  fallback: {failureThreshold: 3, replicas: 2, behavior: currentReplicasIfHigher}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 60
          policies: [{type: Pods, value: 1, periodSeconds: 30}]
  triggers:
  - type: external-push
    metadata: {scalerAddress: "127.0.0.1:9090", model: m, variant: m-a100}
"""


def test_parse_scaled_object() -> None:
    s = parse_scaled_object(yaml.safe_load(MANIFEST))
    assert (s.name, s.namespace, s.deployment, s.trigger_type) == ("m-a100", "llm", "m-a100", "external-push")
    assert (s.polling_interval_s, s.cooldown_period_s, s.max_replicas, s.hpa_min_replicas) == (5, 120, 8, 1)
    assert s.fallback == Fallback(3, 2, "currentReplicasIfHigher")
    assert s.behavior.scale_down == ScalingRules(60, (ScalingPolicy("Pods", 1, 30),), "Max")
    assert s.behavior.scale_up.stabilization_window_s == 0  # untouched direction keeps the defaults
    assert s.metadata["variant"] == "m-a100"


def test_parse_scaled_object_reports_every_problem() -> None:
    doc = yaml.safe_load(MANIFEST)
    doc["spec"]["maxReplicaCount"] = 0
    doc["spec"]["triggers"][0]["type"] = "prometheus"
    doc["spec"]["fallback"]["behavior"] = "sometimes"
    doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"][0]["type"] = "X"
    with pytest.raises(EmulatorConfigError) as err:
        parse_scaled_object(doc, "so.yaml")
    text = str(err.value)
    for needle in ("spec.maxReplicaCount", "spec.triggers[0].type", "spec.fallback.behavior",
                   "scaleDown.policies[0].type", "so.yaml"):
        assert needle in text


# ---------------------------------------------------------------------------------------------------------
# KEDA as upstream implements it, rule by rule (sim/keda_emulator.py cites the functions)


@pytest.mark.parametrize(
    ("is_active", "is_error", "current", "min_r", "idle", "fallback", "last_active", "now", "expected"),
    [
        # RequestScale, isActive: from zero (or below min with idleReplicaCount) to max(1, min) at once.
        (True, False, 0, 0, None, None, None, 10.0, 1),
        (True, False, 0, 3, None, None, None, 10.0, 3),
        (True, True, 0, 0, None, None, None, 10.0, 1),  # even when another trigger errs
        (True, False, 1, 3, 0, None, None, 10.0, 3),  # idle mode below min
        (True, False, 4, 0, None, None, None, 10.0, 4),
        # isActive false and an error: a fallback with replicas != 0, or no fallback, holds.
        (False, True, 4, 0, None, Fallback(3, 2), 0.0, 1000.0, 4),
        (False, True, 4, 0, None, None, 0.0, 1000.0, 4),
        # ... but a fallback with replicas 0 falls through to the scale-to-zero path after cooldown (300 s).
        (False, True, 4, 0, None, Fallback(3, 0, "currentReplicasIfHigher"), 0.0, 1000.0, 0),
        (False, True, 4, 0, None, Fallback(3, 0, "currentReplicasIfHigher"), 900.0, 1000.0, 4),  # cooling
        # Not active, no error: to zero after cooldown (strictly later), to idle, or up to min.
        (False, False, 4, 0, None, None, 0.0, 300.0, 4),
        (False, False, 4, 0, None, None, 0.0, 300.5, 0),
        (False, False, 4, 3, 1, None, 0.0, 400.0, 1),
        (False, False, 1, 3, None, None, 0.0, 400.0, 3),
        (False, False, 0, 0, None, None, None, 400.0, 0),
    ],
)
def test_request_scale(is_active: bool, is_error: bool, current: int, min_r: int, idle: int | None,
                       fallback: Fallback | None, last_active: float | None, now: float, expected: int) -> None:
    emu = ScaledObjectEmulator(spec(min_replicas=min_r, idle_replicas=idle, fallback=fallback, max_replicas=10),
                               Fleet(current).scaler(), created_at=0.0)
    emu.last_active = last_active
    assert emu.request_scale(now, current, is_active=is_active, is_error=is_error) == expected


class Recording:
    """A scaler that records the rpc order and fails the rpcs named in `broken`."""

    def __init__(self, broken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.broken = set(broken)
        self.calls: list[str] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.broken:
            raise ScalerCallError("UNAVAILABLE", "down")

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        self._maybe_fail("GetMetricSpec")
        return [MetricSpec("gpumix-llm-m-a100", 1, 1.0)]

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        self._maybe_fail("GetMetrics")
        return [MetricValue(metric_name, 2, 2.0)]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        self._maybe_fail("IsActive")
        return True


@pytest.mark.parametrize(
    ("broken", "calls"),
    [
        # external_scaler.go GetMetricsAndActivity: GetMetricSpec, then GetMetrics, then IsActive.
        (set(), ["GetMetricSpec", "GetMetrics", "IsActive"]),
        # scalers_cache.go: a failed rpc rebuilds the scaler and tries once more; GetMetrics failing stops
        # the read before IsActive.
        ({"GetMetrics"}, ["GetMetricSpec", "GetMetrics", "GetMetrics"]),
        ({"IsActive"}, ["GetMetricSpec", "GetMetrics", "IsActive", "GetMetrics", "IsActive"]),
        # GetMetricSpecForScalingForScaler: an empty spec (the rpc failed) is asked for once more, then the
        # read stops: no GetMetrics, and so no fallback accounting at all.
        ({"GetMetricSpec"}, ["GetMetricSpec", "GetMetricSpec"]),
    ],
)
def test_call_order_per_poll(broken: set[str], calls: list[str]) -> None:
    scaler = Recording(broken)
    emu = ScaledObjectEmulator(spec(hpa_sync_period_s=1e9), scaler, created_at=0.0)
    emu.next_sync = 1e9  # only the poll
    emu.advance(0.0, 2)
    assert scaler.calls == calls


@pytest.mark.parametrize(
    ("version", "woken"),
    [((2, 17), False), ((2, 18), False), ((2, 19), True), ((2, 20), True)],
)
def test_fallback_counts_as_activity_from_2_19(version: tuple[int, int], woken: bool) -> None:
    """scale_handler.go getScalerState (v2.19+): isActiveOrFallback. An idle variant with a fallback is
    started while gpumix answers UNAVAILABLE; before 2.19 the scale loop saw only the error."""
    fleet = Fleet(0)
    emu = ScaledObjectEmulator(spec(fallback=Fallback(3, 2, "currentReplicasIfHigher"), polling_interval_s=15),
                               fleet.scaler(), created_at=0.0, keda_version=version)
    fleet.broken = {"metrics"}
    trace = dict(run(emu, fleet, 300))
    assert (max(trace.values()) > 0) == woken


def test_gpumix_unreachable_never_reaches_fallback() -> None:
    """With GetMetricSpec failing (gpumix down), neither path gets to GetMetricsWithFallback: the failure
    count stays 0 and a fallback never engages; what decides is RequestScale's error branch."""
    fleet = Fleet(3)
    emu = ScaledObjectEmulator(spec(fallback=Fallback(3, 5, "currentReplicasIfHigher")), fleet.scaler(),
                               created_at=0.0)
    fleet.broken = {"spec", "metrics", "active"}
    trace = dict(run(emu, fleet, 900))
    assert set(trace.values()) == {3}
    assert emu.failures == 0


@pytest.mark.parametrize(
    ("version", "clean", "waits"),
    [
        # runStreamIsActive: 2 s doubling to 60 s; only a clean end (io.EOF) resets, and only from v2.18.
        ((2, 20), [False] * 7, [2, 4, 8, 16, 32, 60, 60]),
        ((2, 20), [True] * 4, [2, 2, 2, 2]),
        ((2, 17), [True] * 4, [2, 4, 8, 16]),
        ((2, 20), [False, False, False, True, False], [2, 4, 8, 2, 4]),
    ],
)
def test_stream_backoff(version: tuple[int, int], clean: list[bool], waits: list[float]) -> None:
    backoff = StreamBackoff(version)
    assert [backoff.after_end(c) for c in clean] == waits


@pytest.mark.parametrize(
    ("version", "replicas"),
    [((2, 16), 3), ((2, 17), 5)],
)
def test_fractional_target_needs_the_float_fields(version: tuple[int, int], replicas: int) -> None:
    """Before v2.17 KEDA reads only targetSize (an int): a target of 0.5 is sent as round(0.5)=0 → 1, so 5
    wanted replicas (value 2.5) land on ceil(2.5 / 1) = 3. gpumix refuses those releases."""
    fleet = Fleet(1)
    emu = ScaledObjectEmulator(spec(min_replicas=1), fleet.scaler(target=0.5), created_at=0.0,
                               keda_version=version)
    fleet.recommendation = 5
    run(emu, fleet, 60)
    assert fleet.replicas == replicas


@pytest.mark.parametrize(
    ("field_kept", "aim_tolerance", "lands"),
    [
        # Kubernetes 1.34: the API server dropped behavior.*.tolerance, the HPA applies 0.1. Aiming with the
        # ScaledObject's 0 (what gpumix read before) leaves 10 → 11 in the dead band forever.
        (False, 0.0, 10),
        # Aiming with the tolerance in force (scaler/kube.py reads it from the HPA): lands at or above 11.
        (False, 0.1, 12),
        # 1.35: the field is kept, 0 is in force, and aiming with 0 lands exactly.
        (True, 0.0, 11),
    ],
)
def test_tolerance_in_force_decides_whether_small_moves_land(field_kept: bool, aim_tolerance: float,
                                                             lands: int) -> None:
    zero = ScalingRules(0.0, (ScalingPolicy("Pods", 40, 15),), tolerance=0.0)
    behavior = Behavior(scale_up=zero, scale_down=ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15),),
                                                               tolerance=0.0))
    fleet = Fleet(10)
    scaler = RecommendationScaler(lambda ref: fleet.recommendation, lambda ref: fleet.replicas, 1.0, aim_tolerance)
    emu = ScaledObjectEmulator(spec(min_replicas=1, max_replicas=40, behavior=behavior,
                                    tolerance_field_kept=field_kept), scaler, created_at=0.0)
    fleet.recommendation = 10
    run(emu, fleet, 10)
    fleet.recommendation = 11
    run(emu, fleet, 120, start=11)
    assert fleet.replicas == lands
