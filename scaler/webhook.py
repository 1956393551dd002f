"""The admission decision of `gpumix webhook`, pure: an AdmissionReview request, the accelerators the cluster
offers and the measured scales → an AdmissionReview response (a JSONPatch and warnings). No I/O, no clock:
the HTTPS server, node listing, profile loading, logging and counting live in scaler/commands/webhook.py.

What a pod asks for (opt-in: without `gpumix.io/model` a pod is admitted as it came):

    gpumix.io/model          a model gpumix knows (optimizer.perfmodel.MODELS) or its parameters,
                             "name=m,params=6.7,layers=32,hidden=4096,kv_heads=32,head_dim=128"
    gpumix.io/load           "64" (requests in flight) or "2.5rps" / "2.5req/s" (arrival rate)
    gpumix.io/tpot           "50ms", "0.05s", or a bare number of milliseconds; else the container's env
                             TPOT (milliseconds, as in AutoFit's example `env TPOT=30`)
    gpumix.io/ttft           optional, same units (env TTFT as fallback): drops accelerators whose prefill
                             alone would break it
    gpumix.io/input-tokens   mean prompt tokens (default 768) } the mean context while decoding is
    gpumix.io/output-tokens  mean output tokens (default 512) } input + output/2 = 1024, recommend's default
    gpumix.io/container      which container to right-size, when more than one asks for a GPU

The pick is AutoFit's (optimizer.autofit.right_size): the smallest offered accelerator meeting the TPOT SLO at
the load, else the largest. The patch replaces the container's GPU resource (nvidia.com/gpu or
nvidia.com/mig-*) in limits and, when present, requests, adds a node selector where the resource name alone
does not pin the accelerator, and records the pick in the annotation `gpumix.io/recommended-accelerator`.

Facts of the API this follows (k8s.io/api admission/v1/types.go; k8s.io/apiserver
pkg/admission/plugin/webhook/request/admissionreview.go, VerifyAdmissionResponse): the response is an
`admission.k8s.io/v1` AdmissionReview whose `response.uid` equals the request's; a patch is base64 JSON with
`patchType: JSONPatch`, and neither may come without the other; warnings should stay under 120 characters.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from optimizer.autofit import (
    DEFAULT_OCCUPANCY,
    AutoFitError,
    Prediction,
    Predictor,
    Scale,
    right_size,
)
from optimizer.perfmodel import CATALOG, Accelerator, ModelSpec, PerfModelError, accelerator
from scaler.commands.rightsize import parse_model as parse_model_spec

PREFIX = "gpumix.io/"
MODEL = PREFIX + "model"
LOAD = PREFIX + "load"
TPOT = PREFIX + "tpot"
TTFT = PREFIX + "ttft"
INPUT_TOKENS = PREFIX + "input-tokens"
OUTPUT_TOKENS = PREFIX + "output-tokens"
CONTAINER = PREFIX + "container"
RECOMMENDED = PREFIX + "recommended-accelerator"
ENV_TPOT, ENV_TTFT = "TPOT", "TTFT"
DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS = 768, 512

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
ACCELERATOR_LABEL = "gpumix.io/accelerator"  # the node label scaler/kube.py reads as the pool name
PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU feature discovery's
# A per-token time below this is no GPU's: "0.05" meant seconds, not milliseconds.
MIN_TPOT_S = 1e-3


class Outcome(StrEnum):
    PATCHED = "patched"  # the pod gets another accelerator (or a node selector for the one it asked for)
    UNCHANGED = "unchanged"  # opted in, and what it asks for is already the pick
    SKIPPED = "skipped"  # not opted in, not a pod, not a CREATE
    MALFORMED = "malformed"  # opted in, inputs unusable: admitted as it came, with warnings
    REJECTED = "rejected"  # malformed, and the operator chose to reject those
    NO_FIT = "no-fit"  # opted in, but no offered accelerator holds the model: admitted as it came


class LoadKind(StrEnum):
    CONCURRENCY = "concurrency"
    RATE = "rate"


@dataclass(frozen=True)
class Load:
    kind: LoadKind
    value: float  # requests in flight, or requests per second

    def __str__(self) -> str:
        return f"{self.value:g}" if self.kind is LoadKind.CONCURRENCY else f"{self.value:g}rps"


@dataclass(frozen=True)
class Offer:
    """An accelerator the cluster offers: the catalog entry, the resource a pod requests for it, and the node
    labels that pin it (key → accepted values; empty when the resource name alone pins it)."""

    accelerator: str
    resource: str
    selector: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allocatable: float = 0.0


@dataclass(frozen=True)
class Policy:
    reject_malformed: bool = False


@dataclass(frozen=True)
class Intent:
    """What an opted-in pod asks for, parsed."""

    spec: ModelSpec
    load: Load
    tpot: float
    ttft: float | None
    input_tokens: int
    output_tokens: int
    container: int
    container_name: str
    resource: str  # the GPU resource it requests now
    in_requests: bool

    @property
    def context_tokens(self) -> float:
        return self.input_tokens + self.output_tokens / 2.0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    model: str | None = None
    previous: str | None = None  # GPU resource the pod asked for
    pick: str | None = None
    resource: str | None = None
    meets_slo: bool | None = None
    load: str | None = None
    concurrency: int | None = None
    basis: str | None = None  # "analytical" or "measured on <accelerator>"
    candidates: int = 0


# A callable so that the edge can calibrate lazily and cache: model → {measured accelerator: scale}.
MeasuredScales = Callable[[ModelSpec], Mapping[str, Scale]]


def _no_measurements(_spec: ModelSpec) -> Mapping[str, Scale]:
    return {}


# ------------------------------------------------------------------------------------------ offers


def needs_selector(resource: str) -> bool:
    """The catalog decides: a resource name shared by several accelerators (nvidia.com/gpu by every GPU,
    nvidia.com/mig-1g.20gb by A100-80GB and H100 slices) does not say which one a pod lands on."""
    return resource == GPU or sum(1 for a in CATALOG.values() if a.resource == resource) > 1


def catalog_product(product: str) -> str | None:
    """GPU feature discovery's `nvidia.com/gpu.product` (the NVML name, spaces turned into dashes, e.g.
    NVIDIA-A100-SXM4-80GB, Tesla-V100-SXM2-32GB, NVIDIA-H100-80GB-HBM3; NVIDIA/k8s-device-plugin
    internal/lm/resource.go, getProductName/sanitise) → the catalog's name, or None when the catalog has no
    such accelerator. A `-MIG-<profile>` suffix (mig-strategy single) gives the slice. A `-SHARED` one
    (time-slicing or MPS) is None: replicas sharing a GPU get an unknown part of it, so no estimate holds."""
    if product.upper().endswith("-SHARED"):
        return None
    base, _, profile = product.partition("-MIG-")
    tokens = [t for t in base.upper().replace("_", "-").split("-") if t]
    name: str | None = None
    if "H100" in tokens and ("HBM3" in tokens or "SXM5" in tokens or "80GB" in tokens) and "PCIE" not in tokens:
        name = "H100-80GB"  # the catalog's H100 is the SXM part; PCIe and NVL differ in bandwidth and memory
    elif "A100" in tokens:
        name = "A100-80GB" if "80GB" in tokens else "A100-40GB"
    elif "V100" in tokens:
        name = "V100-16GB" if "16GB" in tokens else "V100" if "32GB" in tokens else None
    else:
        name = next((n for n in ("T4", "A10G", "A10", "L4", "L20", "L40S", "A40") if n in tokens), None)
    if name is None:
        return None
    if profile:
        sliced = f"{name}/{profile.lower()}"
        return sliced if sliced in CATALOG else None
    return name


def static_offers(entries: Any, source: str) -> list[Offer]:
    """A static list: each entry a catalog name, or {accelerator, resource?, nodeSelector?, count?}. Where the
    catalog needs a selector and none is given, gpumix's own node label pins it
    (`gpumix.io/accelerator: <GPU>`, the label scaler/kube.py reads for pools)."""
    items = entries.get("accelerators") if isinstance(entries, Mapping) else entries
    if not isinstance(items, list) or not items:
        raise WebhookInputError(source, ["accelerators: a non-empty list of catalog names or mappings"])
    problems: list[str] = []
    out: list[Offer] = []
    for i, item in enumerate(items):
        where = f"accelerators[{i}]"
        entry: Mapping[str, Any] = {"accelerator": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping) or not isinstance(entry.get("accelerator"), str):
            problems.append(f"{where}: a catalog name or a mapping with 'accelerator'")
            continue
        unknown = set(entry) - {"accelerator", "resource", "nodeSelector", "count"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        try:
            acc = accelerator(entry["accelerator"])
        except PerfModelError as exc:
            problems.append(f"{where}: {str(exc).split(';')[0]}")
            continue
        resource = entry.get("resource", acc.resource)
        if not isinstance(resource, str) or not (resource == GPU or resource.startswith(MIG_PREFIX)):
            problems.append(f"{where}.resource: nvidia.com/gpu or nvidia.com/mig-<profile>, got {resource!r}")
            continue
        raw = entry.get("nodeSelector")
        selector: dict[str, tuple[str, ...]] = {}
        if raw is not None:
            if not isinstance(raw, Mapping) or not raw:
                problems.append(f"{where}.nodeSelector: a mapping of label → value (or list of values)")
                continue
            for key, value in raw.items():
                values = tuple(value) if isinstance(value, list) else (value,)
                if not values or not all(isinstance(v, str) and v for v in values):
                    problems.append(f"{where}.nodeSelector.{key}: non-empty string values")
                selector[str(key)] = tuple(str(v) for v in values)
        elif needs_selector(resource):
            selector = {ACCELERATOR_LABEL: (acc.parent or acc.name,)}
        count = entry.get("count", 1)
        if not isinstance(count, int | float) or count <= 0:
            problems.append(f"{where}.count: a positive number, got {count!r}")
            continue
        out.append(Offer(acc.name, resource, selector, float(count)))
    if problems:
        raise WebhookInputError(source, problems)
    return merge_offers(out)


def offers_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> tuple[list[Offer], list[str]]:
    """Nodes' allocatable `nvidia.com/gpu` and `nvidia.com/mig-<profile>` → offers, and a note per node whose
    GPU the catalog does not know. The accelerator is named by the node label `gpumix.io/accelerator` (a
    catalog name), else GPU feature discovery's `nvidia.com/gpu.product`; that label is also the selector.
    Cordoned nodes offer nothing."""
    out: list[Offer] = []
    notes: list[str] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        if (node.get("spec") or {}).get("unschedulable"):
            continue  # cordoned: a pod sent to its slices would stay Pending
        labels = meta.get("labels") or {}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        gpu_resources = {r: _quantity(v) for r, v in allocatable.items() if r == GPU or r.startswith(MIG_PREFIX)}
        gpu_resources = {r: v for r, v in gpu_resources.items() if v > 0}
        if not gpu_resources:
            continue
        key = ACCELERATOR_LABEL if labels.get(ACCELERATOR_LABEL) else PRODUCT_LABEL
        value = labels.get(key)
        base: str | None = None
        if value and key == ACCELERATOR_LABEL:
            try:
                base = accelerator(value).name
            except PerfModelError:
                base = None
        elif value:
            base = catalog_product(value)
        if base is None:
            notes.append(f"node {meta.get('name')}: {key}={value!r} is not an accelerator gpumix knows")
            continue
        for resource, count in sorted(gpu_resources.items()):
            if resource == GPU:
                name = base  # under mig-strategy single the product label already names the slice
            else:
                name = f"{base.split('/')[0]}/{resource[len(MIG_PREFIX):]}"
                if name not in CATALOG:
                    notes.append(f"node {meta.get('name')}: {resource} is not a MIG profile of {base}")
                    continue
            selector = {key: (value,)} if needs_selector(resource) and value else {}
            out.append(Offer(name, resource, selector, count))
    return merge_offers(out), notes


def merge_offers(offers: Iterable[Offer]) -> list[Offer]:
    """One offer per (accelerator, resource, selector label): nodes of one accelerator labelled with several
    product strings (SXM and PCIe A100-80GB) become one offer accepting any of them."""
    merged: dict[tuple[str, str, tuple[str, ...]], Offer] = {}
    for o in offers:
        k = (o.accelerator, o.resource, tuple(sorted(o.selector)))
        if k in merged:
            prev = merged[k]
            selector = {lab: tuple(sorted({*prev.selector[lab], *o.selector[lab]})) for lab in o.selector}
            merged[k] = replace(prev, selector=selector, allocatable=prev.allocatable + o.allocatable)
        else:
            merged[k] = replace(o, selector={lab: tuple(sorted(set(v))) for lab, v in o.selector.items()})
    return sorted(merged.values(), key=lambda o: (o.accelerator, o.resource, sorted(o.selector)))


def _quantity(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


class WebhookInputError(ValueError):
    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source, self.problems = source, list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


# ------------------------------------------------------------------------------------------ parsing the pod


def parse_duration(text: str, what: str) -> float:
    """"50ms", "0.05s", or a bare number of milliseconds (AutoFit's `TPOT=30`) → seconds."""
    raw = text.strip().lower()
    scale = 1e-3
    if raw.endswith("ms"):
        raw = raw[:-2]
    elif raw.endswith("s"):
        raw, scale = raw[:-1], 1.0
    try:
        seconds = float(raw) * scale
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a duration; use 50ms or 0.05s") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what}: must be positive, got {text!r}")
    if seconds < MIN_TPOT_S:
        raise ValueError(f"{what}: {text!r} is under 1 ms; bare numbers are ms, write 0.05s for seconds")
    return seconds


