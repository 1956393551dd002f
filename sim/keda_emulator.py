"""KEDA as it is, release by release, on a clock the caller passes in: the scale loop, the executor, the
metrics server with its fallback accounting, and the external scaler's client side. The HPA it feeds is
sim/hpa_emulator.py (whose rules are optimizer/hpa.py); sim/keda_grpc.py drives this over real gRPC.

Every rule cites the kedacore/keda file and function it follows (read at v2.12.0 … v2.20.2 and main):

- the scaler client (pkg/scalers/external_scaler.go, pkg/scaling/cache/scalers_cache.go): per read,
  GetMetricSpec, then GetMetrics, then IsActive; a failed or empty GetMetricSpec, and a failed
  GetMetrics/IsActive, are retried once after the scaler is rebuilt (`refreshScaler`);
- the scale loop (pkg/scaling/scale_handler.go checkScalers / getScalerState) every pollingInterval, and
  the executor (pkg/scaling/executor/scale_scaledobjects.go RequestScale) it calls;
- the HPA's metric reads (scale_handler.go GetScaledObjectMetrics) with fallback
  (pkg/fallback/fallback.go GetMetricsWithFallback / doFallback); from v2.19 the scale loop runs the same
  fallback accounting, so failures are counted on both paths and a fallback counts as activity
  (`isActiveOrFallback`);
- push triggers (scale_handler.go startPushScalers; external_scaler.go runStreamIsActive and its backoff).

Nothing here sleeps or reads a clock; times are seconds on the caller's clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from optimizer.defaults import (
    DEFAULT_TOLERANCE,
    HPA_SYNC_PERIOD_S,
    KEDA_DEFAULT_COOLDOWN_PERIOD_S,
    KEDA_DEFAULT_MAX_REPLICAS,
    KEDA_DEFAULT_POLLING_INTERVAL_S,
    KEDA_STREAM_BACKOFF_MAX_S,
    KEDA_STREAM_BACKOFF_START_S,
)
from optimizer.errors import InputError
from optimizer.hpa import Behavior
from scaler.scaledobject import Fallback, FallbackBehavior, ScaledObject, read_scaled_object
from scaler.versions import KEDA_TOLERANCE_FIELD, MAX_KEDA_TESTED, Version

KedaVersion = Version
CURRENT_KEDA: KedaVersion = MAX_KEDA_TESTED
# Releases whose behaviour differs in ways that change what a Deployment does (checked against the tags):
FLOAT_FIELDS_SINCE: KedaVersion = (2, 17)  # externalscaler.proto targetSizeFloat / metricValueFloat
FALLBACK_BEHAVIOR_SINCE: KedaVersion = (2, 17)  # spec.fallback.behavior (CRD and fallback.go doFallback)
STREAM_RESET_ON_EOF_SINCE: KedaVersion = (2, 18)  # runStreamIsActive resets its backoff on a clean end
TOLERANCE_FIELD_SINCE: KedaVersion = KEDA_TOLERANCE_FIELD  # behavior.*.tolerance in the ScaledObject CRD
SCALE_LOOP_FALLBACK_SINCE: KedaVersion = (2, 19)  # getScalerState runs fallback; isActiveOrFallback
MILLI_ROUNDING_SINCE: KedaVersion = (2, 20)  # GenerateMetricInMili rounds to 3 decimals (before: truncates)

__all__ = [
    "CURRENT_KEDA",
    "EmulatorConfigError",
    "Event",
    "ExternalScaler",
    "Fallback",
    "MetricSpec",
    "MetricValue",
    "ScaledObjectEmulator",
    "ScaledObjectRef",
    "ScaledObjectSpec",
    "ScalerCallError",
    "StreamBackoff",
    "fallback_replicas",
    "parse_scaled_object",
    "spec_from_scaled_object",
]


class EmulatorConfigError(InputError):
    """A ScaledObject the emulator cannot run, with every problem found (field paths as in the manifest)."""


@dataclass(frozen=True)
class ScaledObjectSpec:
    """The fields of one ScaledObject (and of the HPA KEDA makes from it) that change what happens."""

    name: str
    namespace: str
    deployment: str
    metadata: Mapping[str, str]
    trigger_type: Literal["external", "external-push"] = "external"
    min_replicas: int = 0
    max_replicas: int = KEDA_DEFAULT_MAX_REPLICAS
    idle_replicas: int | None = None
    polling_interval_s: float = KEDA_DEFAULT_POLLING_INTERVAL_S
    cooldown_period_s: float = KEDA_DEFAULT_COOLDOWN_PERIOD_S
    initial_cooldown_period_s: float = 0.0
    fallback: Fallback | None = None
    behavior: Behavior = field(default_factory=Behavior)
    behavior_set: bool = True
    hpa_sync_period_s: float = HPA_SYNC_PERIOD_S
    # The HPA controller's --horizontal-pod-autoscaler-tolerance; behavior.*.tolerance overrides it per
    # direction only where the cluster keeps that field (see `tolerance_field_kept`).
    tolerance: float = DEFAULT_TOLERANCE
    tolerance_field_kept: bool = True

    @property
    def hpa_min_replicas(self) -> int:
        # controllers/keda/hpa.go getHPAMinReplicas: minReplicaCount when > 0, else 1 (KEDA does 0 ↔ 1).
        return max(1, self.min_replicas)

    def hpa_tolerances(self) -> tuple[float, float]:
        if not self.tolerance_field_kept:
            return self.tolerance, self.tolerance
        return self.behavior.tolerances(self.tolerance)


def spec_from_scaled_object(so: ScaledObject, *, hpa_sync_period_s: float = HPA_SYNC_PERIOD_S,
                            tolerance: float = DEFAULT_TOLERANCE, tolerance_field_kept: bool = True,
                            source: str = "ScaledObject") -> ScaledObjectSpec:
    """The emulator's view of a ScaledObject read by scaler.scaledobject (one external trigger)."""
    problems = []
    if len(so.triggers) != 1:
        problems.append("spec.triggers: the emulator needs exactly one trigger")
    trigger = so.triggers[0] if so.triggers else None
    trigger_type: Literal["external", "external-push"] = "external"
    if trigger is not None:
        if trigger.type == "external-push":
            trigger_type = "external-push"
        elif trigger.type != "external":
            problems.append(f"spec.triggers[0].type: must be external or external-push, got {trigger.type!r}")
        if trigger.metric_type != "AverageValue":
            problems.append(f"spec.triggers[0].metricType: the emulator supports AverageValue, got "
                            f"{trigger.metric_type!r}")
    if problems:
        raise EmulatorConfigError(source, problems)
    return ScaledObjectSpec(
        name=so.name, namespace=so.namespace, deployment=so.target_name,
        metadata=dict(trigger.metadata) if trigger else {}, trigger_type=trigger_type,
        min_replicas=so.min_replicas, max_replicas=so.max_replicas, idle_replicas=so.idle_replicas,
        polling_interval_s=so.polling_interval_s, cooldown_period_s=so.cooldown_period_s,
        initial_cooldown_period_s=so.initial_cooldown_period_s, fallback=so.fallback, behavior=so.behavior,
        behavior_set=so.behavior_set, hpa_sync_period_s=hpa_sync_period_s, tolerance=tolerance,
        tolerance_field_kept=tolerance_field_kept,
    )


