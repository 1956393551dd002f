"""ScaledObjects for a model's variants, written so KEDA and the HPA carry out gpumix's plan unchanged.

One ScaledObject per variant (= per GPU-type Deployment). Every field that changes what the HPA does is
written explicitly, with a YAML comment saying why that value suits a planner that already decides the
exact replica count: the HPA's defaults (a 300 s scale-down window gpumix does not know about, a +4 pods /
+100 % scale-up limit, a 10 % dead band) would each make the cluster differ from the plan.

`scaled_object(...)` gives the object as plain data (what tests validate against KEDA's CRD);
`render_yaml(...)` gives the same object as commented YAML text (what users apply).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.scaledobject import name_problems
from scaler.versions import (
    DEFAULT_KEDA_VERSION,
    DEFAULT_KUBERNETES_VERSION,
    VersionError,
    check_supported,
    parse_version,
    tolerance_in_force,
)

DEFAULT_SCALER_ADDRESS = "gpumix.gpumix-system.svc.cluster.local:9090"
POLLING_INTERVAL_S = 15  # gpumix's default control interval; the HPA also syncs every 15 s
# The HPA accepts a scaling policy period of at most 30 minutes and a window of at most one hour.
MAX_WINDOW_S = 3600
OUTAGE_NOTE = (
    "No `fallback`, on purpose: while gpumix is unreachable or answers UNAVAILABLE, KEDA with no fallback "
    "leaves every variant as it is (scale_scaledobjects.go RequestScale: TriggerError, no scaling; the HPA "
    "gets no metric and keeps the count). A fallback with replicas 0 would let KEDA scale serving variants "
    "to zero after cooldownPeriod; one with replicas > 0 wakes every idle variant from KEDA 2.19 on "
    "(isActiveOrFallback). See deploy/README.md, 'When gpumix is down'."
)

LABEL_MODEL = "gpumix.io/model"
LABEL_VARIANT = "gpumix.io/variant"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class RenderOptions:
    scaler_address: str = DEFAULT_SCALER_ADDRESS
    push: bool = False
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    keda_version: str = DEFAULT_KEDA_VERSION
    # None: write `tolerance: 0` where the cluster keeps the field, nothing otherwise.
    tolerance: str | None = None


def tolerance_for(options: RenderOptions) -> str | None:
    """The tolerance to write (a Kubernetes quantity as text), or None to leave the field out. The field is
    written only where both KEDA's CRD has it (v2.18+) and the API server keeps it (HPAConfigurableTolerance
    on by default from 1.35): elsewhere strict apply rejects it, or the API server drops it silently."""
    try:
        k8s = parse_version(options.kubernetes_version, "--kubernetes-version")
        keda = parse_version(options.keda_version, "--keda-version")
        check_supported(k8s, keda)
    except VersionError as exc:
        raise RenderError(str(exc)) from exc
    if options.tolerance is not None:
        if not re.fullmatch(r"\d+(\.\d+)?", options.tolerance):
            raise RenderError(f"--tolerance: expected a non-negative decimal such as 0 or 0.05, got "
                              f"{options.tolerance!r}")
        if not tolerance_in_force(k8s, keda):
            raise RenderError(f"--tolerance: Kubernetes {options.kubernetes_version} with KEDA "
                              f"{options.keda_version} cannot keep behavior.*.tolerance (it needs KEDA >= 2.18 "
                              "and Kubernetes >= 1.35, or 1.33/1.34 with the HPAConfigurableTolerance gate on: "
                              "then pass --kubernetes-version 1.35)")
        return options.tolerance
    return "0" if tolerance_in_force(k8s, keda) else None


def check_names(models: Iterable[ModelInfo]) -> None:
    """Every ScaledObject name and the HPA name KEDA derives from it must be accepted by the API server and
    KEDA's webhook; all problems at once."""
    problems = []
    for m in models:
        for v in m.variants:
            where = f"variant {v.namespace}/{v.name}"
            if v.scaled_object is None:
                hint = " (the ScaledObject is named after the Deployment: set the inventory's scaled_object)"
                problems += [f"{where}: {p}{hint if 'DNS-1123' not in p else ''}"
                             for p in name_problems(v.name, where="name")]
            else:
                problems += [f"{where}: {p}" for p in name_problems(v.name, where="name") if "DNS-1123" in p]
                problems += [f"{where}: {p}" for p in name_problems(v.scaled_object, where="scaled_object")]
    if problems:
        raise RenderError("; ".join(problems))


