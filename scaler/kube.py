"""Variants and accelerator capacity from the Kubernetes API: list + watch caches → Inventory.

Three watches, each a daemon thread with its own client connection (the kubernetes client is blocking):
- Deployments labelled with the model: `model.aibrix.ai/name` (AIBrix's label, accepted as is) or
  `gpumix.io/model`; `model.aibrix.ai/min_replicas` (label or annotation); `gpumix.io/accelerator` names
  the pool; GPUs per replica from the containers' `nvidia.com/gpu` / `nvidia.com/mig-*` limits.
- KEDA ScaledObjects: for the Deployment each targets, `maxReplicaCount` and the HPA behaviour's scale-down
  stabilization window (what the HPA will hold, which the decision uses).
- Nodes: allocatable `nvidia.com/gpu` and `nvidia.com/mig-<profile>` per accelerator (node label
  `gpumix.io/accelerator`, else GPU feature discovery's `nvidia.com/gpu.product`) → pool capacity.

Each watch lists (remembering the resourceVersion), then watches from there with a server-side timeout so
it re-lists periodically (resync); on a dropped connection or 410 Gone it re-lists after a backoff. The
cycle reads only the caches (`current()`), never the API.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from scaler import logs
from scaler.config import Config
from scaler.inventory import (
    DEFAULT_MAX_REPLICAS,
    DEFAULT_SCALE_DOWN_WINDOW_S,
    DEFAULT_TOLERANCE,
    Inventory,
    ModelInfo,
    VariantInfo,
)

log = logs.get("gpumix.kube")

MODEL_LABELS = ("model.aibrix.ai/name", "gpumix.io/model")
MIN_REPLICAS_KEY = "model.aibrix.ai/min_replicas"
ACCELERATOR_LABEL = "gpumix.io/accelerator"
PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"

Obj = dict[str, Any]


def _quantity(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


class Watcher:
    """One list+watch loop keeping a cache of objects keyed by (namespace, name)."""

    def __init__(self, name: str, lister: Callable[..., Any], stop: threading.Event,
                 resync_s: int = 300, **list_kwargs: Any) -> None:
        self.name = name
        self.lister = lister
        self.list_kwargs = list_kwargs
        self.stop = stop
        self.resync_s = resync_s
        self.objects: dict[tuple[str, str], Obj] = {}
        self.synced = threading.Event()
        self.lists = 0
        self.thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    @staticmethod
    def _key(obj: Obj) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return (meta.get("namespace") or "", meta.get("name") or "")

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                listed = self.lister(_preload_content=False, **self.list_kwargs)
                doc = json.loads(listed.data)
                self.objects = {self._key(o): o for o in doc.get("items") or []}
                version = (doc.get("metadata") or {}).get("resourceVersion")
                self.lists += 1
                self.synced.set()
                backoff = 0.5
                self._watch(version)
            except Exception as exc:  # dropped connection, 410 Gone, API down: re-list after a backoff
                log.warning("watch_restart", watch=self.name, error=str(exc)[:200], backoff_s=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _watch(self, version: str | None) -> None:
        """Follow events until the server ends the watch (its timeout: our resync) or the stop flag."""
        response = self.lister(watch=True, resource_version=version, timeout_seconds=self.resync_s,
                               allow_watch_bookmarks=True, _preload_content=False, **self.list_kwargs)
        try:
            for line in iter_resp_lines(response):
                if self.stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # e.g. 410 Gone: our version is too old, re-list
                    raise ApiException(status=int(obj.get("code", 500)), reason=str(obj.get("message", "")))
                if kind == "DELETED":
                    self.objects.pop(self._key(obj), None)
                elif kind in ("ADDED", "MODIFIED"):
                    self.objects[self._key(obj)] = obj
        finally:
            response.close()
            response.release_conn()


class KubeInventory:
    def __init__(self, config: Config, api_client: k8s.ApiClient | None = None, resync_s: int = 300) -> None:
        self.config = config
        self.api_client = api_client or self._client(config)
        self.stop_event = threading.Event()
        apps, core = k8s.AppsV1Api(self.api_client), k8s.CoreV1Api(self.api_client)
        custom = k8s.CustomObjectsApi(self.api_client)
        ns = config.kube_namespace
        self.deployments = [
            Watcher(f"deployments[{label}]",
                    (lambda **kw: apps.list_namespaced_deployment(ns, **kw)) if ns
                    else apps.list_deployment_for_all_namespaces,
                    self.stop_event, resync_s, label_selector=label)
            for label in MODEL_LABELS
        ]
        self.scaled_objects = Watcher(
            "scaledobjects",
            (lambda **kw: custom.list_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", **kw))
            if ns else (lambda **kw: custom.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects", **kw)),
            self.stop_event, resync_s,
        )
        self.nodes = Watcher("nodes", core.list_node, self.stop_event, resync_s)
        self.watchers = [*self.deployments, self.scaled_objects, self.nodes]

    @staticmethod
    def _client(config: Config) -> k8s.ApiClient:
        if config.kube_api:
            configuration = k8s.Configuration()
            configuration.host = config.kube_api
            return k8s.ApiClient(configuration)
        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()
        return k8s.ApiClient()

    async def start(self, timeout: float = 10.0) -> None:
        for w in self.watchers:
            w.thread.start()
        deadline = time.monotonic() + timeout
        while not all(w.synced.is_set() for w in self.watchers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        missing = [w.name for w in self.watchers if not w.synced.is_set()]
        if missing:
            log.warning("kube_not_synced", watches=missing)

    async def stop(self) -> None:
        self.stop_event.set()

    def current(self) -> Inventory:
        return build_inventory([o for w in self.deployments for o in w.objects.values()],
                               list(self.scaled_objects.objects.values()), list(self.nodes.objects.values()))


def _scaled_object_for(scaled_objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    out = {}
    for so in scaled_objects:
        spec = so.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind", "Deployment") != "Deployment":
            continue
        out[((so.get("metadata") or {}).get("namespace", ""), target.get("name", ""))] = so
    return out


def _gpus(deployment: Obj) -> tuple[int, str | None]:
    """GPUs (or MIG slices) per replica, and the MIG profile when it is a slice."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    total, mig = 0.0, None
    for c in containers:
        limits = (c.get("resources") or {}).get("limits") or {}
        for name, value in limits.items():
            if name == GPU:
                total += _quantity(value)
            elif name.startswith(MIG_PREFIX):
                total += _quantity(value)
                mig = name[len(MIG_PREFIX):]
    return max(1, int(total)), mig