_RATE = re.compile(r"^\s*([0-9.eE+-]+)\s*(rps|req/s|r/s)\s*$", re.I)


def parse_load(text: str) -> Load:
    m = _RATE.match(text)
    kind, raw = (LoadKind.RATE, m.group(1)) if m else (LoadKind.CONCURRENCY, text.strip())
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LOAD}: {text!r}; give requests in flight (64) or a rate (2.5rps)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{LOAD}: must be positive, got {text!r}")
    return Load(kind, value)


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{what}: a positive whole number of tokens, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what}: a positive whole number of tokens, got {text!r}")
    return value


def _gpu_keys(resources: Mapping[str, Any] | None) -> list[str]:
    return [k for k in (resources or {}) if k == GPU or k.startswith(MIG_PREFIX)]


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for e in container.get("env") or []:
        if isinstance(e, Mapping) and e.get("name") == name and isinstance(e.get("value"), str):
            return str(e["value"])
    return None


def parse_intent(pod: Mapping[str, Any], parse_model: Callable[[str], ModelSpec] = parse_model_spec
                 ) -> Intent | list[str]:
    """The pod's intent, or every problem with it (one line each, for the response's warnings)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    problems: list[str] = []
    spec: ModelSpec | None = None
    try:
        spec = parse_model(str(annotations[MODEL]))
    except (PerfModelError, AutoFitError, ValueError) as exc:
        problems.append(f"{MODEL}: {str(exc).removeprefix('--model-params: ')}")

    containers = (pod.get("spec") or {}).get("containers") or []
    wanted = annotations.get(CONTAINER)
    gpu_containers = [i for i, c in enumerate(containers) if isinstance(c, Mapping)
                      and (_gpu_keys((c.get("resources") or {}).get("limits"))
                           or _gpu_keys((c.get("resources") or {}).get("requests")))]
    index: int | None = None
    if wanted is not None:
        index = next((i for i, c in enumerate(containers) if c.get("name") == wanted), None)
        if index is None:
            problems.append(f"{CONTAINER}: no container named {wanted!r}")
        elif index not in gpu_containers:
            problems.append(f"{CONTAINER}: container {wanted!r} requests no nvidia.com/gpu or nvidia.com/mig-*")
            index = None
    elif len(gpu_containers) == 1:
        index = gpu_containers[0]
    elif not gpu_containers:
        problems.append("no container requests nvidia.com/gpu or nvidia.com/mig-*: nothing to right-size")
    else:
        names = ", ".join(str(containers[i].get("name")) for i in gpu_containers)
        problems.append(f"several containers request GPUs ({names}); name one in {CONTAINER}")

    resource, in_requests = GPU, False
    container: Mapping[str, Any] = containers[index] if index is not None else {}
    if index is not None:
        res = container.get("resources") or {}
        keys = sorted({*_gpu_keys(res.get("limits")), *_gpu_keys(res.get("requests"))})
        counts = {_quantity((res.get("limits") or {}).get(k, (res.get("requests") or {}).get(k))) for k in keys}
        if len(keys) != 1 or counts != {1.0}:
            asked = ", ".join(f"{k}: {(res.get('limits') or res.get('requests') or {}).get(k)}" for k in keys)
            problems.append(f"container {container.get('name')!r} asks for {asked}; gpumix right-sizes one GPU")
        else:
            resource = keys[0]
            in_requests = resource in (res.get("requests") or {})

    def duration(key: str, env: str, required: bool) -> float | None:
        text = annotations.get(key)
        what = key
        if text is None and index is not None:
            text, what = _env(container, env), f"env {env}"
        if text is None:
            if required:
                problems.append(f"{key}: missing (and no env {env} on the container); e.g. 50ms")
            return None
        try:
            return parse_duration(str(text), what)
        except ValueError as exc:
            problems.append(str(exc))
            return None

    tpot = duration(TPOT, ENV_TPOT, required=True)
    ttft = duration(TTFT, ENV_TTFT, required=False)
    load: Load | None = None
    if LOAD not in annotations:
        problems.append(f"{LOAD}: missing; requests in flight (64) or a rate (2.5rps)")
    else:
        try:
            load = parse_load(str(annotations[LOAD]))
        except ValueError as exc:
            problems.append(str(exc))
    tokens: dict[str, int] = {}
    for key, default in ((INPUT_TOKENS, DEFAULT_INPUT_TOKENS), (OUTPUT_TOKENS, DEFAULT_OUTPUT_TOKENS)):
        try:
            tokens[key] = _positive_int(str(annotations[key]), key) if key in annotations else default
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    assert spec is not None and load is not None and tpot is not None and index is not None
    return Intent(spec=spec, load=load, tpot=tpot, ttft=ttft, input_tokens=tokens[INPUT_TOKENS],
                  output_tokens=tokens[OUTPUT_TOKENS], container=index, container_name=str(container.get("name")),
                  resource=resource, in_requests=in_requests)


# ------------------------------------------------------------------------------------------ the pick


def scale_for(acc: Accelerator, measured: Mapping[str, Scale]) -> Scale:
    """Measured beats analytical: the accelerator's own measurements, else those of the same GPU (a slice
    of it, or the GPU of a slice), else any, else the datasheet model."""
    if acc.name in measured:
        return measured[acc.name]
    family = acc.parent or acc.name
    same = sorted(n for n in measured if (CATALOG[n].parent or n) == family) if measured else []
    if same:
        return measured[same[0]]
    return measured[sorted(measured)[0]] if measured else Scale.analytic()


def concurrency_for(intent: Intent, predictor: Predictor, acc: Accelerator) -> int:
    """Requests in flight. A rate becomes a concurrency by Little's law at the SLO's own per-token time
    (the most a request may take while the SLO holds), with the occupancy headroom synthesized profiles use
    for Poisson arrivals (optimizer.autofit.DEFAULT_OCCUPANCY)."""
    if intent.load.kind is LoadKind.CONCURRENCY:
        return max(1, math.ceil(intent.load.value - 1e-9))
    service = predictor.prefill_time(acc, intent.input_tokens) + intent.output_tokens * intent.tpot
    return max(1, math.ceil(intent.load.value * service / DEFAULT_OCCUPANCY - 1e-9))


def _selector_compatible(offer: Offer, pod_selector: Mapping[str, Any]) -> bool:
    return all(pod_selector[k] in values for k, values in offer.selector.items() if k in pod_selector)


def predict_offers(intent: Intent, offers: Sequence[Offer], measured: Mapping[str, Scale],
                   pod_selector: Mapping[str, Any] | None = None
                   ) -> list[tuple[Offer, Prediction, Scale, int]]:
    out = []
    for offer in offers:
        if pod_selector and not _selector_compatible(offer, pod_selector):
            continue  # the pod pins other nodes: respect it
        acc = accelerator(offer.accelerator)
        scale = scale_for(acc, measured)
        predictor = Predictor(intent.spec, scale)
        load = concurrency_for(intent, predictor, acc)
        p = predictor.predict(acc, load=load, tpot_slo=intent.tpot, context_tokens=intent.context_tokens)
        if intent.ttft is not None and p.meets_slo and predictor.prefill_time(acc, intent.input_tokens) > intent.ttft:
            p = replace(p, meets_slo=False)
        out.append((offer, p, scale, load))
    return out


# ------------------------------------------------------------------------------------------ the patch


def _ptr(*parts: object) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def build_patch(pod: Mapping[str, Any], intent: Intent, offer: Offer) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    container = pod["spec"]["containers"][intent.container]
    resources = container.get("resources") or {}
    base = ("spec", "containers", intent.container, "resources")
    for section in ("limits", "requests"):
        current = resources.get(section) or {}
        if section == "requests" and not intent.in_requests:
            continue
        for key in _gpu_keys(current):
            if key != offer.resource:
                ops.append({"op": "remove", "path": _ptr(*base, section, key)})
        if offer.resource not in current:
            if section not in resources:
                ops.append({"op": "add", "path": _ptr(*base, section), "value": {offer.resource: "1"}})
            else:
                ops.append({"op": "add", "path": _ptr(*base, section, offer.resource), "value": "1"})
    ops += _selector_ops(pod, offer)
    if ops:
        annotations = pod["metadata"]["annotations"]  # present: the opt-in is an annotation
        op = "replace" if RECOMMENDED in annotations else "add"
        ops.append({"op": op, "path": _ptr("metadata", "annotations", RECOMMENDED), "value": offer.accelerator})
    return ops


def _selector_ops(pod: Mapping[str, Any], offer: Offer) -> list[dict[str, Any]]:
    """One accepted value: a nodeSelector entry. Several (one accelerator under several product names): a
    required node-affinity expression ANDed into every existing term, so the pod's own terms still hold."""
    spec = pod["spec"]
    node_selector = spec.get("nodeSelector") or {}
    ops: list[dict[str, Any]] = []
    for key, values in sorted(offer.selector.items()):
        if node_selector.get(key) in values:
            continue
        if len(values) == 1:
            if "nodeSelector" not in spec:
                ops.append({"op": "add", "path": "/spec/nodeSelector", "value": {key: values[0]}})
                spec = {**spec, "nodeSelector": {key: values[0]}}
            else:
                ops.append({"op": "add", "path": _ptr("spec", "nodeSelector", key), "value": values[0]})
            continue
        expr = {"key": key, "operator": "In", "values": list(values)}
        affinity = spec.get("affinity") or {}
        node_affinity = affinity.get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        terms = required.get("nodeSelectorTerms") or []
        required_value = {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}
        if "affinity" not in spec:
            ops.append({"op": "add", "path": "/spec/affinity",
                        "value": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required_value}}})
        elif "nodeAffinity" not in affinity:
            ops.append({"op": "add", "path": "/spec/affinity/nodeAffinity",
                        "value": {"requiredDuringSchedulingIgnoredDuringExecution": required_value}})
        elif not terms:
            ops.append({"op": "add", "value": required_value,
                        "path": "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"})
        else:
            for j, term in enumerate(terms):
                path = _ptr("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                            "nodeSelectorTerms", j, "matchExpressions")
                if "matchExpressions" in term:
                    ops.append({"op": "add", "path": path + "/-", "value": expr})
                else:
                    ops.append({"op": "add", "path": path, "value": [expr]})
    return ops


# ------------------------------------------------------------------------------------------ the decision


def decide(pod: Mapping[str, Any], offers: Sequence[Offer], measured: MeasuredScales = _no_measurements, *,
           parse_model: Callable[[str], ModelSpec] = parse_model_spec) -> Decision:
    """One pod: right-size it onto the offers, or say why not. Never raises on the pod's content."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if MODEL not in annotations:
        return Decision(Outcome.SKIPPED, f"no {MODEL} annotation")
    parsed = parse_intent(pod, parse_model)
    if isinstance(parsed, list):
        return Decision(Outcome.MALFORMED, "; ".join(parsed), warnings=tuple(f"gpumix: {p}" for p in parsed),
                        model=str(annotations.get(MODEL)))
    intent = parsed
    common: dict[str, Any] = {"model": intent.spec.name, "previous": intent.resource, "load": str(intent.load)}
    if not offers:
        msg = "no accelerator is offered (empty list, or no node has allocatable nvidia.com/gpu or mig-*)"
        return Decision(Outcome.NO_FIT, msg, warnings=(f"gpumix: {msg}; admitted unchanged",), **common)
    pod_selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    scored = predict_offers(intent, offers, measured(intent.spec), pod_selector)
    if not scored:
        msg = "the pod's nodeSelector excludes every offered accelerator"
        return Decision(Outcome.NO_FIT, msg, warnings=(f"gpumix: {msg}; admitted unchanged",), **common)
    try:
        pick = right_size([p for _, p, _, _ in scored])
    except AutoFitError:
        names = ", ".join(sorted({o.accelerator for o, _, _, _ in scored}))
        msg = f"{intent.spec.name} fits in the memory of none of {names}"
        return Decision(Outcome.NO_FIT, msg, warnings=(f"gpumix: {msg}; admitted unchanged",), candidates=len(scored),
                        **common)
    # Several offers of one accelerator (different node labels): the one with most allocatable.
    offer, prediction, scale, load = max((t for t in scored if t[1].accelerator == pick.accelerator),
                                         key=lambda t: (t[0].allocatable, t[0].resource))
    basis = f"measured on {scale.reference}" if scale.reference else "analytical"
    warnings: list[str] = []
    if not prediction.meets_slo:
        warnings.append(f"gpumix: no offered accelerator meets TPOT {intent.tpot * 1000:g} ms at load {load}; "
                        f"the largest, {offer.accelerator}, sustains {prediction.max_batch}")
    patch = build_patch(pod, intent, offer)
    outcome = Outcome.PATCHED if patch else Outcome.UNCHANGED
    reason = (f"{offer.accelerator} ({'meets' if prediction.meets_slo else 'misses'} TPOT "
              f"{intent.tpot * 1000:g} ms at {load} in flight; max batch {prediction.max_batch})")
    return Decision(outcome, reason, patch=tuple(patch), warnings=tuple(warnings), pick=offer.accelerator,
                    resource=offer.resource, meets_slo=prediction.meets_slo, concurrency=load, basis=basis,
                    candidates=len(scored), **common)


# ------------------------------------------------------------------------------------------ AdmissionReview


class ReviewError(ValueError):
    """Not an AdmissionReview request one can answer (no uid): the HTTP layer answers 400."""


def review(body: Any, offers: Sequence[Offer], measured: MeasuredScales = _no_measurements,
           policy: Policy = Policy()) -> tuple[dict[str, Any], Decision, Mapping[str, Any]]:
    """AdmissionReview request → (AdmissionReview response, the decision, the request) — pure."""
    if not isinstance(body, Mapping) or body.get("kind") != "AdmissionReview":
        raise ReviewError("body is not an AdmissionReview")
    if body.get("apiVersion") != "admission.k8s.io/v1":
        raise ReviewError(f"apiVersion {body.get('apiVersion')!r}: only admission.k8s.io/v1 is spoken")
    request = body.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ReviewError("request.uid missing")
    kind = request.get("kind") or {}
    obj = request.get("object")
    if request.get("operation") != "CREATE":
        decision = Decision(Outcome.SKIPPED, f"operation {request.get('operation')}: only CREATE is right-sized")
    elif (kind.get("group"), kind.get("version"), kind.get("kind")) != ("", "v1", "Pod") or not isinstance(obj, dict):
        decision = Decision(Outcome.SKIPPED, f"kind {kind}: only v1 Pods are right-sized")
    else:
        decision = decide(obj, offers, measured)
        if decision.outcome is Outcome.MALFORMED and policy.reject_malformed:
            decision = replace(decision, outcome=Outcome.REJECTED)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": decision.outcome is not Outcome.REJECTED}
    if decision.outcome is Outcome.REJECTED:
        response["status"] = {"code": 400, "reason": "BadRequest", "message": "; ".join(decision.warnings)}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(decision.patch)).encode()).decode()
    if decision.warnings and decision.outcome is not Outcome.REJECTED:
        response["warnings"] = list(decision.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}, decision, request