def _quantity(text: str) -> int | str:
    # The CRD types tolerance as int-or-string (a resource.Quantity): 0 stays an int, 0.05 must be a string.
    return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class _C:
    """A value with a comment written above its key."""

    value: Any
    comment: str


def _spec_tree(model: ModelInfo, variant: VariantInfo, options: RenderOptions) -> dict[str, Any]:
    window = int(min(round(variant.scale_down_window_s), MAX_WINDOW_S))
    tolerance = tolerance_for(options)
    trigger_type = "external-push" if options.push else "external"
    max_replicas = max(1, variant.max_replicas)

    def direction(policies: list[dict[str, Any]], stabilization: _C) -> dict[str, Any]:
        node: dict[str, Any] = {
            "stabilizationWindowSeconds": stabilization,
            "selectPolicy": _C("Max", "Max: the most permissive policy applies, so no policy holds the plan back."),
            "policies": policies,
        }
        if tolerance is not None:
            node["tolerance"] = _C(
                _quantity(tolerance),
                "No dead band: gpumix reports exactly the count it wants, so any change is meant. Needs "
                "HPAConfigurableTolerance (beta, on by default from Kubernetes 1.35) and KEDA >= 2.18; gpumix "
                "reads the tolerance the HPA really got and otherwise compensates for the cluster-wide 10 %.",
            )
        return node

    scale_up = direction(
        policies=[{"type": "Pods", "value": max_replicas, "periodSeconds": 15}],
        stabilization=_C(
            0,
            "Scale up at once: the plan already smooths demand, and every second of delay adds to a "
            "cold start of minutes.",
        ),
    )
    scale_up["policies"] = _C(
        scale_up["policies"],
        "Allow the whole plan in one step (up to maxReplicaCount): a rate limit here would leave the "
        "model short while the planner believes this variant already carries its share.",
    )
    scale_down = direction(
        policies=[{"type": "Percent", "value": 100, "periodSeconds": 15}],
        stabilization=_C(
            window,
            "The same window gpumix plans with (inventory scale_down_window_s): gpumix counts replicas "
            "held by this window as capacity already paid for, so the two must agree.",
        ),
    )
    scale_down["policies"] = _C(
        scale_down["policies"],
        "No extra rate limit: gpumix only lowers a count when the smaller fleet still fits (hysteresis), "
        "and the window above already delays it. Pods drain in their preStop hook.",
    )

    metadata: dict[str, Any] = {
        "scalerAddress": _C(options.scaler_address, "gpumix's gRPC service (KEDA external scaler protocol)."),
        "model": model.name,
        "variant": _C(variant.name, "The Deployment this ScaledObject scales; gpumix plans it with its siblings."),
        "namespace": variant.namespace,
    }
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": variant.name},
        "pollingInterval": _C(
            POLLING_INTERVAL_S,
            "gpumix decides every 15 s; answers are read from its published table, so polling is cheap.",
        ),
        "cooldownPeriod": _C(
            window,
            "Last replica goes away only after the same scale-down window the planner assumes.",
        ),
        "minReplicaCount": _C(
            0,
            "0, always: gpumix decides which variants run at all (a floor belongs in the inventory's "
            "min_replicas, where the planner sees it; a floor here would make the HPA keep GPUs the plan "
            "does not count).",
        ),
        "maxReplicaCount": _C(
            max_replicas,
            "From the inventory (max_replicas): the planner never asks for more.",
        ),
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": _C(
                    {"scaleUp": scale_up, "scaleDown": scale_down},
                    "Copied verbatim into the HPA KEDA creates.",
                ),
            },
        },
        "triggers": _C(
            [
                {
                    "type": trigger_type,
                    "metricType": _C(
                        "AverageValue",
                        "AverageValue: the HPA asks for ceil(value / target) replicas whatever runs now, "
                        "which is how gpumix lands it on the planned count.",
                    ),
                    "metadata": metadata,
                }
            ],
            "external-push also holds a stream open so an idle model scales from zero within a second."
            if options.push
            else "external: KEDA polls gpumix every pollingInterval (use --push for faster scale from zero).",
        ),
    }