def parse_scaled_object(manifest: object, source: str = "ScaledObject", *,
                        hpa_sync_period_s: float = HPA_SYNC_PERIOD_S) -> ScaledObjectSpec:
    """A ScaledObject manifest → ScaledObjectSpec, through the project's one reader; every problem at once."""
    so, problems = read_scaled_object(manifest, source)
    if so is None:
        raise EmulatorConfigError(source, problems)
    try:
        spec = spec_from_scaled_object(so, hpa_sync_period_s=hpa_sync_period_s, source=source)
    except EmulatorConfigError as exc:
        problems = [*problems, *exc.problems]
    if problems:
        raise EmulatorConfigError(source, problems)
    return spec


# ---------------------------------------------------------------------------------------------------------
# The wire: what KEDA sends and receives (externalscaler.proto)


class ScalerCallError(Exception):
    """A failed call to the external scaler (gRPC status code name and message)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class ScaledObjectRef:
    name: str
    namespace: str
    scaler_metadata: Mapping[str, str]


@dataclass(frozen=True)
class MetricSpec:
    metric_name: str
    target_size: int = 0
    target_size_float: float = 0.0

    def target(self, version: KedaVersion = CURRENT_KEDA) -> float:
        # external_scaler.go buildMetricSpecs: the float when > 0 (from v2.17), else the int.
        if version >= FLOAT_FIELDS_SINCE and self.target_size_float > 0:
            return self.target_size_float
        return float(self.target_size)


@dataclass(frozen=True)
class MetricValue:
    metric_name: str
    metric_value: int = 0
    metric_value_float: float = 0.0

    def value(self, version: KedaVersion = CURRENT_KEDA) -> float:
        # external_scaler.go GetMetricsAndActivity: the float when > 0 (from v2.17), else the int.
        if version >= FLOAT_FIELDS_SINCE and self.metric_value_float > 0:
            return self.metric_value_float
        return float(self.metric_value)


class ExternalScaler(Protocol):
    """The unary rpcs of KEDA's externalscaler.ExternalScaler; failures raise ScalerCallError."""

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]: ...

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]: ...

    def is_active(self, ref: ScaledObjectRef) -> bool: ...


