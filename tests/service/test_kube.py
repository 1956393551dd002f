"""scaler/kube.py against recorded API objects served the way the API server serves them (list + watch)."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scaler.config import Config
from scaler.inventory import Inventory
from scaler.kube import KubeInventory
from tests.service.kube_api import FakeApiServer

OBJECTS = json.loads((Path(__file__).parent / "kube_objects.json").read_text())


@pytest.fixture()
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(copy.deepcopy(OBJECTS))
    server.url = server.start()  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _until(kube: KubeInventory, check: Callable[[Inventory], bool], what: str) -> Inventory:
    for _ in range(100):  # bounded: 10 s
        inventory = kube.current()
        if check(inventory):
            return inventory
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {kube.current()}")


async def test_inventory_from_list_and_watch(api: FakeApiServer) -> None:
    before = set(threading.enumerate())
    kube = KubeInventory(Config(kubernetes=True, kube_api=api.url), resync_s=2)  # type: ignore[attr-defined]
    await kube.start()
    try:
        # The watch runs on the event loop: the only threads started meanwhile are the stand-in API server's.
        ours = [t.name for t in set(threading.enumerate()) - before if "process_request" not in t.name]
        assert ours == []
        inventory = kube.current()
        model = inventory.model("deepseek-coder-7b")
        assert model is not None and model.namespace == "llm"
        a100 = inventory.variant("llm", "deepseek-coder-7b-a100")
        mig = inventory.variant("llm", "deepseek-coder-7b-mig3g")
        assert a100 is not None and mig is not None
        assert (a100.min_replicas, a100.max_replicas, a100.scale_down_window_s) == (1, 6, 120.0)
        assert (a100.current_replicas, a100.ready_replicas, a100.scaled_object) == (2, 2, "deepseek-coder-7b-a100")
        assert (a100.accelerator, a100.gpus_per_replica) == ("A100-SXM4-40GB", 1)
        assert mig.accelerator == "A100-SXM4-40GB/3g.20gb" and mig.max_replicas == 100
        assert dict(inventory.pools) == {"A100-SXM4-40GB": 8.0, "A100-SXM4-40GB/3g.20gb": 2.0,
                                         "A100-SXM4-40GB/1g.5gb": 1.0}

        scaled = copy.deepcopy(OBJECTS["deployments"][0])
        scaled["status"]["replicas"] = 4
        api.apply("deployments", "MODIFIED", scaled)
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-a100").current_replicas == 4,
                     "MODIFIED deployment")
        so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
              "metadata": {"name": "mig", "namespace": "llm"},
              "spec": {"scaleTargetRef": {"name": "deepseek-coder-7b-mig3g"}, "maxReplicaCount": 3}}
        api.apply("scaledobjects", "ADDED", so)
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-mig3g").max_replicas == 3,
                     "ADDED scaledobject")

        # A dropped watch reconnects from its version; a compacted history (410 Gone) forces a re-list.
        lists_before = sum(w.lists for w in kube.watches)
        api.drop_watches()
        api.apply("deployments", "DELETED", OBJECTS["deployments"][1])
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-mig3g") is None, "DELETED after drop")
        api.compact()
        scaled["status"]["replicas"] = 5
        api.apply("deployments", "MODIFIED", scaled)
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-a100").current_replicas == 5,
                     "change after 410 Gone")
        assert sum(w.lists for w in kube.watches) > lists_before
        assert any("watch=true" in r and "labelSelector=model.aibrix.ai" in r for r in api.requests)
    finally:
        await kube.stop()


async def test_watch_follows_resource_version_without_relisting(api: FakeApiServer) -> None:
    """Server-side timeouts and dropped connections continue from the last version seen (bookmarks and
    events); only 410 Gone lists again."""
    kube = KubeInventory(Config(kubernetes=True, kube_api=api.url), resync_s=1)  # type: ignore[attr-defined]
    await kube.start()
    try:
        await asyncio.sleep(2.5)  # at least two server-side watch timeouts
        assert all(w.lists == 1 for w in kube.watches), [(w.name, w.lists) for w in kube.watches]
        assert all(w.watches >= 2 for w in kube.watches)
        scaled = copy.deepcopy(OBJECTS["deployments"][0])
        scaled["status"]["replicas"] = 7
        api.apply("deployments", "MODIFIED", scaled)
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-a100").current_replicas == 7,
                     "event after re-watch")
        versions = [r for r in api.requests if "watch=true" in r and "resourceVersion=" in r]
        assert versions, api.requests
        assert all(w.lists == 1 for w in kube.watches)
    finally:
        await kube.stop()


async def test_deployment_with_both_labels_is_one_variant(api: FakeApiServer) -> None:
    both = copy.deepcopy(OBJECTS["deployments"][0])
    both["metadata"]["labels"] = {**both["metadata"]["labels"], "model.aibrix.ai/name": "deepseek-coder-7b",
                                  "gpumix.io/model": "deepseek-coder-7b"}
    api.apply("deployments", "MODIFIED", both)
    kube = KubeInventory(Config(kubernetes=True, kube_api=api.url))  # type: ignore[attr-defined]
    await kube.start()
    try:
        model = kube.current().model("deepseek-coder-7b")
        assert model is not None
        names = [v.name for v in model.variants]
        assert names.count("deepseek-coder-7b-a100") == 1, names
    finally:
        await kube.stop()


def _keda_hpa(so: dict[str, Any], tolerance: str | None) -> dict[str, Any]:
    """The HPA KEDA creates from a ScaledObject (controllers/keda/hpa.go): named keda-hpa-<name>, the
    ScaledObject's behavior copied in."""
    behavior = copy.deepcopy(so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"])
    if tolerance is not None:
        for direction in ("scaleUp", "scaleDown"):
            behavior.setdefault(direction, {})["tolerance"] = tolerance
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"keda-hpa-{so['metadata']['name']}", "namespace": so["metadata"]["namespace"]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": so["spec"]["scaleTargetRef"]["name"]},
                     "minReplicas": 1, "maxReplicas": 6, "behavior": behavior}}


@pytest.mark.parametrize(
    ("gate", "hpa", "expected"),
    [
        # Kubernetes 1.34 (gate off by default): the API server dropped the HPA's tolerance, whatever the
        # ScaledObject says: the HPA applies 0.1, so gpumix must aim with 0.1.
        (False, True, (0.1, 0.1)),
        # 1.35+ (gate on): the HPA keeps 0 and gpumix aims with 0.
        (True, True, (0.0, 0.0)),
        # No HPA yet (KEDA has not reconciled): the controller's default, never the ScaledObject's value.
        (True, False, (0.1, 0.1)),
    ],
)
async def test_tolerance_comes_from_the_hpa_in_force(gate: bool, hpa: bool, expected: tuple[float, float]) -> None:
    objects = copy.deepcopy(OBJECTS)
    so = objects["scaledobjects"][0]
    for direction in ("scaleUp", "scaleDown"):
        so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"].setdefault(direction, {})["tolerance"] = "0"
    if hpa:
        objects["horizontalpodautoscalers"] = [_keda_hpa(so, "0")]
    server = FakeApiServer(objects, tolerance_gate=gate)
    url = server.start()
    kube = KubeInventory(Config(kubernetes=True, kube_api=url))
    await kube.start()
    try:
        a100 = kube.current().variant("llm", "deepseek-coder-7b-a100")
        assert a100 is not None
        assert (a100.tolerance_up, a100.tolerance_down) == expected
    finally:
        await kube.stop()
        server.stop()
