"""What KEDA and the Kubernetes HPA do with an external scaler's answers, driven by a clock you pass in.

The simulator must not trust the scaler's recommendation to reach the Deployment unchanged: between the
two sit KEDA (polling, activation to and from zero, cooldown, fallback on errors) and the HPA (15 s sync,
AverageValue arithmetic with its 10 % tolerance, stabilization windows, rate policies, min/max). This
module reproduces them from their documented behaviour and the controllers' source
(`../shared/reference/keda-external-scaler.md`):

- pure functions: `hpa_proposal`, `stabilize`, `scale_up_limit`, `scale_down_limit`, `limit_rate`,
  `fallback_replicas` — each one a rule of the HPA or KEDA, pinned by table-driven tests;
- `HPA`: one HorizontalPodAutoscaler's memory (recommendations, scale events) and its `sync`;
- `ScaledObjectEmulator`: one ScaledObject — KEDA's polling loop and activation, KEDA's metrics server
  with fallback, and the HPA it owns — talking to any `ExternalScaler` (in-process, or a real gRPC
  channel through `GrpcExternalScaler` in `sim/keda_grpc.py`).

Times are seconds on the caller's clock (simulated or wall). Nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from optimizer.hpa import DEFAULT_TOLERANCE, desired_replicas
from scaler.metric import legacy_int, metric_name, report_value

HPA_SYNC_PERIOD_S = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
KEDA_POLLING_INTERVAL_S = 30.0
KEDA_COOLDOWN_PERIOD_S = 300.0
KEDA_MAX_REPLICAS = 100

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
FallbackBehavior = Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]


class EmulatorConfigError(ValueError):
    """A ScaledObject the emulator cannot run, with every problem found (field paths as in the manifest)."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


