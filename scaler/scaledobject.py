"""The one reader of KEDA ScaledObjects (keda.sh/v1alpha1): parse and validate, every problem collected with
its field path. The Kubernetes inventory (scaler/kube.py), `gpumix lint` (scaler/lint.py) and the KEDA
emulator (sim/keda_emulator.py) all read ScaledObjects through `read_scaled_object`, so they agree on
defaults, on what a field means and on what is invalid.

Defaults follow KEDA (optimizer/defaults.py cites where); the HPA behaviour uses optimizer.hpa's types.
A field that is present but invalid is reported and read as its default, so one bad field does not hide
the rest of the object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optimizer.defaults import (
    KEDA_DEFAULT_COOLDOWN_PERIOD_S,
    KEDA_DEFAULT_INITIAL_COOLDOWN_PERIOD_S,
    KEDA_DEFAULT_MAX_REPLICAS,
    KEDA_DEFAULT_POLLING_INTERVAL_S,
)
from optimizer.errors import InputError
from optimizer.hpa import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, Behavior, ScalingPolicy, ScalingRules

FallbackBehavior = Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"]
FALLBACK_BEHAVIORS: tuple[FallbackBehavior, ...] = (
    "static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower")
BEHAVIOR_PATH = "spec.advanced.horizontalPodAutoscalerConfig.behavior"

# KEDA's admission webhook (apis/keda/v1alpha1/scaledobject_webhook.go, maxK8sLabelValueLength and
# getHpaName): the ScaledObject's name is a label value (scaledobject.keda.sh/name) and its HPA is named
# keda-hpa-<name> unless spec.advanced.horizontalPodAutoscalerConfig.name says otherwise; both at most 63.
MAX_NAME_LENGTH = 63
HPA_NAME_PREFIX = "keda-hpa-"
# metadata.name of any object: a DNS-1123 subdomain (k8s.io/apimachinery validation.IsDNS1123Subdomain);
# as a label value it may not contain dots' neighbours other than alphanumerics either, which the
# subdomain rule already guarantees.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ScaledObjectError(InputError):
    """A ScaledObject that cannot be used, with every problem found."""


@dataclass(frozen=True)
class Trigger:
    type: str
    metadata: Mapping[str, str]
    metric_type: str = "AverageValue"
    name: str | None = None


@dataclass(frozen=True)
class Fallback:
    failure_threshold: int
    replicas: int
    behavior: FallbackBehavior = "static"


@dataclass(frozen=True)
class ScaledObject:
    name: str
    namespace: str
    target_kind: str
    target_name: str
    triggers: tuple[Trigger, ...] = ()
    min_replicas: int = 0
    max_replicas: int = KEDA_DEFAULT_MAX_REPLICAS
    idle_replicas: int | None = None
    polling_interval_s: float = KEDA_DEFAULT_POLLING_INTERVAL_S
    cooldown_period_s: float = KEDA_DEFAULT_COOLDOWN_PERIOD_S
    initial_cooldown_period_s: float = KEDA_DEFAULT_INITIAL_COOLDOWN_PERIOD_S
    fallback: Fallback | None = None
    behavior: Behavior = field(default_factory=Behavior)
    behavior_set: bool = False  # an explicit behavior block (the HPA then normalizes with behaviors)
    custom_hpa_name: str | None = None
    scaling_modifiers: bool = False
    # The HPA name KEDA reported in status.hpaName (None until KEDA reconciled it).
    status_hpa_name: str | None = None

    @property
    def hpa_name(self) -> str:
        """The HPA KEDA creates for this object (webhook getHpaName / controllers/keda/hpa.go getHPAName)."""
        return self.status_hpa_name or self.custom_hpa_name or f"{HPA_NAME_PREFIX}{self.name}"


def name_problems(name: str, hpa_name: str | None = None, where: str = "metadata.name") -> list[str]:
    """Why KEDA or the API server would refuse this ScaledObject name (empty: it is accepted)."""
    problems = []
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        problems.append(f"{where}: {name!r} is not a DNS-1123 name (lower-case letters, digits, '-' and '.', "
                        "starting and ending with a letter or digit)")
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"{where}: {name!r} is {len(name)} characters; KEDA accepts at most {MAX_NAME_LENGTH} (it "
                        "is the scaledobject.keda.sh/name label value)")
    hpa = hpa_name if hpa_name is not None else f"{HPA_NAME_PREFIX}{name}"
    if len(hpa) > MAX_NAME_LENGTH:
        problems.append(f"{where}: the HPA KEDA creates, {hpa!r}, is {len(hpa)} characters; KEDA accepts at most "
                        f"{MAX_NAME_LENGTH}: shorten the name to {MAX_NAME_LENGTH - len(HPA_NAME_PREFIX)} characters "
                        "or set spec.advanced.horizontalPodAutoscalerConfig.name")
    return problems


def parse_quantity(raw: Any) -> float:
    """A Kubernetes resource.Quantity as the HPA reads tolerance: 0, "0", "0.05", "50m". ValueError else."""
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a quantity")
    if isinstance(raw, int):
        return float(raw)
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a quantity (write it as a string, e.g. \"0.05\")")
    text = raw.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text)
    if m is None:
        raise ValueError(f"{raw!r} is not a quantity")
    value = float(m.group(1))
    return value / 1000.0 if m.group(2) else value


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def number(self, data: Mapping[str, Any], key: str, where: str, default: float, *, minimum: float = 0.0,
               integer: bool = False) -> float:
        if key not in data or data[key] is None:
            return default
        val = data[key]
        ok = not isinstance(val, bool) and isinstance(val, int if integer else int | float) and val >= minimum
        if not ok:
            kind = "an integer" if integer else "a number"
            self.problems.append(f"{where}.{key}: must be {kind} >= {minimum:g}, got {val!r}")
            return default
        return float(val)

    def rules(self, data: Any, where: str, default: ScalingRules) -> ScalingRules:
        if data is None:
            return default
        if not isinstance(data, Mapping):
            self.problems.append(f"{where}: must be a mapping")
            return default
        window = self.number(data, "stabilizationWindowSeconds", where, default.stabilization_window_s,
                             integer=True)
        if window > 3600:
            self.problems.append(f"{where}.stabilizationWindowSeconds: at most 3600 (the HPA's validation), got "
                                 f"{window:g}")
        select = data.get("selectPolicy", "Max")
        if select not in ("Max", "Min", "Disabled"):
            self.problems.append(f"{where}.selectPolicy: must be Max, Min or Disabled, got {select!r}")
            select = "Max"
        policies = default.policies
        raw = data.get("policies")
        if raw is not None:
            if not isinstance(raw, list):
                self.problems.append(f"{where}.policies: must be a list")
            else:
                parsed = []
                for i, p in enumerate(raw):
                    pw = f"{where}.policies[{i}]"
                    if not isinstance(p, Mapping):
                        self.problems.append(f"{pw}: must be a mapping")
                        continue
                    kind = p.get("type")
                    if kind not in ("Pods", "Percent"):
                        self.problems.append(f"{pw}.type: must be Pods or Percent, got {kind!r}")
                        continue
                    value = self.number(p, "value", pw, 1, minimum=1, integer=True)
                    period = self.number(p, "periodSeconds", pw, 15, minimum=1, integer=True)
                    if period > 1800:
                        self.problems.append(f"{pw}.periodSeconds: at most 1800, got {period:g}")
                    parsed.append(ScalingPolicy(kind, int(value), period))
                policies = tuple(parsed)
        tolerance = None
        if data.get("tolerance") is not None:
            try:
                tolerance = parse_quantity(data["tolerance"])
            except ValueError as exc:
                self.problems.append(f"{where}.tolerance: {exc}")
        return ScalingRules(window, policies, select, tolerance)


def read_scaled_object(manifest: Any, source: str = "ScaledObject") -> tuple[ScaledObject | None, list[str]]:
    """A `keda.sh/v1alpha1` ScaledObject → (ScaledObject, problems). The object is None only when the
    document cannot be one at all (not a mapping, no spec); otherwise invalid fields read as defaults and
    every problem is listed, with its field path."""
    r = _Reader()
    if not isinstance(manifest, Mapping):
        return None, ["document: must be a mapping"]
    if manifest.get("kind") != "ScaledObject":
        r.problems.append(f"kind: must be ScaledObject, got {manifest.get('kind')!r}")
    meta = manifest.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return None, [*r.problems, "spec: missing"]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        r.problems.append("metadata.name: missing")
        name = ""
    namespace = meta.get("namespace") or "default"
    target = spec.get("scaleTargetRef")
    target = target if isinstance(target, Mapping) else {}
    target_name = target.get("name")
    if not isinstance(target_name, str) or not target_name:
        r.problems.append("spec.scaleTargetRef.name: missing")
        target_name = ""
    triggers: list[Trigger] = []
    raw_triggers = spec.get("triggers")
    if not isinstance(raw_triggers, list) or not raw_triggers:
        r.problems.append("spec.triggers: must be a non-empty list")
        raw_triggers = []
    for i, trig in enumerate(raw_triggers):
        where = f"spec.triggers[{i}]"
        if not isinstance(trig, Mapping) or not isinstance(trig.get("type"), str):
            r.problems.append(f"{where}: must be a mapping with a type")
            continue
        md = trig.get("metadata") or {}
        if not isinstance(md, Mapping) or not all(isinstance(v, str) for v in md.values()):
            r.problems.append(f"{where}.metadata: must map keys to strings")
            md = {}
        metric_type = trig.get("metricType", "AverageValue")
        if metric_type not in ("AverageValue", "Value", "Utilization"):
            r.problems.append(f"{where}.metricType: must be AverageValue, Value or Utilization, got {metric_type!r}")
            metric_type = "AverageValue"
        triggers.append(Trigger(str(trig["type"]), {str(k): str(v) for k, v in md.items()}, str(metric_type),
                                trig.get("name") if isinstance(trig.get("name"), str) else None))
    min_r = int(r.number(spec, "minReplicaCount", "spec", 0, integer=True))
    max_r = int(r.number(spec, "maxReplicaCount", "spec", KEDA_DEFAULT_MAX_REPLICAS, minimum=1, integer=True))
    if min_r > max_r:
        r.problems.append(f"spec.minReplicaCount: {min_r} is above maxReplicaCount {max_r}")
    idle: int | None = None
    if spec.get("idleReplicaCount") is not None:
        raw_idle = spec["idleReplicaCount"]
        if isinstance(raw_idle, bool) or not isinstance(raw_idle, int) or raw_idle < 0 or raw_idle >= max(min_r, 1):
            r.problems.append(f"spec.idleReplicaCount: must be an integer below minReplicaCount, got {raw_idle!r}")
        else:
            idle = raw_idle
    fallback = None
    fb = spec.get("fallback")
    if fb is not None:
        if not isinstance(fb, Mapping):
            r.problems.append("spec.fallback: must be a mapping")
        else:
            thr = r.number(fb, "failureThreshold", "spec.fallback", 3, integer=True)
            if "replicas" not in fb:
                r.problems.append("spec.fallback.replicas: missing")
            reps = r.number(fb, "replicas", "spec.fallback", 0, integer=True)
            fbb = fb.get("behavior", "static")
            if fbb not in FALLBACK_BEHAVIORS:
                r.problems.append(f"spec.fallback.behavior: must be one of {', '.join(FALLBACK_BEHAVIORS)}, "
                                  f"got {fbb!r}")
                fbb = "static"
            fallback = Fallback(int(thr), int(reps), fbb)
    advanced = spec.get("advanced")
    advanced = advanced if isinstance(advanced, Mapping) else {}
    hpa_cfg = advanced.get("horizontalPodAutoscalerConfig")
    hpa_cfg = hpa_cfg if isinstance(hpa_cfg, Mapping) else {}
    behavior = Behavior()
    behavior_set = False
    if hpa_cfg.get("behavior") is not None:
        b = hpa_cfg["behavior"]
        if not isinstance(b, Mapping):
            r.problems.append(f"{BEHAVIOR_PATH}: must be a mapping")
        else:
            behavior_set = True
            behavior = Behavior(r.rules(b.get("scaleUp"), f"{BEHAVIOR_PATH}.scaleUp", DEFAULT_SCALE_UP),
                                r.rules(b.get("scaleDown"), f"{BEHAVIOR_PATH}.scaleDown", DEFAULT_SCALE_DOWN))
    custom = hpa_cfg.get("name")
    custom_hpa = custom if isinstance(custom, str) and custom else None
    modifiers = advanced.get("scalingModifiers")
    polling = r.number(spec, "pollingInterval", "spec", KEDA_DEFAULT_POLLING_INTERVAL_S, minimum=1, integer=True)
    cooldown = r.number(spec, "cooldownPeriod", "spec", KEDA_DEFAULT_COOLDOWN_PERIOD_S, integer=True)
    initial = r.number(spec, "initialCooldownPeriod", "spec", KEDA_DEFAULT_INITIAL_COOLDOWN_PERIOD_S, integer=True)
    if name:
        r.problems.extend(name_problems(name, custom_hpa))
    status = manifest.get("status")
    status_hpa = status.get("hpaName") if isinstance(status, Mapping) else None
    return ScaledObject(
        name=name, namespace=str(namespace), target_kind=str(target.get("kind") or "Deployment"),
        target_name=target_name, triggers=tuple(triggers), min_replicas=min_r, max_replicas=max_r,
        idle_replicas=idle, polling_interval_s=polling, cooldown_period_s=cooldown,
        initial_cooldown_period_s=initial, fallback=fallback, behavior=behavior, behavior_set=behavior_set,
        custom_hpa_name=custom_hpa, scaling_modifiers=isinstance(modifiers, Mapping) and bool(modifiers.get("formula")),
        status_hpa_name=status_hpa if isinstance(status_hpa, str) and status_hpa else None,
    ), r.problems


def require_scaled_object(manifest: Any, source: str = "ScaledObject") -> ScaledObject:
    """`read_scaled_object`, raising ScaledObjectError with every problem when there is any."""
    so, problems = read_scaled_object(manifest, source)
    if so is None or problems:
        raise ScaledObjectError(source, problems)
    return so
