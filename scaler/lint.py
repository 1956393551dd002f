"""Checks existing Kubernetes objects against what gpumix needs, and says what to change.

Input: parsed YAML documents (Deployments, ScaledObjects, HorizontalPodAutoscalers; anything else is
ignored), optionally the profiles gpumix has and the inventory it plans with. Output: findings, each naming
the object, the file and the field, in words a user acts on. Errors make gpumix plan or act wrongly;
warnings cost money or latency but work.

A ScaledObject is "gpumix-driven" when it has an external or external-push trigger that names a model or
variant, or whose scalerAddress mentions gpumix.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE, KEDA_DEFAULT_MAX_REPLICAS
from scaler.inventory import Inventory
from scaler.render import LABEL_MODEL, LABEL_VARIANT
from scaler.scaledobject import BEHAVIOR_PATH, ScaledObject, read_scaled_object
from scaler.versions import (
    KEDA_TOLERANCE_FIELD,
    MAX_KEDA_TESTED,
    MAX_KUBERNETES_TESTED,
    TOLERANCE_GATE_ON_BY_DEFAULT,
    Version,
)

ERROR = "error"
WARNING = "warning"

# AIBrix's labels mean the same and are accepted so AIBrix Deployments work unchanged.
MODEL_LABELS = (LABEL_MODEL, "model.aibrix.ai/name")
REQUIRED_METADATA = ("scalerAddress", "model", "variant")
KNOWN_METADATA = {*REQUIRED_METADATA, "namespace", "target"}
HPA_DEFAULT_DOWN_WINDOW_S = round(DEFAULT_SCALE_DOWN_WINDOW_S)
# The HPA's default scale-up policies: +4 pods or +100 % per 15 s, whichever is more.
HPA_DEFAULT_UP_POLICIES = ({"type": "Pods", "value": 4, "periodSeconds": 15},
                           {"type": "Percent", "value": 100, "periodSeconds": 15})
KEDA_DEFAULT_MAX = KEDA_DEFAULT_MAX_REPLICAS
# Kubernetes' default grace period; vLLM needs longer to finish in-flight generations.
DEFAULT_GRACE_S = 30


@dataclass(frozen=True)
class Document:
    source: str  # file (and document index) it came from
    obj: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name", "<unnamed>")) if isinstance(meta, Mapping) else "<unnamed>"

    @property
    def namespace(self) -> str:
        meta = self.obj.get("metadata") or {}
        ns = meta.get("namespace") if isinstance(meta, Mapping) else None
        return str(ns) if ns else "default"

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Finding:
    severity: str
    source: str
    obj: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.source}: {self.obj}: {self.message}"


class LintInputError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ reading


def load_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Every YAML document under the given files and directories (*.yaml, *.yml, recursively)."""
    docs: list[Document] = []
    problems: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            problems.append(f"{path}: no such file or directory")
            continue
        for file in files:
            try:
                loaded = list(yaml.safe_load_all(file.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                problems.append(f"{file}: cannot read YAML: {exc}")
                continue
            for i, obj in enumerate(loaded):
                if isinstance(obj, Mapping) and obj.get("kind") == "List":
                    items = obj.get("items") or []
                    docs.extend(Document(f"{file}#{i}.{j}", it) for j, it in enumerate(items)
                                if isinstance(it, Mapping))
                elif isinstance(obj, Mapping):
                    docs.append(Document(f"{file}#{i}" if len(loaded) > 1 else str(file), obj))
    if problems:
        raise LintInputError("; ".join(problems))
    return docs


def load_profile_index(directory: str | Path) -> tuple[set[tuple[str | None, str]], list[Finding]]:
    """(model, variant) pairs that have a readable profile, and a finding per unreadable file. AIBrix
    profiles do not name their model: as in gpumix's profile store, they count for any model
    (model None)."""
    from optimizer.profile import ProfileError, parse_profile

    root = Path(directory)
    if not root.is_dir():
        raise LintInputError(f"--profiles {root}: not a directory")
    have: set[tuple[str | None, str]] = set()
    findings: list[Finding] = []
    for file in sorted(root.rglob("*.json")):
        try:
            data = json.loads(file.read_text())
            profile = parse_profile(data, str(file))
        except (OSError, json.JSONDecodeError) as exc:
            findings.append(Finding(ERROR, str(file), "profile", f"cannot read JSON: {exc}"))
            continue
        except ProfileError as exc:
            findings.append(Finding(ERROR, str(file), "profile", "invalid, so gpumix treats its variant as "
                                    "having no profile: " + "; ".join(exc.problems)))
            continue
        aibrix = isinstance(data, Mapping) and "tputs" in data
        have.add((None if aibrix else profile.model, profile.variant))
    return have, findings


# ------------------------------------------------------------------------------------------------ helpers


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def gpumix_trigger(trigger: Any) -> bool:
    if not isinstance(trigger, Mapping) or trigger.get("type") not in ("external", "external-push"):
        return False
    meta = trigger.get("metadata") or {}
    if not isinstance(meta, Mapping):
        return False
    return "model" in meta or "variant" in meta or "gpumix" in str(meta.get("scalerAddress", ""))


def _target(doc: Document) -> tuple[str, str, str] | None:
    """(namespace, kind, name) of the workload a ScaledObject or HPA scales."""
    ref = _get(doc.obj, "spec", "scaleTargetRef")
    if not isinstance(ref, Mapping) or not ref.get("name"):
        return None
    return doc.namespace, str(ref.get("kind") or "Deployment"), str(ref["name"])


def _keda_owned(hpa: Document) -> bool:
    owners = _get(hpa.obj, "metadata", "ownerReferences") or []
    return hpa.name.startswith("keda-hpa-") or any(
        isinstance(o, Mapping) and o.get("kind") == "ScaledObject" for o in owners
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reach_in_one_period(policies: Sequence[Any], select: str, start: int) -> float:
    """Replicas the HPA can reach from `start` within one policy period (selectPolicy Max or Min)."""
    reach = []
    for pol in policies:
        if not isinstance(pol, Mapping):
            continue
        value = _int(pol.get("value")) or 0
        if pol.get("type") == "Pods":
            reach.append(start + value)
        elif pol.get("type") == "Percent":
            reach.append(math.ceil(start * (1 + value / 100)))
    if not reach:
        return math.inf
    return min(reach) if select == "Min" else max(reach)


# ------------------------------------------------------------------------------------------------ checks


class _Linter:
    def __init__(self, docs: Sequence[Document], profiles: set[tuple[str | None, str]] | None,
                 inventory: Inventory | None, kubernetes: Version | None, keda: Version | None) -> None:
        self.docs = docs
        self.profiles = profiles
        self.inventory = inventory
        self.kubernetes = kubernetes
        self.keda = keda
        self.findings: list[Finding] = []

    def add(self, severity: str, doc: Document, message: str) -> None:
        self.findings.append(Finding(severity, doc.source, doc.ref, message))

    def run(self) -> list[Finding]:
        scaled = [d for d in self.docs if d.kind == "ScaledObject"]
        hpas = [d for d in self.docs if d.kind == "HorizontalPodAutoscaler"]
        deployments = {(d.namespace, d.name): d for d in self.docs if d.kind == "Deployment"}
        driven: dict[tuple[str, str], tuple[Document, str | None]] = {}  # deployment → (SO, model)
        for so in scaled:
            model = self.scaled_object(so)
            target = _target(so)
            if model is not False and target is not None and target[1] == "Deployment":
                driven[(target[0], target[2])] = (so, model or None)
        self.same_target(scaled, hpas)
        for key, dep in deployments.items():
            if key in driven:
                so, model = driven[key]
                self.deployment(dep, so, model)
            elif self._model_label(dep) is not None:
                self.add(WARNING, dep, "labelled as a gpumix model but no ScaledObject scales it, so the plan "
                         "for this variant is never applied; run `gpumix render` and apply its output")
        return self.findings

    # --- ScaledObject ---------------------------------------------------------------------------

    def scaled_object(self, so: Document) -> str | bool:
        """Checks one ScaledObject; returns the model it names ('' if none), or False if gpumix does not
        drive it."""
        spec = so.obj.get("spec")
        if not isinstance(spec, Mapping):
            self.add(ERROR, so, "spec: missing")
            return False
        triggers = spec.get("triggers") or []
        ours = [t for t in triggers if gpumix_trigger(t)] if isinstance(triggers, list) else []
        if not ours:
            return False
        if len(triggers) > len(ours):
            self.add(WARNING, so, f"spec.triggers: {len(triggers) - len(ours)} other trigger(s) next to gpumix's; "
                     "the HPA follows the largest proposal, so they override the plan upward and cost "
                     "replicas gpumix did not count. Remove them or move the signal into gpumix")
        if len(ours) > 1:
            self.add(ERROR, so, "spec.triggers: more than one gpumix trigger; the HPA sums nothing and takes "
                     "the largest, so keep exactly one")
        target = _target(so)
        parsed, problems = read_scaled_object(so.obj, so.source)
        for problem in problems:
            self.add(ERROR, so, problem)
        model = self.trigger(so, ours[0], target)
        self.counts(so, spec)
        if parsed is not None:
            self.fallback(so, parsed)
            self.versions(so, parsed)
        self.behaviour(so, spec, parsed)
        return model

    def trigger(self, so: Document, trigger: Mapping[str, Any], target: tuple[str, str, str] | None) -> str:
        meta = trigger.get("metadata") or {}
        for key in REQUIRED_METADATA:
            if not meta.get(key):
                hint = {
                    "scalerAddress": "gpumix's gRPC address, e.g. gpumix.gpumix-system.svc.cluster.local:9090",
                    "model": "the served model name, as in vLLM's model_name label",
                    "variant": "the name of the Deployment this ScaledObject scales",
                }[key]
                self.add(ERROR, so, f"spec.triggers[].metadata.{key}: missing; gpumix rejects the trigger "
                         f"(INVALID_ARGUMENT). Set it to {hint}")
        for key in meta:
            if key not in KNOWN_METADATA:
                self.add(WARNING, so, f"spec.triggers[].metadata.{key}: gpumix does not use this key "
                         f"(known: {', '.join(sorted(KNOWN_METADATA))}); check its spelling")
        variant = meta.get("variant")
        if variant and target is not None and variant != target[2]:
            self.add(ERROR, so, f"spec.triggers[].metadata.variant is {variant!r} but the ScaledObject scales "
                     f"Deployment {target[2]!r}; gpumix would apply another variant's count here. Set variant "
                     f"to {target[2]!r}")
        ns = meta.get("namespace")
        if ns and ns != so.namespace:
            self.add(ERROR, so, f"spec.triggers[].metadata.namespace is {ns!r} but the ScaledObject lives in "
                     f"{so.namespace!r}; remove the key or make them equal")
        tgt = meta.get("target")
        if tgt is not None:
            try:
                ok = float(tgt) > 0 and math.isfinite(float(tgt))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                self.add(ERROR, so, f"spec.triggers[].metadata.target: {tgt!r} is not a positive number")
        metric_type = trigger.get("metricType", "AverageValue")
        if metric_type != "AverageValue":
            self.add(ERROR, so, f"spec.triggers[].metricType is {metric_type}; gpumix's value means a replica "
                     "count only with AverageValue (ceil(value/target)). Remove metricType or set AverageValue")
        return str(meta.get("model") or "")

    def counts(self, so: Document, spec: Mapping[str, Any]) -> None:
        lo = spec.get("minReplicaCount", 0)
        if _int(lo) is not None and lo > 0:
            self.add(ERROR, so, f"spec.minReplicaCount is {lo}; gpumix decides which variants run, and a floor "
                     "here keeps GPUs the plan does not count (and blocks scale to zero). Set minReplicaCount: 0 "
                     "and put the floor in the inventory's min_replicas (or the model.aibrix.ai/min_replicas "
                     "label)")
        hi = _int(spec.get("maxReplicaCount", KEDA_DEFAULT_MAX))
        if self.inventory is not None:
            target = _target(so)
            vi = self.inventory.variant(target[0], target[2]) if target else None
            if vi is not None and hi is not None and hi != vi.max_replicas:
                self.add(WARNING, so, f"spec.maxReplicaCount is {hi} but the inventory plans with max_replicas "
                         f"{vi.max_replicas}; make them equal so the plan is what the HPA can do")
        if "idleReplicaCount" in spec and spec.get("idleReplicaCount") != 0:
            self.add(ERROR, so, "spec.idleReplicaCount: only 0 is meaningful with gpumix; remove it")
        if _get(spec, "advanced", "scalingModifiers", "formula"):
            self.add(WARNING, so, "spec.advanced.scalingModifiers.formula rewrites gpumix's value, so the HPA no "
                     "longer lands on the planned count; remove it")

    def fallback(self, so: Document, parsed: ScaledObject) -> None:
        """What the fallback does while gpumix is unreachable or answers UNAVAILABLE (see deploy/README.md,
        'When gpumix is down'): no fallback holds every variant as it is."""
        fb = parsed.fallback
        if fb is None:
            return
        if fb.replicas == 0:
            self.add(ERROR, so, "spec.fallback.replicas is 0: while gpumix is unreachable KEDA takes the "
                     "scale-to-zero path and removes serving replicas after cooldownPeriod (RequestScale only holds "
                     "them when fallback.replicas != 0). Remove spec.fallback: without it KEDA leaves every "
                     "variant as it is during an outage")
            return
        if fb.behavior in ("static", "currentReplicasIfLower"):
            self.add(ERROR, so, f"spec.fallback.behavior is {fb.behavior}: when gpumix's data goes stale the HPA "
                     f"is told {fb.replicas} replicas, which shrinks a variant serving more. Remove spec.fallback "
                     "(or use currentReplicasIfHigher)")
        if self.keda is None or self.keda >= (2, 19):
            self.add(WARNING, so, f"spec.fallback: from KEDA 2.19 an active fallback counts as activity "
                     f"(isActiveOrFallback), so while gpumix answers UNAVAILABLE this variant is started from 0 "
                     f"and raised to {max(fb.replicas, 1)} even when idle, on every variant with a fallback. "
                     "Remove spec.fallback unless that cost is intended")

    def versions(self, so: Document, parsed: ScaledObject) -> None:
        where = BEHAVIOR_PATH
        b = parsed.behavior
        directions = [n for n, r in (("scaleUp", b.scale_up), ("scaleDown", b.scale_down)) if r.tolerance is not None]
        if not directions:
            return
        if self.keda is not None and self.keda < KEDA_TOLERANCE_FIELD:
            self.add(ERROR, so, f"{where}.{directions[0]}.tolerance: KEDA {self.keda[0]}.{self.keda[1]}'s "
                     "ScaledObject CRD has no tolerance field (added in 2.18): strict apply rejects the object. "
                     "Remove it (gpumix then compensates for the HPA's 10 %) or upgrade KEDA")
        if self.kubernetes is not None and self.kubernetes < TOLERANCE_GATE_ON_BY_DEFAULT:
            self.add(WARNING, so, f"{where}.{directions[0]}.tolerance: on Kubernetes {self.kubernetes[0]}."
                     f"{self.kubernetes[1]} the HPAConfigurableTolerance gate is off by default and the API server "
                     "drops the field; the HPA keeps the cluster's 10 % (gpumix reads the HPA and compensates). "
                     "Remove it, or enable the gate")

    def behaviour(self, so: Document, spec: Mapping[str, Any], parsed: ScaledObject | None = None) -> None:
        behavior = _get(spec, "advanced", "horizontalPodAutoscalerConfig", "behavior") or {}
        up = behavior.get("scaleUp") or {}
        down = behavior.get("scaleDown") or {}
        where = "spec.advanced.horizontalPodAutoscalerConfig.behavior"
        for name, rules in (("scaleUp", up), ("scaleDown", down)):
            if rules.get("selectPolicy") == "Disabled":
                self.add(ERROR, so, f"{where}.{name}.selectPolicy is Disabled; the HPA never applies gpumix's "
                         f"{'increases' if name == 'scaleUp' else 'decreases'}. Use Max")
        if parsed is not None:
            for name, scaling in (("scaleUp", parsed.behavior.scale_up), ("scaleDown", parsed.behavior.scale_down)):
                if scaling.tolerance is not None and scaling.tolerance > DEFAULT_TOLERANCE:
                    self.add(WARNING, so, f"{where}.{name}.tolerance {scaling.tolerance:g} is wider than the default "
                             "10 %; gpumix's small moves will be ignored. Use 0")
        up_window = _int(up.get("stabilizationWindowSeconds")) or 0
        if up_window > 0:
            self.add(WARNING, so, f"{where}.scaleUp.stabilizationWindowSeconds is {up_window}: every planned "
                     "scale-up waits that long on top of the cold start, and the HPA takes the lowest count in "
                     "the window. gpumix already smooths; use 0")
        max_replicas = _int(spec.get("maxReplicaCount", KEDA_DEFAULT_MAX)) or KEDA_DEFAULT_MAX
        up_policies = up.get("policies") if isinstance(up.get("policies"), list) else HPA_DEFAULT_UP_POLICIES
        if up.get("selectPolicy") != "Disabled":
            reach = _reach_in_one_period(up_policies, str(up.get("selectPolicy", "Max")), 1)
            if reach < max_replicas:
                self.add(WARNING, so, f"{where}.scaleUp.policies: from 1 replica the HPA reaches only "
                         f"{int(reach)} per period, but gpumix may ask for up to {max_replicas} at once; the "
                         "model stays short meanwhile. Add a Pods policy with value maxReplicaCount")
        down_window = _int(down.get("stabilizationWindowSeconds"))
        effective = HPA_DEFAULT_DOWN_WINDOW_S if down_window is None else down_window
        if self.inventory is not None:
            target = _target(so)
            vi = self.inventory.variant(target[0], target[2]) if target else None
            if vi is not None and round(vi.scale_down_window_s) != effective:
                shown = f"{effective} s" + (" (the default)" if down_window is None else "")
                self.add(ERROR, so, f"{where}.scaleDown.stabilizationWindowSeconds is {shown} but gpumix plans "
                         f"with {vi.scale_down_window_s:g} s (inventory scale_down_window_s): it would count "
                         "held replicas wrongly. Make them equal")
        down_policies = down.get("policies")
        if isinstance(down_policies, list) and down.get("selectPolicy") != "Disabled":
            slow = [p for p in down_policies if isinstance(p, Mapping) and (
                (p.get("type") == "Percent" and (_int(p.get("value")) or 0) < 100)
                or (p.get("type") == "Pods" and (_int(p.get("value")) or 0) < max_replicas))]
            if len(slow) == len(down_policies) or (down.get("selectPolicy") == "Min" and slow):
                self.add(WARNING, so, f"{where}.scaleDown.policies limit how fast replicas go; gpumix only lowers "
                         "a count once the smaller fleet fits, so the limit only keeps paid GPUs idle. Use "
                         "{type: Percent, value: 100, periodSeconds: 15}")

    # --- one target, one autoscaler -------------------------------------------------------------

    def same_target(self, scaled: Sequence[Document], hpas: Sequence[Document]) -> None:
        by_target: dict[tuple[str, str, str], list[Document]] = defaultdict(list)
        for doc in [*scaled, *[h for h in hpas if not _keda_owned(h)]]:
            target = _target(doc)
            if target is not None:
                by_target[target].append(doc)
        for (ns, kind, name), docs in by_target.items():
            if len(docs) > 1:
                names = ", ".join(f"{d.ref} ({d.source})" for d in docs)
                for doc in docs:
                    self.add(ERROR, doc, f"{kind} {ns}/{name} has {len(docs)} autoscalers: {names}. They race and "
                             "the replica count flaps; keep only the gpumix ScaledObject")

    # --- Deployment -----------------------------------------------------------------------------

    @staticmethod
    def _model_label(dep: Document) -> str | None:
        labels = _get(dep.obj, "metadata", "labels") or {}
        return next((str(labels[k]) for k in MODEL_LABELS if k in labels), None)

    def deployment(self, dep: Document, so: Document, model: str | None) -> None:
        pod_labels = _get(dep.obj, "spec", "template", "metadata", "labels") or {}
        where = "spec.template.metadata.labels"
        pod_model = next((str(pod_labels[k]) for k in MODEL_LABELS if k in pod_labels), None)
        if pod_model is None:
            self.add(ERROR, dep, f"{where}: no {LABEL_MODEL} label; the PodMonitor copies it onto vLLM's series, "
                     f"and without it gpumix cannot attribute this variant's load. Add {LABEL_MODEL}: "
                     f"{model or '<model>'}")
        elif model and pod_model != model:
            self.add(ERROR, dep, f"{where}.{LABEL_MODEL} is {pod_model!r} but {so.ref} says model {model!r}; "
                     "make them equal")
        variant = pod_labels.get(LABEL_VARIANT)
        if variant is None:
            self.add(ERROR, dep, f"{where}: no {LABEL_VARIANT} label; add {LABEL_VARIANT}: {dep.name} so "
                     "Prometheus series (and DCGM utilisation) carry the variant")
        elif variant != dep.name:
            self.add(ERROR, dep, f"{where}.{LABEL_VARIANT} is {variant!r}; it must be the Deployment's name "
                     f"{dep.name!r}")
        if self._model_label(dep) is None:
            self.add(WARNING, dep, f"metadata.labels: no {LABEL_MODEL} label; gpumix finds a model's variants in "
                     f"the cluster by it. Add {LABEL_MODEL}: {model or '<model>'}")
        if (self.profiles is not None and model and (model, dep.name) not in self.profiles
                and (None, dep.name) not in self.profiles):
            self.add(ERROR, dep, f"variant without profile: no profile for model {model!r} variant {dep.name!r}; "
                     "gpumix will not plan replicas for it. Run `gpumix profile` (or import an AIBrix profile)")
        if "replicas" in (dep.obj.get("spec") or {}):
            self.add(WARNING, dep, "spec.replicas is set; every `kubectl apply` resets the count the autoscaler "
                     "chose. Remove it from the manifest")
        pod = _get(dep.obj, "spec", "template", "spec") or {}
        grace = _int(pod.get("terminationGracePeriodSeconds"))
        containers = pod.get("containers") or []
        has_prestop = any(_get(c, "lifecycle", "preStop") for c in containers if isinstance(c, Mapping))
        if not has_prestop or grace is None or grace <= DEFAULT_GRACE_S:
            self.add(WARNING, dep, "scale-down kills in-flight requests: add a preStop hook that stops new "
                     "requests and waits for running ones, and terminationGracePeriodSeconds above the longest "
                     f"generation (now {grace if grace is not None else DEFAULT_GRACE_S} s"
                     f"{'' if has_prestop else ', no preStop'})")


def lint(docs: Sequence[Document], profiles: set[tuple[str | None, str]] | None = None,
         inventory: Inventory | None = None, kubernetes_version: Version | None = None,
         keda_version: Version | None = None) -> list[Finding]:
    """Findings for these objects; the versions (when known) enable the checks that depend on them. Callers
    refuse unsupported versions first (scaler.versions.check_supported)."""
    return _Linter(docs, profiles, inventory, kubernetes_version, keda_version).run()


def version_notes(kubernetes: Version | None, keda: Version | None) -> list[str]:
    """Versions newer than the ones gpumix was checked against (they may work; the docs say what was)."""
    notes = []
    if kubernetes is not None and kubernetes > MAX_KUBERNETES_TESTED:
        notes.append(f"Kubernetes {kubernetes[0]}.{kubernetes[1]} is newer than the newest checked "
                     f"({MAX_KUBERNETES_TESTED[0]}.{MAX_KUBERNETES_TESTED[1]})")
    if keda is not None and keda > MAX_KEDA_TESTED:
        notes.append(f"KEDA {keda[0]}.{keda[1]} is newer than the newest checked ({MAX_KEDA_TESTED[0]}."
                     f"{MAX_KEDA_TESTED[1]})")
    return notes


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)