def to_milli(value: float, version: KedaVersion = CURRENT_KEDA) -> int:
    """The quantity KEDA hands the HPA for a metric value (scaler.go GenerateMetricInMili): NaN, ±Inf and
    negatives become 0; v2.20 rounds to thousandths ("%.3f"), earlier releases truncate (int64(v·1000))."""
    if not math.isfinite(value) or value < 0:
        return 0
    if version >= MILLI_ROUNDING_SINCE:
        return round(value * 1000.0)
    return int(value * 1000.0)


def fallback_replicas(fallback: Fallback, current: int, version: KedaVersion = CURRENT_KEDA) -> int:
    """fallback.go doFallback: the replica count reported (as replicas × target) once failures pass the
    threshold. Before v2.17 there is no behavior field: always the static count."""
    behavior: FallbackBehavior = fallback.behavior if version >= FALLBACK_BEHAVIOR_SINCE else "static"
    if behavior == "currentReplicas":
        return current
    if behavior == "currentReplicasIfHigher":
        return max(current, fallback.replicas)
    if behavior == "currentReplicasIfLower":
        return min(current, fallback.replicas)
    return fallback.replicas


class StreamBackoff:
    """external_scaler.go runStreamIsActive: after a stream ends, wait, then reconnect; the wait starts at
    2 s and doubles to 60 s after every attempt. From v2.18 a clean end (io.EOF: status OK) resets it to
    2 s; an error (UNAVAILABLE, CANCELLED on a server shutdown) never does."""

    def __init__(self, version: KedaVersion = CURRENT_KEDA) -> None:
        self.version = version
        self.retry_s = KEDA_STREAM_BACKOFF_START_S

    def after_end(self, clean: bool) -> float:
        if clean and self.version >= STREAM_RESET_ON_EOF_SINCE:
            self.retry_s = KEDA_STREAM_BACKOFF_START_S
        wait = self.retry_s
        self.retry_s = min(self.retry_s * 2, KEDA_STREAM_BACKOFF_MAX_S)
        return wait


@dataclass(frozen=True)
class Event:
    """Something the emulator did or saw, for logs, the demo's table and tests."""

    at: float
    kind: str  # poll | hpa | scale | push | error | fallback
    replicas_before: int
    replicas_after: int
    detail: str = ""


