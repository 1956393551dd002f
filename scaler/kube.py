"""Variants and accelerator capacity from the Kubernetes API: list + watch caches on the event loop → Inventory.

Watches (each one asyncio task, aiohttp on the service's loop: no threads, so nothing mutates a cache while
`current()` reads it):
- Deployments labelled with the model: `gpumix.io/model` or AIBrix's `model.aibrix.ai/name` (accepted as
  is; a Deployment carrying both, as while migrating, is one variant, named by `gpumix.io/model`);
  `model.aibrix.ai/min_replicas` (label or annotation); `gpumix.io/accelerator` names the pool; GPUs per
  replica from the containers' `nvidia.com/gpu` / `nvidia.com/mig-*` limits.
- KEDA ScaledObjects (read by scaler.scaledobject, the project's one reader): for the Deployment each
  targets, `maxReplicaCount` and the HPA behaviour's scale-down stabilization window.
- HorizontalPodAutoscalers (autoscaling/v2): the HPA KEDA created for each ScaledObject (`keda-hpa-<name>`
  or status.hpaName) carries the tolerance *in force*. The ScaledObject is not trusted for it: with the
  HPAConfigurableTolerance gate off (Kubernetes < 1.35 by default) the API server drops
  behavior.*.tolerance from the HPA (strategy.go dropDisabledFields) while the ScaledObject keeps it.
  No HPA seen yet, or no field: the controller's default 0.1.
- Nodes: allocatable `nvidia.com/gpu` and `nvidia.com/mig-<profile>` per accelerator (node label
  `gpumix.io/accelerator`, else GPU feature discovery's `nvidia.com/gpu.product`) → pool capacity.

Each watch lists once (remembering `metadata.resourceVersion`), then follows events from the last version it
saw (bookmarks included) across server-side timeouts and dropped connections, without re-listing; only
`410 Gone` (the version was compacted) makes it list again. The API server's address and credentials come
from the official client's configuration (in-cluster or kubeconfig), or `kube_api` for a plain URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_TOLERANCE, KEDA_DEFAULT_MAX_REPLICAS
from scaler import logs
from scaler.config import Config
from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.scaledobject import ScaledObject, parse_quantity, read_scaled_object

log = logs.get("gpumix.kube")

# gpumix's own label first: on a Deployment labelled both ways (migrating from AIBrix) it names the model.
MODEL_LABELS = ("gpumix.io/model", "model.aibrix.ai/name")
MIN_REPLICAS_KEY = "model.aibrix.ai/min_replicas"
ACCELERATOR_LABEL = "gpumix.io/accelerator"
PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"

Obj = dict[str, Any]
Key = tuple[str, str]


class Gone(Exception):
    """The watch's resourceVersion is older than the API server's history (HTTP 410): list again."""


def _quantity(value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Watch:
    """One list+watch of one resource path, keeping a cache of objects keyed by (namespace, name). Run
    `run()` as a task; `objects` is replaced or updated only on the event loop."""

    def __init__(self, name: str, path: str, params: Mapping[str, str] | None = None, timeout_s: int = 300) -> None:
        self.name = name
        self.path = path
        self.params = dict(params or {})
        self.timeout_s = timeout_s
        self.objects: dict[Key, Obj] = {}
        self.version: str | None = None
        self.synced = asyncio.Event()
        self.lists = 0
        self.watches = 0

    async def run(self, api: Api) -> None:
        backoff = 0.5
        while True:
            try:
                if self.version is None:
                    await self._list(api)
                await self._watch(api)
                backoff = 0.5
            except Gone:
                log.info("watch_gone", watch=self.name, resource_version=self.version)
                self.version = None  # re-list; no wait, the server is up
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as exc:
                log.warning("watch_restart", watch=self.name, error=str(exc)[:200], backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _list(self, api: Api) -> None:
        doc = await api.get_json(self.path, self.params)
        self.objects = {_key(o): o for o in doc.get("items") or []}
        self.version = (doc.get("metadata") or {}).get("resourceVersion")
        self.lists += 1
        self.synced.set()

    async def _watch(self, api: Api) -> None:
        """Follow events from `version` until the server ends the watch (its timeout); a normal end keeps
        the version, so the next watch continues where this one stopped."""
        params = {**self.params, "watch": "true", "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.timeout_s)}
        if self.version:
            params["resourceVersion"] = self.version
        self.watches += 1
        async with api.stream(self.path, params) as response:
            if response.status == 410:
                raise Gone()
            if response.status != 200:
                raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                  message=(await response.text())[:200])
            while True:
                line = await response.content.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if int(obj.get("code", 500)) == 410:
                        raise Gone()
                    raise ValueError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "DELETED":
                    self.objects.pop(_key(obj), None)
                elif kind in ("ADDED", "MODIFIED"):
                    self.objects[_key(obj)] = obj
                if version:
                    self.version = version  # BOOKMARK events carry only this


class Api:
    """The API server over aiohttp, authenticated like the official client (its Configuration object)."""

    def __init__(self, host: str, headers: Mapping[str, str] | None = None, ssl_context: ssl.SSLContext | None = None,
                 refresh: Any = None) -> None:
        self.host = host.rstrip("/")
        self.headers = dict(headers or {})
        self.ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True  # True: aiohttp's default
        self.refresh = refresh  # called before each request (rotating in-cluster tokens)
        self.session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: Config) -> Api:
        if config.kube_api:
            return cls(config.kube_api)
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()
        cfg = k8s.Configuration.get_default_copy()
        context = None
        if cfg.host.startswith("https"):
            context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if not cfg.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file)

        def headers() -> dict[str, str]:
            if cfg.refresh_api_key_hook is not None:
                cfg.refresh_api_key_hook(cfg)
            token = cfg.get_api_key_with_prefix("authorization")
            return {"Authorization": token} if token else {}

        return cls(cfg.host, ssl_context=context, refresh=headers)

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # No total timeout: watches are long-lived; the server's timeoutSeconds ends them.
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self.session

    def _headers(self) -> dict[str, str]:
        return {**self.headers, **(self.refresh() if self.refresh else {}), "Accept": "application/json"}

    async def get_json(self, path: str, params: Mapping[str, str]) -> Obj:
        async with self._session().get(self.host + path, params=dict(params), headers=self._headers(),
                                       ssl=self.ssl, timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status == 410:
                raise Gone()
            r.raise_for_status()
            doc: Obj = await r.json(content_type=None)
            return doc

    def stream(self, path: str, params: Mapping[str, str]) -> Any:
        return self._session().get(self.host + path, params=dict(params), headers=self._headers(),
                                   ssl=self.ssl)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def _path(group_version: str, resource: str, namespace: str | None) -> str:
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/namespaces/{namespace}/{resource}" if namespace else f"{base}/{resource}"


class KubeInventory:
    def __init__(self, config: Config, api: Api | None = None, resync_s: int = 300) -> None:
        self.config = config
        self.api = api or Api.from_config(config)
        ns = config.kube_namespace
        self.deployments = [Watch(f"deployments[{label}]", _path("apps/v1", "deployments", ns),
                                  {"labelSelector": label}, resync_s) for label in MODEL_LABELS]
        self.scaled_objects = Watch("scaledobjects", _path("keda.sh/v1alpha1", "scaledobjects", ns), None, resync_s)
        self.hpas = Watch("horizontalpodautoscalers", _path("autoscaling/v2", "horizontalpodautoscalers", ns), None,
                          resync_s)
        self.nodes = Watch("nodes", _path("v1", "nodes", None), None, resync_s)
        self.watches = [*self.deployments, self.scaled_objects, self.hpas, self.nodes]
        self.tasks: list[asyncio.Task[None]] = []
        self._reported: set[tuple[Key, str]] = set()  # ScaledObject problems logged once per object version

    async def start(self, timeout: float = 10.0) -> None:
        self.tasks = [asyncio.create_task(w.run(self.api), name=f"watch-{w.name}") for w in self.watches]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(w.synced.wait() for w in self.watches)), timeout)
        missing = [w.name for w in self.watches if not w.synced.is_set()]
        if missing:
            log.warning("kube_not_synced", watches=missing)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        await self.api.close()

    def current(self) -> Inventory:
        # One entry per Deployment, whichever label selector saw it (a Deployment with both labels is in both).
        deployments: dict[Key, Obj] = {}
        for w in self.deployments:
            deployments.update(w.objects)
        return build_inventory(list(deployments.values()), list(self.scaled_objects.objects.values()),
                               list(self.nodes.objects.values()), list(self.hpas.objects.values()),
                               report=self._report)

    def _report(self, so: Obj, problems: list[str]) -> None:
        meta = so.get("metadata") or {}
        mark = (_key(so), str(meta.get("resourceVersion", "")))
        if mark not in self._reported:
            self._reported.add(mark)
            log.warning("scaled_object_problems", scaled_object=f"{mark[0][0]}/{mark[0][1]}", problems=problems)


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


def hpa_tolerances(hpa: Obj | None) -> tuple[float, float]:
    """(up, down) the HPA controller applies to this HPA object: a direction's `tolerance` when the API
    server kept it, else the controller's default (horizontal.go tolerancesForHpa)."""
    behavior = ((hpa or {}).get("spec") or {}).get("behavior") or {}
    out = []
    for direction in ("scaleUp", "scaleDown"):
        raw = (behavior.get(direction) or {}).get("tolerance")
        try:
            value = DEFAULT_TOLERANCE if raw is None else parse_quantity(raw)
        except ValueError:
            value = DEFAULT_TOLERANCE
        out.append(value if 0 <= value < 1 else DEFAULT_TOLERANCE)
    return out[0], out[1]