def _tree(model: ModelInfo, variant: VariantInfo, options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": variant.scaled_object or variant.name,
            "namespace": variant.namespace,
            "labels": {
                LABEL_MANAGED_BY: "gpumix",
                LABEL_MODEL: _label_value(model.name),
                LABEL_VARIANT: _label_value(variant.name),
            },
        },
        "spec": _spec_tree(model, variant, options),
    }


def _label_value(text: str) -> str:
    # Label values: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.
    value = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("._-")
    return value


def _plain(node: Any) -> Any:
    if isinstance(node, _C):
        return _plain(node.value)
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def scaled_object(model: ModelInfo, variant: VariantInfo, options: RenderOptions | None = None) -> dict[str, Any]:
    return _plain(_tree(model, variant, options or RenderOptions()))  # type: ignore[no-any-return]


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _wrap(comment: str, indent: str, width: int = 110) -> list[str]:
    words, lines, line = comment.split(), [], ""
    for word in words:
        if line and len(indent) + 2 + len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return [f"{indent}# {text}" for text in lines]


def _emit(node: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            comment = None
            if isinstance(value, _C):
                comment, value = value.comment, value.value
            if comment:
                out.extend(_wrap(comment, pad))
            if isinstance(value, dict) and value:
                out.append(f"{pad}{key}:")
                _emit(value, indent + 2, out)
            elif isinstance(value, list) and value:
                out.append(f"{pad}{key}:")
                _emit(value, indent, out)
            else:
                out.append(f"{pad}{key}: {_scalar(_plain(value))}")
        return
    if isinstance(node, list):
        for item in node:
            sub: list[str] = []
            if isinstance(item, dict | list):
                _emit(item, indent + 2, sub)
            else:
                sub.append(f"{pad}  {_scalar(item)}")
            # The first line of the item carries the dash (comments stay above it).
            for i, line in enumerate(sub):
                if not line.lstrip().startswith("#"):
                    sub[i] = f"{pad}- {line[indent + 2:]}"
                    break
            out.extend(sub)
        return
    out.append(f"{pad}{_scalar(node)}")


def check_windows(models: Iterable[ModelInfo]) -> None:
    """Rent or buy: a replica released and needed again costs its cold start (paid, not serving) and the
    requests that wait for it; kept idle it costs its price per second. The ski-rental break-even — keep it
    until its idle cost equals a restart's, which, the price cancelling, is one cold start — never pays more
    than twice what knowing the future would; releasing sooner loses that bound. The HPA's scale-down window
    is exactly "idle for that long", so a window shorter than the variant's cold start is refused, every
    such variant at once."""
    problems = [
        f"variant {v.namespace}/{v.name}: scale_down_window_s {v.scale_down_window_s:g} is shorter than its "
        f"cold_start_s {v.cold_start_s:g}: replicas would be released before a restart could pay off"
        for m in models for v in m.variants
        if v.cold_start_s is not None and v.scale_down_window_s < v.cold_start_s
    ]
    if problems:
        raise RenderError("; ".join(problems))


def render_yaml(model: ModelInfo, variant: VariantInfo, options: RenderOptions | None = None) -> str:
    options = options or RenderOptions()
    out = _wrap(
        f"ScaledObject for variant {variant.name} of model {model.name}, written by `gpumix render`. "
        "Change counts in the inventory and render again rather than editing here; `gpumix lint` checks "
        "hand-made ones. " + OUTAGE_NOTE,
        "",
    )
    _emit(_tree(model, variant, options), 0, out)
    return "\n".join(out) + "\n"


def select_models(inventory: Inventory, model: str | None) -> list[ModelInfo]:
    if model is None:
        return list(inventory.models)
    found = inventory.model(model)
    if found is None:
        known = ", ".join(m.name for m in inventory.models)
        raise RenderError(f"--model {model!r}: not in the inventory (models: {known})")
    return [found]


def render_all(models: Iterable[ModelInfo], options: RenderOptions | None = None) -> list[tuple[str, str]]:
    """(file name, YAML text) per variant, in inventory order; RenderError names every object the cluster
    would refuse."""
    models = list(models)
    options = options or RenderOptions()
    tolerance_for(options)
    check_names(models)
    check_windows(models)
    return [
        (f"{v.namespace}-{v.scaled_object or v.name}.yaml", render_yaml(m, v, options))
        for m in models
        for v in m.variants
    ]


def join_documents(texts: Sequence[str]) -> str:
    return "---\n".join(texts)