@dataclass
class _Read:
    """One metric read for one metric name: values (None: the read failed), activity, fallback."""

    metric_name: str
    target: float
    milli: int | None
    active: bool
    fallback: bool
    error: str | None


class ScaledObjectEmulator:
    """KEDA's handling of one ScaledObject plus the HPA it creates.

    Call `advance(now, current)` whenever time passes (it runs every poll and HPA sync that is due, in
    order) and `push(active, now, current)` for each StreamIsActive message; both return the replica count
    the Deployment should have (apply it if it differs from `current`)."""

    def __init__(self, spec: ScaledObjectSpec, scaler: ExternalScaler, created_at: float,
                 keda_version: KedaVersion = CURRENT_KEDA) -> None:
        # Imported here: sim.hpa_emulator's in-process scaler speaks this module's wire types.
        from sim.hpa_emulator import HPA

        self.spec = spec
        self.scaler = scaler
        self.version = keda_version
        self.created_at = created_at
        self.ref = ScaledObjectRef(spec.name, spec.namespace, dict(spec.metadata))
        up, down = spec.hpa_tolerances()
        self.hpa = HPA(spec.hpa_min_replicas, spec.max_replicas, spec.behavior if spec.behavior_set else None,
                       up, down)
        # The HPA's metric specs are written by KEDA's controller when it builds the HPA
        # (controllers/keda/hpa.go getScaledObjectMetricSpecs): fixed until the next reconcile.
        self.hpa_metrics: list[tuple[str, float]] | None = None
        self.next_poll = created_at
        self.next_sync = created_at
        self.last_active: float | None = None
        # status.health[metric].numberOfFailures (fallback.go IncrementFailure / UpdateHealthStatus), shared
        # by the scale loop (from v2.19) and the HPA's metric reads.
        self.health: dict[str, int] = {}
        self.events: list[Event] = []
        self.last_metric: float | None = None  # last value the HPA saw (after fallback)
        self.last_target: float | None = None
        self.listeners: list[Callable[[Event], None]] = []
        self.calls: list[str] = []  # rpc names in the order KEDA made them (tests read the call order)

    @property
    def failures(self) -> int:
        return max(self.health.values(), default=0)

    # -- time ------------------------------------------------------------------------------------------------
    def next_due(self) -> float:
        return min(self.next_poll, self.next_sync)

    def advance(self, now: float, current: int) -> int:
        replicas = current
        while self.next_due() <= now:
            # KEDA's poll and the HPA's sync are independent loops; when both fall due, poll first.
            if self.next_poll <= self.next_sync:
                at = self.next_poll
                replicas = self._poll(at, replicas)
                self.next_poll = at + self.spec.polling_interval_s
            else:
                at = self.next_sync
                replicas = self._sync(at, replicas)
                self.next_sync = at + self.spec.hpa_sync_period_s
        return replicas

    def push(self, active: bool, now: float, current: int) -> int:
        """A StreamIsActive message. scale_handler.go startPushScalers: `false` is ignored (inactivation
        happens through the scale loop); `true` calls RequestScale(isActive=true, isError=false) at once."""
        self._record(Event(now, "push", current, current, f"active={active}"))
        if not active:
            return current
        return self.request_scale(now, current, is_active=True, is_error=False)

    # -- the scaler client (pkg/scaling/cache/scalers_cache.go) ------------------------------------------------
    def _call_spec(self) -> list[MetricSpec]:
        self.calls.append("GetMetricSpec")
        try:
            return self.scaler.get_metric_spec(self.ref)
        except ScalerCallError:
            return []  # external_scaler.go GetMetricSpecForScaling logs the error and returns nil

    def _metric_specs(self) -> tuple[list[MetricSpec], str | None]:
        """GetMetricSpecForScalingForScaler: an empty answer rebuilds the scaler and asks once more."""
        specs = self._call_spec()
        if not specs:
            specs = self._call_spec()
            if not specs:
                return [], "got empty metric spec"
        return specs, None

    def _metrics_and_activity(self, metric_name: str) -> tuple[list[MetricValue], bool, str | None]:
        """GetMetricsAndActivityForScaler → external_scaler.go GetMetricsAndActivity (GetMetrics, then
        IsActive); an error rebuilds the scaler and tries once more."""
        error: str | None = None
        for _ in range(2):
            try:
                self.calls.append("GetMetrics")
                values = self.scaler.get_metrics(self.ref, metric_name)
                self.calls.append("IsActive")
                active = self.scaler.is_active(self.ref)
                return values, active, None
            except ScalerCallError as e:
                error = str(e)
        return [], False, error

    # -- fallback (pkg/fallback/fallback.go) ---------------------------------------------------------------
    def _with_fallback(self, metric_name: str, target: float, milli: int | None, error: str | None,
                       current: int) -> tuple[int | None, bool, str | None]:
        fb = self.spec.fallback
        # HasValidFallback: failureThreshold >= 0 and replicas >= 0.
        configured = fb is not None and fb.failure_threshold >= 0 and fb.replicas >= 0
        if error is None:
            if configured:
                self.health[metric_name] = 0
            return milli, False, None
        if fb is None or not configured:
            return None, False, error
        self.health[metric_name] = self.health.get(metric_name, 0) + 1
        if self.health[metric_name] > fb.failure_threshold:
            n = fallback_replicas(fb, current, self.version)
            return int(target * 1000 * n), True, None  # doFallback: NewMilliQuantity(target·1000·replicas)
        return None, False, error

    def _read(self, current: int, *, for_hpa: bool) -> tuple[list[_Read], str | None]:
        """One pass over the trigger's metrics, as getScalerState (scale loop) or GetScaledObjectMetrics
        (the HPA's read) does it; returns the reads and the GetMetricSpec error, if any."""
        specs, spec_error = self._metric_specs()
        reads = []
        for spec in specs:
            target = spec.target(self.version)
            values, active, error = self._metrics_and_activity(spec.metric_name)
            milli = None if error else sum(to_milli(v.value(self.version), self.version) for v in values)
            fallback_on_this_path = for_hpa or self.version >= SCALE_LOOP_FALLBACK_SINCE
            fallback = False
            if fallback_on_this_path:
                milli, fallback, error = self._with_fallback(spec.metric_name, target, milli, error, current)
            reads.append(_Read(spec.metric_name, target, milli, active, fallback, error))
        return reads, spec_error

    # -- the scale loop and the executor ---------------------------------------------------------------------
    def _poll(self, now: float, current: int) -> int:
        reads, spec_error = self._read(current, for_hpa=False)
        # getScalerState: an error marks the trigger failed; otherwise it is active when the scaler said so
        # or (v2.19+) when its fallback is active.
        is_error = spec_error is not None or any(r.error for r in reads)
        is_active = any((r.active or r.fallback) and r.error is None for r in reads)
        detail = f"active={is_active}" + (f" error={spec_error or next(r.error for r in reads if r.error)}"
                                          if is_error else "")
        self._record(Event(now, "poll", current, current, detail))
        return self.request_scale(now, current, is_active=is_active, is_error=is_error)

    def request_scale(self, now: float, current: int, *, is_active: bool, is_error: bool) -> int:
        """scale_scaledobjects.go RequestScale, branch by branch."""
        spec = self.spec
        if is_active:
            if (spec.idle_replicas is not None and current < spec.min_replicas) or current == 0:
                # scaleFromZeroOrIdle: to minReplicaCount when > 0, else 1.
                self.last_active = now
                return self._scale(now, current, max(1, spec.min_replicas), "activation: scale from zero/idle")
            if not is_error:
                self.last_active = now
            return current  # isError: PartialTriggerError, nothing changes
        fb = spec.fallback
        if is_error and fb is not None and fb.replicas != 0:
            return current  # "ScaleTarget will fallback to Fallback.Replicas after Fallback.FailureThreshold"
        if is_error and fb is None:
            return current  # TriggerError: no scaling either way
        above_idle = spec.idle_replicas is not None and current > spec.idle_replicas
        if above_idle or (current > 0 and spec.min_replicas == 0):
            # scaleToZeroOrIdle: once the cooldown (or, never active, the initial cooldown) has passed.
            cooled = (self.last_active is None and now > self.created_at + spec.initial_cooldown_period_s) or (
                self.last_active is not None and now > self.last_active + spec.cooldown_period_s)
            if cooled:
                to = spec.idle_replicas if spec.idle_replicas is not None else spec.min_replicas
                reason = "cooldown passed without activity" + (" (scaler failing)" if is_error else "")
                return self._scale(now, current, to, reason)
            return current
        if spec.idle_replicas is None and current < spec.min_replicas:
            return self._scale(now, current, spec.min_replicas, "below minReplicaCount")
        return current

    # -- the HPA and KEDA's metrics server --------------------------------------------------------------------
    def _sync(self, now: float, current: int) -> int:
        if self.hpa_metrics is None:
            specs, error = self._metric_specs()
            if not specs:
                # KEDA's controller builds the HPA's metrics from GetMetricSpec (controllers/keda/hpa.go
                # getScaledObjectMetricSpecs): without them there is no HPA, and nothing scales.
                self._record(Event(now, "error", current, current, f"HPA not created: {error}"))
                return current
            self.hpa_metrics = [(s.metric_name, s.target(self.version)) for s in specs]
        values: list[int | None] = []
        targets: list[int] = []
        if current > 0 and self.hpa_metrics is not None and current <= self.hpa.max_replicas \
                and current >= self.hpa.min_replicas:
            values, targets = self._hpa_read(now, current)
        elif self.hpa_metrics is not None:
            targets = [max(1, round(t * 1000)) for _, t in self.hpa_metrics]
            values = [None] * len(targets)
        result = self.hpa.sync(now, current, values, targets)
        self._record(Event(now, "hpa", current, result.desired,
                           f"value={self.last_metric} target={self.last_target} proposal={result.proposal} "
                           f"{result.reason}"))
        if result.desired != current:
            return self._scale(now, current, result.desired, f"HPA: {result.reason}")
        return current

    def _hpa_read(self, now: float, current: int) -> tuple[list[int | None], list[int]]:
        """GetScaledObjectMetrics for each metric the HPA holds: an error (before the fallback threshold)
        reaches the HPA as a failed metric."""
        assert self.hpa_metrics is not None
        reads, spec_error = self._read(current, for_hpa=True)
        by_name = {r.metric_name: r for r in reads}
        values: list[int | None] = []
        targets: list[int] = []
        any_fallback = any(r.fallback for r in reads)
        failed = spec_error is not None or any(r.error for r in reads)
        for name, target in self.hpa_metrics:
            targets.append(max(1, round(target * 1000)))
            r = by_name.get(name)
            if r is None or r.milli is None or (failed and not any_fallback):
                values.append(None)
            else:
                values.append(r.milli)
        got = [v for v in values if v is not None]
        self.last_metric = got[0] / 1000.0 if got else None
        self.last_target = targets[0] / 1000.0 if targets else None
        if any_fallback:
            self._record(Event(now, "fallback", current, current,
                               f"failures={self.failures}: report {self.last_metric} for the HPA"))
        elif failed:
            why = spec_error or next((r.error for r in reads if r.error), None)
            self._record(Event(now, "error", current, current, f"failures={self.failures}: {why}"))
        return values, targets

    def _scale(self, now: float, current: int, to: int, why: str) -> int:
        if to != current:
            self._record(Event(now, "scale", current, to, why))
        return to

    def _record(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > 10_000:  # bounded memory on long runs
            del self.events[:5_000]
        if len(self.calls) > 10_000:
            del self.calls[:5_000]
        for listener in self.listeners:
            listener(event)
