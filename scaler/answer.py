"""What gpumix answers KEDA, as pure functions of (trigger, published table, clock).

The gRPC servicer (scaler/keda.py) maps these answers onto status codes; the replay's in-process scaler
(sim/inprocess.py) calls the same functions, so the replay's KEDA sees exactly what a real KEDA would.

- `parse_trigger`: the ScaledObject trigger's metadata → one typed `Trigger`, every problem collected.
  KEDA resolves `<key>FromEnv` itself and sends the resolved value under that same key
  (kedacore/keda pkg/scalers/external_scaler.go, parseExternalScalerMetadata), so `modelFromEnv` counts as
  `model`. KEDA hands the HPA milli-quantities (`int64(value * 1000)`), so a target below 0.001 would reach
  the HPA as 0, and one above 1e6 would overflow the legacy int64 field at a few thousand replicas.
- `metric_spec`, `metric_value`: NOT_FOUND for an unknown or unprofiled variant, UNAVAILABLE when there is no
  recommendation or it was last decided from data more than `stale_after` ago (KEDA's fallback counts it).
  Nothing silently answers 0.
- `is_active`: never errors. A variant with a recommendation > 0 is active; waiting requests wake an idle
  model through its first responder only.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from optimizer.ids import ModelId, VariantId
from scaler.metric import metric_name, report_value
from scaler.table import Published, VariantView

REQUIRED_KEYS = ("model", "variant")
OPTIONAL_KEYS = ("namespace", "target")
OUR_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
# Keys KEDA itself may put in the trigger metadata (address, TLS switches): accepted and ignored.
KEDA_KEYS = ("scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey", "tlsCertFile")
KNOWN_KEYS = frozenset(OUR_KEYS + tuple(f"{k}FromEnv" for k in OUR_KEYS) + KEDA_KEYS)
MIN_TARGET = 0.001
MAX_TARGET = 1e6
_PREFIX = re.compile(r"^s\d+-")  # KEDA prefixes metric names with the trigger index (s0-...)


class Code(enum.Enum):
    OK = "OK"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class Answer:
    code: Code
    message: str = ""
    value: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


@dataclass(frozen=True)
class Trigger:
    variant: VariantId
    model: str
    target: float

    @property
    def model_id(self) -> ModelId:
        return ModelId(self.variant.namespace, self.model)

    @property
    def metric(self) -> str:
        return metric_name(self.variant.namespace, self.variant.name)


class TriggerError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_trigger(metadata: Mapping[str, str], scaled_object_namespace: str, default_target: float) -> Trigger:
    problems: list[str] = []
    unknown = sorted(k for k in metadata if k not in KNOWN_KEYS)
    if unknown:
        problems.append(f"unknown trigger metadata key(s) {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(OUR_KEYS)}, each also as <key>FromEnv)")

    def value(key: str) -> str:
        plain = metadata.get(key, "").strip()
        from_env = metadata.get(f"{key}FromEnv", "").strip()
        if plain and from_env and plain != from_env:
            problems.append(f"trigger metadata keys {key!r} and '{key}FromEnv' disagree ({plain!r} vs {from_env!r})")
        return plain or from_env

    fields = {key: value(key) for key in OUR_KEYS}
    for key in REQUIRED_KEYS:
        if not fields[key]:
            problems.append(f"trigger metadata key {key!r} (or '{key}FromEnv') is required")
    namespace = fields["namespace"] or scaled_object_namespace
    if not namespace:
        problems.append("trigger metadata key 'namespace' is required when the ScaledObject has none")
    target = default_target
    if fields["target"]:
        try:
            target = float(fields["target"])
        except ValueError:
            target = math.nan
        if not (math.isfinite(target) and MIN_TARGET <= target <= MAX_TARGET):
            problems.append(f"trigger metadata key 'target' must be a number from {MIN_TARGET} to {MAX_TARGET:g} "
                            f"(KEDA sends the HPA milli-units), got {fields['target']!r}")
    if problems:
        raise TriggerError(problems)
    return Trigger(VariantId(namespace, fields["variant"]), fields["model"], target)


def find_variant(trigger: Trigger, published: Published) -> VariantView | Answer:
    view = published.variants.get(trigger.variant)
    if view is None or view.model != trigger.model:
        known_model = trigger.model_id in published.models
        what = (f"variant {trigger.variant.name!r} of model {trigger.model!r}" if known_model
                else f"model {trigger.model!r}")
        return Answer(Code.NOT_FOUND, f"{what} is not known in namespace {trigger.variant.namespace!r}")
    if view.profile_status != "ok":
        return Answer(Code.NOT_FOUND, f"variant {trigger.variant.name!r} has no usable profile "
                                      f"({view.profile_status}): gpumix does not scale it. {view.profile_detail}")
    return view


def metric_spec(trigger: Trigger, published: Published) -> Answer:
    found = find_variant(trigger, published)
    if isinstance(found, Answer):
        return found
    return Answer(Code.OK, value=trigger.target)


def metric_value(trigger: Trigger, published: Published, now: float, stale_after_s: float,
                 asked_metric: str = "") -> Answer:
    if asked_metric and _PREFIX.sub("", asked_metric.lower()) != trigger.metric:
        return Answer(Code.INVALID_ARGUMENT,
                      f"metricName {asked_metric!r} is not this trigger's metric {trigger.metric!r}")
    found = find_variant(trigger, published)
    if isinstance(found, Answer):
        return found
    view = found
    if view.recommendation is None or view.decided_at is None:
        return Answer(Code.UNAVAILABLE, f"no recommendation yet for {trigger.variant.name!r}: "
                                        f"{view.reason or 'waiting for data'}")
    age = now - view.decided_at
    if age > stale_after_s:
        return Answer(Code.UNAVAILABLE, f"recommendation for {trigger.variant.name!r} is {age:.0f} s old "
                                        f"(stale_after {stale_after_s:.0f} s): {view.reason}")
    value = report_value(view.recommendation, view.current, trigger.target, view.tolerance_up, view.tolerance_down)
    return Answer(Code.OK, value=value)


def is_active(trigger: Trigger, published: Published, waiting: Mapping[ModelId, float]) -> bool:
    """Should this variant have replicas? Missing data keeps what is there."""
    view = published.variants.get(trigger.variant)
    if view is not None and view.recommendation is not None and view.recommendation > 0:
        return True
    if waiting.get(trigger.model_id, 0.0) > 0:
        mview = published.models.get(trigger.model_id)
        if mview is None or (mview.idle and trigger.variant == (mview.first_responder or trigger.variant)):
            return True
    if view is None:
        return False
    if view.recommendation is not None:
        return view.recommendation > 0
    return (view.current or 0) > 0


def is_fresh(view: VariantView, now: float, stale_after_s: float) -> bool:
    return view.recommendation is not None and view.decided_at is not None and now - view.decided_at <= stale_after_s