def _tolerance(rules: Obj | None, where: str) -> float:
    """`behavior.scaleUp|scaleDown.tolerance`: a Kubernetes quantity ("0", "0.05", "50m"); absent → 0.1."""
    raw = (rules or {}).get("tolerance")
    if raw is None:
        return DEFAULT_TOLERANCE
    text = str(raw).strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        log.warning("bad_tolerance", scaled_object=where, value=raw)
        return DEFAULT_TOLERANCE
    return value if 0 <= value < 1 else DEFAULT_TOLERANCE


def build_inventory(deployments: list[Obj], scaled_objects: list[Obj], nodes: list[Obj]) -> Inventory:
    by_target = _scaled_object_for(scaled_objects)
    models: dict[tuple[str, str], list[VariantInfo]] = {}
    for d in deployments:
        meta = d.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        model = next((labels[k] for k in MODEL_LABELS if labels.get(k)), None)
        if model is None:
            continue
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        raw_min = labels.get(MIN_REPLICAS_KEY, annotations.get(MIN_REPLICAS_KEY, "0"))
        try:
            min_replicas = max(0, int(raw_min))
        except ValueError:
            log.warning("bad_min_replicas", deployment=f"{namespace}/{name}", value=raw_min)
            min_replicas = 0
        gpus, mig = _gpus(d)
        accelerator = labels.get(ACCELERATOR_LABEL)
        if accelerator and mig and "/" not in accelerator:
            accelerator = f"{accelerator}/{mig}"
        so = by_target.get((namespace, name))
        max_replicas, window, so_name = DEFAULT_MAX_REPLICAS, DEFAULT_SCALE_DOWN_WINDOW_S, None
        tolerance_up = tolerance_down = DEFAULT_TOLERANCE
        if so is not None:
            spec = so.get("spec") or {}
            so_name = (so.get("metadata") or {}).get("name")
            max_replicas = int(spec.get("maxReplicaCount", DEFAULT_MAX_REPLICAS))
            behavior = (((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {})
                        .get("behavior") or {})
            window = float((behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds",
                                                                  DEFAULT_SCALE_DOWN_WINDOW_S))
            tolerance_up = _tolerance(behavior.get("scaleUp"), f"{namespace}/{so_name}")
            tolerance_down = _tolerance(behavior.get("scaleDown"), f"{namespace}/{so_name}")
        status = d.get("status") or {}
        models.setdefault((namespace, model), []).append(VariantInfo(
            name=name, model=model, namespace=namespace, accelerator=accelerator, gpus_per_replica=gpus,
            min_replicas=min(min_replicas, max_replicas), max_replicas=max_replicas, scale_down_window_s=window,
            tolerance_up=tolerance_up, tolerance_down=tolerance_down,
            current_replicas=int(status.get("replicas", 0) or 0),
            ready_replicas=int(status.get("readyReplicas", 0) or 0), scaled_object=so_name,
        ))
    pools: dict[str, float] = {}
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        base = labels.get(ACCELERATOR_LABEL) or labels.get(PRODUCT_LABEL)
        if not base:
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for resource, value in allocatable.items():
            if resource == GPU:
                pools[base] = pools.get(base, 0.0) + _quantity(value)
            elif resource.startswith(MIG_PREFIX):
                pool = f"{base}/{resource[len(MIG_PREFIX):]}"
                pools[pool] = pools.get(pool, 0.0) + _quantity(value)
    return Inventory(
        tuple(ModelInfo(model, ns, tuple(sorted(vs, key=lambda v: v.name)))
              for (ns, model), vs in sorted(models.items())),
        pools,
    )
