"""What exists: models, their variants (one Deployment per accelerator type) and accelerator pools.

Kubernetes fills this in (scaler/kube.py); without a cluster a static file gives the same facts:

```yaml
pools:                        # GPUs the planned models may use, per accelerator pool (optional)
  V100: 8
  L20: 4
models:
- name: deepseek-coder-7b
  namespace: llm
  variants:
  - name: deepseek-coder-7b-v100     # the Deployment (and the trigger's `variant`)
    accelerator: V100                # pool name; defaults to the profile's accelerator
    gpus_per_replica: 1
    min_replicas: 0                  # AIBrix's model.aibrix.ai/min_replicas
    max_replicas: 8                  # the ScaledObject's maxReplicaCount
    scale_down_window_s: 300         # the HPA's scaleDown stabilizationWindowSeconds
    cold_start_s: 180                # pod created → serving (optional; default: the `cold_start` option)
    tolerance: 0.1                   # the HPA's tolerance (or tolerance_up / tolerance_down)
    current_replicas: 1              # optional: when known without Prometheus
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE
from optimizer.defaults import KEDA_DEFAULT_MAX_REPLICAS as DEFAULT_MAX_REPLICAS
from optimizer.errors import InputError

__all__ = ["DEFAULT_MAX_REPLICAS", "DEFAULT_SCALE_DOWN_WINDOW_S", "DEFAULT_TOLERANCE", "Inventory", "InventoryError",
           "ModelInfo", "VariantInfo", "load_inventory", "parse_inventory"]


class InventoryError(InputError):
    """An inventory file that cannot be used."""


@dataclass(frozen=True)
class VariantInfo:
    name: str
    model: str
    namespace: str
    accelerator: str | None = None
    gpus_per_replica: int = 1
    min_replicas: int = 0
    max_replicas: int = DEFAULT_MAX_REPLICAS
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    cold_start_s: float | None = None  # None: the service's `cold_start` option
    # The HPA's per-direction tolerance in force (behavior.scaleUp/scaleDown.tolerance where the cluster keeps
    # it: Kubernetes >= 1.35 by default; scaler/kube.py reads it from the HPA object); the value reported to
    # KEDA is chosen knowing it, so the HPA lands exactly on the recommendation.
    tolerance_up: float = DEFAULT_TOLERANCE
    tolerance_down: float = DEFAULT_TOLERANCE
    current_replicas: int | None = None
    ready_replicas: int | None = None
    scaled_object: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    namespace: str
    variants: tuple[VariantInfo, ...]


@dataclass(frozen=True)
class Inventory:
    models: tuple[ModelInfo, ...] = ()
    pools: Mapping[str, float] = field(default_factory=dict)

    def model(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)

    def variant(self, namespace: str, name: str) -> VariantInfo | None:
        return next(
            (v for m in self.models for v in m.variants if v.name == name and v.namespace == namespace), None
        )


def parse_inventory(data: Any, source: str = "inventory") -> Inventory:
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise InventoryError(source, ["document: must be a mapping with 'models'"])
    pools: dict[str, float] = {}
    raw_pools = data.get("pools", {}) or {}
    if not isinstance(raw_pools, Mapping):
        problems.append("pools: must map pool name to GPU count")
    else:
        for name, cap in raw_pools.items():
            if isinstance(cap, bool) or not isinstance(cap, int | float) or cap < 0:
                problems.append(f"pools.{name}: must be a non-negative number, got {cap!r}")
            else:
                pools[str(name)] = float(cap)
    models: list[ModelInfo] = []
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        problems.append("models: must be a non-empty list")
        raw_models = []
    for i, m in enumerate(raw_models):
        where = f"models[{i}]"
        if not isinstance(m, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        name = m.get("name")
        namespace = m.get("namespace", "default")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: missing")
            name = f"<{where}>"
        if not isinstance(namespace, str) or not namespace:
            problems.append(f"{where}.namespace: must be a string")
            namespace = "default"
        variants = []
        raw_variants = m.get("variants")
        if not isinstance(raw_variants, list) or not raw_variants:
            problems.append(f"{where}.variants: must be a non-empty list")
            raw_variants = []
        for j, v in enumerate(raw_variants):
            vwhere = f"{where}.variants[{j}]"
            if not isinstance(v, Mapping):
                problems.append(f"{vwhere}: must be a mapping")
                continue
            variants.append(_parse_variant(v, vwhere, name, namespace, problems))
        models.append(ModelInfo(name, namespace, tuple(variants)))
    seen: set[tuple[str, str]] = set()
    for mi in models:
        for vi in mi.variants:
            key = (vi.namespace, vi.name)
            if key in seen:
                problems.append(f"variant {vi.namespace}/{vi.name}: listed twice")
            seen.add(key)
    if problems:
        raise InventoryError(source, problems)
    return Inventory(tuple(models), pools)


_INT_FIELDS = ("gpus_per_replica", "min_replicas", "max_replicas", "current_replicas", "ready_replicas")
_TOLERANCES = ("tolerance", "tolerance_up", "tolerance_down")
_KNOWN = {"name", "accelerator", "scale_down_window_s", "cold_start_s", "scaled_object", *_TOLERANCES, *_INT_FIELDS}


def _parse_variant(v: Mapping[str, Any], where: str, model: str, namespace: str, problems: list[str]) -> VariantInfo:
    for key in v:
        if key not in _KNOWN:
            problems.append(f"{where}.{key}: unknown field (known: {', '.join(sorted(_KNOWN))})")
    name = v.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}.name: missing")
        name = f"<{where}>"
    ints: dict[str, int | None] = {}
    for key in _INT_FIELDS:
        val = v.get(key)
        if val is None:
            ints[key] = None
        elif isinstance(val, bool) or not isinstance(val, int) or val < 0:
            problems.append(f"{where}.{key}: must be a non-negative integer, got {val!r}")
            ints[key] = None
        else:
            ints[key] = val
    window = v.get("scale_down_window_s", DEFAULT_SCALE_DOWN_WINDOW_S)
    if isinstance(window, bool) or not isinstance(window, int | float) or window < 0:
        problems.append(f"{where}.scale_down_window_s: must be a non-negative number, got {window!r}")
        window = DEFAULT_SCALE_DOWN_WINDOW_S
    cold = v.get("cold_start_s")
    if cold is not None and (isinstance(cold, bool) or not isinstance(cold, int | float) or not 0 <= cold < 1e6):
        problems.append(f"{where}.cold_start_s: must be a non-negative number of seconds, got {cold!r}")
        cold = None
    tolerances: dict[str, float] = {}
    for key in _TOLERANCES:
        val = v.get(key)
        if val is None:
            continue
        if isinstance(val, bool) or not isinstance(val, int | float) or not 0 <= val < 1:
            problems.append(f"{where}.{key}: must be a number in [0, 1), got {val!r}")
        else:
            tolerances[key] = float(val)
    both = tolerances.get("tolerance", DEFAULT_TOLERANCE)
    gpus = ints["gpus_per_replica"] if ints["gpus_per_replica"] is not None else 1
    if gpus < 1:
        problems.append(f"{where}.gpus_per_replica: must be >= 1")
    lo = ints["min_replicas"] or 0
    hi = ints["max_replicas"] if ints["max_replicas"] is not None else DEFAULT_MAX_REPLICAS
    if lo > hi:
        problems.append(f"{where}: min_replicas {lo} > max_replicas {hi}")
    accel = v.get("accelerator")
    if accel is not None and not isinstance(accel, str):
        problems.append(f"{where}.accelerator: must be a string")
        accel = None
    return VariantInfo(
        name=name,
        model=model,
        namespace=namespace,
        accelerator=accel,
        gpus_per_replica=gpus,
        min_replicas=lo,
        max_replicas=hi,
        scale_down_window_s=float(window),
        cold_start_s=None if cold is None else float(cold),
        tolerance_up=tolerances.get("tolerance_up", both),
        tolerance_down=tolerances.get("tolerance_down", both),
        current_replicas=ints["current_replicas"],
        ready_replicas=ints["ready_replicas"],
        scaled_object=v.get("scaled_object"),
    )


def load_inventory(path: str | Path) -> Inventory:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InventoryError(str(path), [f"cannot read YAML: {exc}"]) from exc
    return parse_inventory(data, str(path))