@dataclass(frozen=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"


# The HPA's defaults (autoscaling/v2): up at once by max(+4 pods, +100 %) per 15 s; down after 300 s of
# lower recommendations, by up to 100 % per 15 s.
DEFAULT_SCALE_UP = ScalingRules(0.0, (ScalingPolicy("Percent", 100, 15.0), ScalingPolicy("Pods", 4, 15.0)))
DEFAULT_SCALE_DOWN = ScalingRules(300.0, (ScalingPolicy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True)
class Fallback:
    failure_threshold: int
    replicas: int
    behavior: FallbackBehavior = "static"


@dataclass(frozen=True)
class ScaledObjectSpec:
    """The fields of one ScaledObject (and of the HPA KEDA makes from it) that change what happens."""

    name: str
    namespace: str
    deployment: str
    metadata: Mapping[str, str]
    trigger_type: Literal["external", "external-push"] = "external"
    min_replicas: int = 0
    max_replicas: int = KEDA_MAX_REPLICAS
    idle_replicas: int | None = None
    polling_interval_s: float = KEDA_POLLING_INTERVAL_S
    cooldown_period_s: float = KEDA_COOLDOWN_PERIOD_S
    initial_cooldown_period_s: float = 0.0
    fallback: Fallback | None = None
    behavior: Behavior = field(default_factory=Behavior)
    hpa_sync_period_s: float = HPA_SYNC_PERIOD_S
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def hpa_min_replicas(self) -> int:
        # KEDA gives the HPA minReplicas ≥ 1 and handles 0 ↔ 1 itself.
        return max(1, self.min_replicas)


# ---------------------------------------------------------------------------------------------------------
# The HPA's rules, one pure function each


def hpa_proposal(
    values: Sequence[float | None], targets: Sequence[float], current: int, tolerance: float = DEFAULT_TOLERANCE
) -> int | None:
    """Replicas proposed from several AverageValue external metrics (None = metric unavailable).

    The largest proposal wins. If every metric is unavailable, or some are and the rest would scale down,
    the HPA does not act this sync (None)."""
    if len(values) != len(targets):
        raise ValueError("one target per metric value")
    proposals = [desired_replicas(v, t, current, tolerance) for v, t in zip(values, targets, strict=True)
                 if v is not None]
    invalid = len(values) - len(proposals)
    if not proposals:
        return None
    best = max(proposals)
    if invalid and best < current:
        return None
    return best


def stabilize(
    recommendations: Sequence[tuple[float, int]], now: float, desired: int, current: int,
    up_window_s: float, down_window_s: float,
) -> int:
    """The HPA's stabilization: going up, the lowest recommendation of the up window; going down, the
    highest of the down window; `recommendations` are earlier (time, raw proposal) pairs, `desired` now's.
    A recommendation counts when strictly newer than now − window, as in the controller."""
    up = desired
    down = desired
    for t, n in recommendations:
        if t > now - up_window_s:
            up = min(up, n)
        if t > now - down_window_s:
            down = max(down, n)
    out = current
    out = max(out, up)
    return min(out, down)


def _change_in_period(events: Sequence[tuple[float, int]], now: float, period_s: float) -> int:
    return sum(change for t, change in events if t > now - period_s)


def _period_start(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                  now: float, period_s: float) -> int:
    return current - _change_in_period(up_events, now, period_s) + _change_in_period(down_events, now, period_s)


def scale_up_limit(
    current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
    rules: ScalingRules, now: float,
) -> int:
    """Most replicas the up policies allow now. Each policy starts from the count at the beginning of its
    period (current − added + removed within periodSeconds); Percent rounds up so +x % of 1 still adds one."""
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


def scale_down_limit(
    current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
    rules: ScalingRules, now: float,
) -> int:
    """Fewest replicas the down policies allow now (Percent rounds down, as the controller's int cast)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, up_events, down_events, now, p.period_s)
        if p.type == "Pods":
            proposals.append(start - p.value)
        else:
            proposals.append(math.floor(start * (1 - p.value / 100.0)))
    if not proposals:
        return current
    # "Max" selects the biggest change, which going down is the smallest count.
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def limit_rate(
    desired: int, current: int, min_replicas: int, max_replicas: int,
    up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
    behavior: Behavior, now: float,
) -> int:
    """The stabilized recommendation bounded by the rate policies and by min/max."""
    if desired > current:
        limit = max(current, scale_up_limit(current, up_events, down_events, behavior.scale_up, now))
        return min(desired, max_replicas, limit)
    if desired < current:
        limit = min(current, scale_down_limit(current, up_events, down_events, behavior.scale_down, now))
        return max(desired, min_replicas, limit)
    return desired


def fallback_replicas(fallback: Fallback, current: int) -> int:
    """The replica count KEDA's fallback reports (as replicas × target) once failures pass the threshold."""
    if fallback.behavior == "currentReplicas":
        return current
    if fallback.behavior == "currentReplicasIfHigher":
        return max(current, fallback.replicas)
    if fallback.behavior == "currentReplicasIfLower":
        return min(current, fallback.replicas)
    return fallback.replicas


def sanitize(value: float) -> float:
    """KEDA turns NaN, ±Inf and negative metric values into 0."""
    return value if math.isfinite(value) and value >= 0 else 0.0


# ---------------------------------------------------------------------------------------------------------
# One HorizontalPodAutoscaler


@dataclass(frozen=True)
class HPAResult:
    at: float
    current: int
    proposal: int | None  # raw metric proposal (None: metrics unavailable, no action)
    desired: int  # after stabilization, policies, min/max
    reason: str


class HPA:
    """One HPA: remembers raw recommendations and scale events like the controller does."""

    def __init__(self, min_replicas: int, max_replicas: int, behavior: Behavior,
                 tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.behavior = behavior
        self.tolerance = tolerance
        self.recommendations: list[tuple[float, int]] = []
        self.up_events: list[tuple[float, int]] = []
        self.down_events: list[tuple[float, int]] = []

    def _keep_s(self) -> float:
        periods = [p.period_s for r in (self.behavior.scale_up, self.behavior.scale_down) for p in r.policies]
        return max([self.behavior.scale_up.stabilization_window_s, self.behavior.scale_down.stabilization_window_s,
                    *periods, 0.0])

    def sync(self, now: float, current: int, values: Sequence[float | None], targets: Sequence[float]) -> HPAResult:
        """One reconcile with the Deployment at `current` replicas and these metric readings."""
        if current == 0:
            return HPAResult(now, current, None, 0, "ScalingDisabled: replicas are 0 (KEDA scales from zero)")
        if current > self.max_replicas:
            return self._apply(now, current, None, self.max_replicas, "current above maxReplicas")
        if current < self.min_replicas:
            return self._apply(now, current, None, self.min_replicas, "current below minReplicas")
        proposal = hpa_proposal(values, targets, current, self.tolerance)
        if proposal is None:
            return HPAResult(now, current, None, current, "FailedGetExternalMetric: not scaling")
        stabilized = stabilize(self.recommendations, now, proposal, current,
                               self.behavior.scale_up.stabilization_window_s,
                               self.behavior.scale_down.stabilization_window_s)
        self.recommendations = [(t, n) for t, n in self.recommendations if t > now - self._keep_s()]
        self.recommendations.append((now, proposal))
        desired = limit_rate(stabilized, current, self.min_replicas, self.max_replicas,
                             self.up_events, self.down_events, self.behavior, now)
        if desired == proposal:
            reason = "desired within range"
        elif desired == stabilized:
            reason = "stabilization window"
        else:
            reason = "rate policy or min/max"
        return self._apply(now, current, proposal, desired, reason)

    def _apply(self, now: float, current: int, proposal: int | None, desired: int, reason: str) -> HPAResult:
        keep = self._keep_s()
        self.up_events = [(t, c) for t, c in self.up_events if t > now - keep]
        self.down_events = [(t, c) for t, c in self.down_events if t > now - keep]
        if desired > current:
            self.up_events.append((now, desired - current))
        elif desired < current:
            self.down_events.append((now, current - desired))
        return HPAResult(now, current, proposal, desired, reason)


# ---------------------------------------------------------------------------------------------------------
# KEDA and the external scaler


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

    @property
    def target(self) -> float:
        return self.target_size_float if self.target_size_float > 0 else float(self.target_size)


@dataclass(frozen=True)
class MetricValue:
    metric_name: str
    metric_value: int = 0
    metric_value_float: float = 0.0

    @property
    def value(self) -> float:
        return self.metric_value_float if self.metric_value_float > 0 else float(self.metric_value)


class ExternalScaler(Protocol):
    """The unary rpcs of KEDA's externalscaler.ExternalScaler; failures raise ScalerCallError."""

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]: ...

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]: ...

    def is_active(self, ref: ScaledObjectRef) -> bool: ...


@dataclass(frozen=True)
class Event:
    """Something the emulator did or saw, for logs, the demo's table and tests."""

    at: float
    kind: str  # poll | hpa | scale | push | error | fallback
    replicas_before: int
    replicas_after: int
    detail: str = ""


@dataclass
class _MetricsRead:
    values: list[float | None]
    targets: list[float]
    active: bool | None
    error: str | None


class ScaledObjectEmulator:
    """KEDA's handling of one ScaledObject plus the HPA it creates.

    Call `advance(now, current)` whenever time passes (it runs every poll and HPA sync that is due, in
    order) and `push(active, now, current)` for each StreamIsActive message; both return the replica count
    the Deployment should have (apply it if it differs from `current`)."""

    def __init__(self, spec: ScaledObjectSpec, scaler: ExternalScaler, created_at: float) -> None:
        self.spec = spec
        self.scaler = scaler
        self.created_at = created_at
        self.ref = ScaledObjectRef(spec.name, spec.namespace, dict(spec.metadata))
        self.hpa = HPA(spec.hpa_min_replicas, spec.max_replicas, spec.behavior, spec.tolerance)
        self.next_poll = created_at
        self.next_sync = created_at
        self.last_active: float | None = None
        self.failures = 0  # consecutive failed metric reads (KEDA's status.health[...].numberOfFailures)
        self.events: list[Event] = []
        self.last_metric: float | None = None  # last value the HPA saw (after fallback)
        self.last_target: float | None = None
        self.listeners: list[Callable[[Event], None]] = []

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
        """A StreamIsActive message: `true` acts at once (scale from zero); `false` is ignored, as in KEDA."""
        self._record(Event(now, "push", current, current, f"active={active}"))
        if not active:
            return current
        return self._activity(now, current, active=True, error=False)

    # -- KEDA ------------------------------------------------------------------------------------------------
    def _read(self) -> _MetricsRead:
        """GetMetricSpec, GetMetrics and IsActive, as KEDA does on each poll and each HPA metrics read."""
        try:
            specs = self.scaler.get_metric_spec(self.ref)
        except ScalerCallError as e:
            return _MetricsRead([], [], None, f"GetMetricSpec {e}")
        if not specs:
            return _MetricsRead([], [], None, "GetMetricSpec returned no metric")
        values: list[float | None] = []
        targets: list[float] = []
        error: str | None = None
        for spec in specs:
            target = spec.target
            if target <= 0:
                error = f"metric {spec.metric_name}: target must be > 0 (Kubernetes rejects 0)"
                values.append(None)
                targets.append(1.0)
                continue
            try:
                got = self.scaler.get_metrics(self.ref, spec.metric_name)
            except ScalerCallError as e:
                error = f"GetMetrics {e}"
                values.append(None)
                targets.append(target)
                continue
            # KEDA forwards every MetricValue and the HPA sums them.
            values.append(sum(sanitize(v.value) for v in got))
            targets.append(target)
        try:
            active = self.scaler.is_active(self.ref)
        except ScalerCallError as e:
            # An IsActive error discards the whole read.
            return _MetricsRead([None] * len(values), targets, None, f"IsActive {e}")
        return _MetricsRead(values, targets, active, error)

    def _poll(self, now: float, current: int) -> int:
        read = self._read()
        active = bool(read.active)
        error = read.error is not None
        self._record(Event(now, "poll", current, current,
                           f"active={read.active}" + (f" error={read.error}" if error else "")))
        return self._activity(now, current, active=active, error=error)

    def _activity(self, now: float, current: int, *, active: bool, error: bool) -> int:
        spec = self.spec
        if active:
            self.last_active = now
            if current == 0 or (spec.idle_replicas is not None and current < spec.min_replicas):
                target = max(1, spec.min_replicas)
                return self._scale(now, current, target, "activation: scale from zero/idle")
            return current
        if error and spec.fallback is not None and spec.fallback.replicas != 0:
            return current  # KEDA does not scale to zero while falling back
        idle_to = spec.idle_replicas if spec.idle_replicas is not None else 0
        if (spec.idle_replicas is not None and current > idle_to) or (current > 0 and spec.min_replicas == 0):
            cooled = self.last_active is None or self.last_active + spec.cooldown_period_s < now
            initial_done = now >= self.created_at + spec.initial_cooldown_period_s
            if cooled and initial_done:
                return self._scale(now, current, idle_to, "cooldown passed without activity")
            return current
        if current < spec.min_replicas and spec.idle_replicas is None:
            return self._scale(now, current, spec.min_replicas, "below minReplicaCount")
        return current

    def _sync(self, now: float, current: int) -> int:
        if current == 0:
            self.hpa.sync(now, current, [], [])
            return current
        read = self._read()
        values = read.values
        targets = read.targets
        if read.error is None and read.active is not None and values:
            self.failures = 0
        else:
            self.failures += 1
            fb = self.spec.fallback
            if fb is not None and self.failures > fb.failure_threshold and targets:
                # KEDA's metrics server answers the HPA with replicas × target, which lands it on `n`.
                n = fallback_replicas(fb, current)
                values = [n * t for t in targets]
                self._record(Event(now, "fallback", current, current,
                                   f"failures={self.failures} > {fb.failure_threshold}: report {n} replicas"))
            else:
                self._record(Event(now, "error", current, current, f"failures={self.failures}: {read.error}"))
                if not targets:
                    targets = [1.0]
                values = [None] * len(targets)
        self.last_metric = next((v for v in values if v is not None), None)
        self.last_target = targets[0] if targets else None
        result = self.hpa.sync(now, current, values, targets)
        self._record(Event(now, "hpa", current, result.desired,
                           f"value={self.last_metric} target={self.last_target} proposal={result.proposal} "
                           f"{result.reason}"))
        if result.desired != current:
            return self._scale(now, current, result.desired, f"HPA: {result.reason}")
        return current

    def _scale(self, now: float, current: int, to: int, why: str) -> int:
        if to != current:
            self._record(Event(now, "scale", current, to, why))
        return to

    def _record(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > 10_000:  # bounded memory on long runs
            del self.events[:5_000]
        for listener in self.listeners:
            listener(event)


# ---------------------------------------------------------------------------------------------------------
# From a ScaledObject manifest


def _number(data: Mapping[str, Any], key: str, where: str, problems: list[str], default: float,
            *, minimum: float = 0.0) -> float:
    val = data.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int | float) or val < minimum:
        problems.append(f"{where}.{key}: must be a number >= {minimum:g}, got {val!r}")
        return default
    return float(val)


def _rules(data: Any, where: str, default: ScalingRules, problems: list[str]) -> ScalingRules:
    if data is None:
        return default
    if not isinstance(data, Mapping):
        problems.append(f"{where}: must be a mapping")
        return default
    window = _number(data, "stabilizationWindowSeconds", where, problems, default.stabilization_window_s)
    select = data.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        problems.append(f"{where}.selectPolicy: must be Max, Min or Disabled, got {select!r}")
        select = "Max"
    policies = default.policies
    raw = data.get("policies")
    if raw is not None:
        if not isinstance(raw, list):
            problems.append(f"{where}.policies: must be a list")
        else:
            parsed = []
            for i, p in enumerate(raw):
                pw = f"{where}.policies[{i}]"
                if not isinstance(p, Mapping):
                    problems.append(f"{pw}: must be a mapping")
                    continue
                kind = p.get("type")
                if kind not in ("Pods", "Percent"):
                    problems.append(f"{pw}.type: must be Pods or Percent, got {kind!r}")
                    continue
                value = _number(p, "value", pw, problems, 1, minimum=1)
                period = _number(p, "periodSeconds", pw, problems, 15, minimum=1)
                parsed.append(ScalingPolicy(kind, int(value), period))
            policies = tuple(parsed)
    return ScalingRules(window, policies, select)


def parse_scaled_object(manifest: Any, source: str = "ScaledObject", *,
                        hpa_sync_period_s: float = HPA_SYNC_PERIOD_S) -> ScaledObjectSpec:
    """A `keda.sh/v1alpha1` ScaledObject with one external / external-push trigger → ScaledObjectSpec.
    Every problem is reported at once, with its field path."""
    problems: list[str] = []
    if not isinstance(manifest, Mapping):
        raise EmulatorConfigError(source, ["document: must be a mapping"])
    if manifest.get("kind") != "ScaledObject":
        problems.append(f"kind: must be ScaledObject, got {manifest.get('kind')!r}")
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        raise EmulatorConfigError(source, [*problems, "spec: missing"])
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: missing")
        name = "?"
    namespace = meta.get("namespace", "default") if isinstance(meta, Mapping) else "default"
    target_ref = spec.get("scaleTargetRef") or {}
    deployment = target_ref.get("name") if isinstance(target_ref, Mapping) else None
    if not isinstance(deployment, str) or not deployment:
        problems.append("spec.scaleTargetRef.name: missing")
        deployment = "?"
    triggers = spec.get("triggers")
    trigger_type: Any = "external"
    metadata: dict[str, str] = {}
    if not isinstance(triggers, list) or len(triggers) != 1 or not isinstance(triggers[0], Mapping):
        problems.append("spec.triggers: the emulator needs exactly one trigger")
    else:
        trig = triggers[0]
        trigger_type = trig.get("type")
        if trigger_type not in ("external", "external-push"):
            problems.append(f"spec.triggers[0].type: must be external or external-push, got {trigger_type!r}")
            trigger_type = "external"
        md = trig.get("metadata")
        if not isinstance(md, Mapping) or not all(isinstance(v, str) for v in md.values()):
            problems.append("spec.triggers[0].metadata: must map keys to strings")
        else:
            metadata = {str(k): v for k, v in md.items()}
        metric_type = trig.get("metricType", "AverageValue")
        if metric_type != "AverageValue":
            problems.append(f"spec.triggers[0].metricType: the emulator supports AverageValue, got {metric_type!r}")
    min_r = int(_number(spec, "minReplicaCount", "spec", problems, 0))
    max_r = int(_number(spec, "maxReplicaCount", "spec", problems, KEDA_MAX_REPLICAS, minimum=1))
    if min_r > max_r:
        problems.append(f"spec.minReplicaCount: {min_r} is above maxReplicaCount {max_r}")
    idle = spec.get("idleReplicaCount")
    if idle is not None and (isinstance(idle, bool) or not isinstance(idle, int) or idle < 0 or idle >= max(min_r, 1)):
        problems.append(f"spec.idleReplicaCount: must be an integer below minReplicaCount, got {idle!r}")
        idle = None
    fallback = None
    fb = spec.get("fallback")
    if fb is not None:
        if not isinstance(fb, Mapping):
            problems.append("spec.fallback: must be a mapping")
        else:
            thr = _number(fb, "failureThreshold", "spec.fallback", problems, 3, minimum=0)
            reps = _number(fb, "replicas", "spec.fallback", problems, 1, minimum=0)
            fbb = fb.get("behavior", "static")
            if fbb not in ("static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"):
                problems.append(f"spec.fallback.behavior: unknown {fbb!r}")
                fbb = "static"
            fallback = Fallback(int(thr), int(reps), fbb)
    behavior = Behavior()
    adv = spec.get("advanced") or {}
    hpa_cfg = adv.get("horizontalPodAutoscalerConfig") if isinstance(adv, Mapping) else None
    if isinstance(hpa_cfg, Mapping) and hpa_cfg.get("behavior") is not None:
        b = hpa_cfg["behavior"]
        if not isinstance(b, Mapping):
            problems.append("spec.advanced.horizontalPodAutoscalerConfig.behavior: must be a mapping")
        else:
            where = "spec.advanced.horizontalPodAutoscalerConfig.behavior"
            behavior = Behavior(_rules(b.get("scaleUp"), f"{where}.scaleUp", DEFAULT_SCALE_UP, problems),
                                _rules(b.get("scaleDown"), f"{where}.scaleDown", DEFAULT_SCALE_DOWN, problems))
    polling = _number(spec, "pollingInterval", "spec", problems, KEDA_POLLING_INTERVAL_S, minimum=0.001)
    cooldown = _number(spec, "cooldownPeriod", "spec", problems, KEDA_COOLDOWN_PERIOD_S)
    initial = _number(spec, "initialCooldownPeriod", "spec", problems, 0.0)
    if problems:
        raise EmulatorConfigError(source, problems)
    return ScaledObjectSpec(
        name=name, namespace=str(namespace), deployment=deployment, metadata=metadata,
        trigger_type=trigger_type,
        min_replicas=min_r, max_replicas=max_r, idle_replicas=idle, polling_interval_s=polling,
        cooldown_period_s=cooldown, initial_cooldown_period_s=initial, fallback=fallback, behavior=behavior,
        hpa_sync_period_s=hpa_sync_period_s,
    )


class RecommendationScaler:
    """An in-process external scaler answering like `gpumix serve` does: one metric per variant whose value
    lands the HPA on the recommended count (`scaler.metric`, the service's own), active while the recommendation is
    above zero, UNAVAILABLE while there is none. Replay uses it in place of the gRPC channel."""

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