def _hpa_for(so: ScaledObject, hpas: Mapping[Key, Obj]) -> Obj | None:
    found = hpas.get((so.namespace, so.hpa_name))
    if found is not None:
        return found
    return next((h for (ns, _), h in hpas.items() if ns == so.namespace
                 and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == so.target_name), None)


def build_inventory(deployments: list[Obj], scaled_objects: list[Obj], nodes: list[Obj],
                    hpas: list[Obj] | None = None, report: Any = None) -> Inventory:
    by_target: dict[Key, ScaledObject] = {}
    for raw in scaled_objects:
        so, problems = read_scaled_object(raw, "ScaledObject")
        if problems and report is not None:
            report(raw, problems)
        if so is None or so.target_kind != "Deployment":
            continue
        by_target[(so.namespace, so.target_name)] = so
    hpa_by_key = {_key(h): h for h in hpas or []}
    models: dict[Key, list[VariantInfo]] = {}
    seen: set[Key] = set()
    for d in deployments:
        meta = d.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        model = next((labels[k] for k in MODEL_LABELS if labels.get(k)), None)
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        if model is None or (namespace, name) in seen:
            continue
        seen.add((namespace, name))
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
        max_replicas, window, so_name = KEDA_DEFAULT_MAX_REPLICAS, DEFAULT_SCALE_DOWN_WINDOW_S, None
        tolerance_up = tolerance_down = DEFAULT_TOLERANCE
        if so is not None:
            so_name = so.name or None
            max_replicas = so.max_replicas
            window = so.behavior.scale_down.stabilization_window_s if so.behavior_set else DEFAULT_SCALE_DOWN_WINDOW_S
            tolerance_up, tolerance_down = hpa_tolerances(_hpa_for(so, hpa_by_key))
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
