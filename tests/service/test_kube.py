"""scaler/kube.py against recorded API objects served the way the API server serves them (list + watch)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path

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
    kube = KubeInventory(Config(kubernetes=True, kube_api=api.url), resync_s=2)  # type: ignore[attr-defined]
    await kube.start()
    try:
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
        lists_before = sum(w.lists for w in kube.watchers)
        api.drop_watches()
        api.apply("deployments", "DELETED", OBJECTS["deployments"][1])
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-mig3g") is None, "DELETED after drop")
        api.compact()
        scaled["status"]["replicas"] = 5
        api.apply("deployments", "MODIFIED", scaled)
        await _until(kube, lambda inv: inv.variant("llm", "deepseek-coder-7b-a100").current_replicas == 5,
                     "change after 410 Gone")
        assert sum(w.lists for w in kube.watchers) > lists_before
        assert any("watch=true" in r and "labelSelector=model.aibrix.ai" in r for r in api.requests)
    finally:
        await kube.stop()
