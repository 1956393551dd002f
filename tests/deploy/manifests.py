"""Test helpers: build the kustomizations under deploy/ and validate objects offline.

`kustomize_build` implements the part of kustomize these manifests use (resources, components, namespace,
labels, images, configMapGenerator without hash suffix, strategic-merge patches), and refuses anything
else, so a manifest that grows a feature it does not know fails loudly instead of being half-checked.
It was checked to give the same objects as `kubectl kustomize` (kustomize v5.5) for every directory here.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KEDA_CRD = REPO / "data" / "keda" / "keda.sh_scaledobjects.yaml"
KUBERNETES_VERSION = "1.33"

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "Node", "CustomResourceDefinition"}
_KNOWN_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "components", "configMapGenerator",
               "generatorOptions", "patches", "images"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for the fields used here: maps merge, lists of named maps merge
    by name (new entries first, as kustomize orders them), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                    for i in [*base, *patch])):
        by_name = {i["name"]: i for i in patch}
        merged = [_merge(i, by_name[i["name"]]) if i["name"] in by_name else i for i in base]
        new = [copy.deepcopy(i) for i in patch if i["name"] not in {b["name"] for b in base}]
        return new + merged
    return copy.deepcopy(patch)


def _apply(directory: Path, spec: dict[str, Any], objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unknown = set(spec) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"{directory}: kustomization keys this test builder does not implement: {unknown}")
    for res in spec.get("resources", []):
        path = directory / res
        objs = objs + (kustomize_build(path) if path.is_dir() else load_docs(path))
    for comp in spec.get("components", []):
        comp_dir = directory / comp
        comp_spec = yaml.safe_load((comp_dir / "kustomization.yaml").read_text())
        assert comp_spec["kind"] == "Component", comp_dir
        objs = _apply(comp_dir, comp_spec, objs)
    for gen in spec.get("configMapGenerator", []):
        if not (spec.get("generatorOptions") or {}).get("disableNameSuffixHash"):
            raise ValueError(f"{directory}: configMapGenerator with name hashing is not implemented here")
        data: dict[str, str] = {}
        for item in gen.get("files", []):
            key, _, file = item.rpartition("=")
            data[key or Path(file).name] = (directory / file).read_text()
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only file patches are implemented, got {patch}")
        for p in load_docs(directory / patch["path"]):
            matches = [i for i, o in enumerate(objs)
                       if o["kind"] == p["kind"] and o["metadata"]["name"] == p["metadata"]["name"]]
            assert len(matches) == 1, f"patch {patch['path']} matches {len(matches)} objects"
            objs[matches[0]] = _merge(objs[matches[0]], p)
    for entry in spec.get("labels", []):
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), entry
        for o in objs:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    for image in spec.get("images", []):
        for o in objs:
            for c in (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers", []):
                name = c["image"].rsplit(":", 1)[0]
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in spec:
        ns = spec["namespace"]
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = ns
            for s in o.get("subjects", []) if o["kind"] in ("ClusterRoleBinding", "RoleBinding") else []:
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = ns
    return objs


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert spec["kind"] == "Kustomization", directory
    return _apply(directory, spec, [])


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml")
                  if yaml.safe_load(p.read_text())["kind"] == "Kustomization")


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that holds Kubernetes objects (not kustomizations, not gpumix's own
    config or inventory files, not patches, which are partial by design)."""
    patches = {(d / p["path"]).resolve() for k in DEPLOY.rglob("kustomization.yaml")
               for p in yaml.safe_load(k.read_text()).get("patches", []) for d in [k.parent]}
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name in ("kustomization.yaml", "config.yaml", "inventory.yaml") or path.resolve() in patches:
            continue
        out.append(path)
    return out


@cache
def _keda_schema(keda: tuple[int, int] = (2, 20)) -> dict[str, Any]:
    """The bundled CRD's schema, as an older KEDA release has it: before v2.18 the behavior rules have no
    `tolerance` (config/crd/bases/keda.sh_scaledobjects.yaml at v2.17.0 vs v2.18.0)."""
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    if keda < (2, 18):
        behavior = schema["properties"]["spec"]["properties"]["advanced"]["properties"][
            "horizontalPodAutoscalerConfig"]["properties"]["behavior"]["properties"]
        for direction in ("scaleUp", "scaleDown"):
            behavior[direction]["properties"].pop("tolerance", None)
    return schema


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare: what strict field validation (kubectl apply's default since
    1.27) rejects."""
    out: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            sub = schema["properties"].get(key)
            if sub is None:
                if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
                    out.append(f"{path}.{key}".lstrip("."))
                continue
            out += unknown_fields(value, sub, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def validate_scaled_object(obj: dict[str, Any], keda: tuple[int, int] = (2, 20)) -> None:
    """Raises jsonschema.ValidationError / AssertionError like the API server would reject the object
    (strict field validation included) with this KEDA release's CRD."""
    assert obj.get("apiVersion") == "keda.sh/v1alpha1" and obj.get("kind") == "ScaledObject", obj.get("kind")
    schema = _keda_schema(keda)
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator, format_checker=jsonschema.FormatChecker())
    unknown = [f for f in unknown_fields(obj, schema) if not f.startswith(("metadata.", "status."))]
    assert not unknown, f"unknown fields (strict apply rejects them): {unknown}"
    spec = obj["spec"]
    # The CRD's x-kubernetes-validations rule (CEL), which jsonschema does not evaluate.
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), "minReplicaCount > maxReplicaCount"
    behavior = (((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {})
    for direction in behavior.values():
        # Limits the HPA's own validation enforces.
        assert 0 <= direction.get("stabilizationWindowSeconds", 0) <= 3600
        for policy in direction.get("policies", []):
            assert policy["type"] in ("Pods", "Percent") and policy["value"] > 0, policy
            assert 0 < policy["periodSeconds"] <= 1800, policy
        assert direction.get("selectPolicy", "Max") in ("Max", "Min", "Disabled")


def _monitor(obj: dict[str, Any]) -> None:
    # No Prometheus Operator CRD is bundled; check the fields the operator requires and these files use.
    spec = obj["spec"]
    assert isinstance(spec.get("selector"), dict), "selector required"
    key = "podMetricsEndpoints" if obj["kind"] == "PodMonitor" else "endpoints"
    assert spec[key], f"{key} required"
    for ep in spec[key]:
        assert set(ep) <= {"port", "path", "interval", "relabelings", "honorLabels", "scheme"}, ep
        for r in ep.get("relabelings", []):
            assert r["sourceLabels"] and r["targetLabel"], r


def validate_object(obj: dict[str, Any]) -> str:
    """Validates one object against its schema; returns what it was validated against."""
    kind = obj.get("kind")
    if kind == "ScaledObject":
        validate_scaled_object(obj)
        return "KEDA CRD"
    if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        if kind in ("PodMonitor", "ServiceMonitor"):
            _monitor(obj)
        elif kind == "PrometheusRule":
            assert obj["spec"]["groups"], "groups required"
        else:
            raise AssertionError(f"unexpected {kind}")
        return "structure"
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    return "Kubernetes OpenAPI"
