"""Leader election and fencing, one rule per row: the Redis lock against a real Redis, the Kubernetes Lease
elector against the API stand-in's Lease endpoints (real resourceVersion conflicts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from optimizer.ids import VariantId
from scaler.leader import (
    FENCE_KEY,
    LOCK_KEY,
    FencedStateStore,
    KubeLeaseLeadership,
    KubernetesLeaseApi,
    LeaseConflict,
    RedisLeadership,
    read_published,
)
from scaler.store import STATE_KEY
from tests.service.kube_api import FakeApiServer

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ------------------------------------------------------------------------------------------- Redis


def test_one_leader_at_a_time_and_the_next_token_on_takeover(redis_url: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        a, b = RedisLeadership(client, "a", 0.4), RedisLeadership(client, "b", 0.4)
        assert await a.acquire() and a.is_leader() and a.fencing_token == 1
        assert not await b.acquire() and not b.is_leader()  # NX: the lock is taken
        assert await a.renew() and await a.acquire()  # the holder keeps it (renewal, same token)
        assert a.fencing_token == 1
        await asyncio.sleep(0.5)  # a stops renewing: the lock expires
        assert not a.is_leader()  # its own clock says so too: it stops planning without asking Redis
        assert await b.acquire() and b.fencing_token == 2  # a fresh, higher token
        assert not await a.renew()  # the value is b's now: a's renew script refuses
        await b.release()
        assert await client.get(LOCK_KEY) is None
        await client.aclose()

    _run(go())


def test_release_by_a_deposed_leader_leaves_the_new_lock_alone(redis_url: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        a, b = RedisLeadership(client, "a", 0.3), RedisLeadership(client, "b", 0.3)
        assert await a.acquire()
        await asyncio.sleep(0.4)
        assert await b.acquire()
        await a.release()  # late: must not delete b's lock
        assert (await client.get(LOCK_KEY)).decode() == "b#2"
        await client.aclose()

    _run(go())


class _Fixed:
    """A leadership with a given token (what the fenced write sees)."""

    identity = "x"
    lease_s = 1.0

    def __init__(self, token: int) -> None:
        self.token: int | None = token

    @property
    def fencing_token(self) -> int | None:
        return self.token

    def depose(self) -> None:
        self.token = None


@pytest.mark.parametrize(
    "writers, kept",
    [
        ([("a", 1)], "a"),
        ([("a", 1), ("b", 2)], "b"),
        ([("a", 1), ("b", 2), ("a", 1)], "b"),  # the deposed leader's late write is refused
        ([("b", 2), ("a", 1)], "b"),
        ([("a", 2), ("b", 2)], "b"),  # the same term may write again
    ],
)
def test_fenced_state_writes(redis_url: str, writers: list[tuple[str, int]], kept: str) -> None:
    replicas = {"a": 1, "b": 2}

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        for who, token in writers:
            lead = _Fixed(token)
            store = FencedStateStore(client, lead)  # type: ignore[arg-type]
            store.loaded = True
            store.put(VariantId("llm", "v"), [(100.0, replicas[who])], 100.0)
            ok = await store.save()
            assert ok == (lead.token is not None)  # a refused write deposes the writer
        state = await read_published(client)
        assert state is not None and state[VariantId("llm", "v")].recommendation == replicas[kept]
        assert int(await client.get(FENCE_KEY)) == max(t for _, t in writers)
        await client.aclose()

    _run(go())


def test_a_follower_never_writes(redis_url: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = FencedStateStore(client, RedisLeadership(client, "a", 5.0))
        store.loaded = True
        store.put(VariantId("llm", "v"), [(100.0, 3)], 100.0)
        assert not await store.save()
        assert await client.hgetall(STATE_KEY) == {}
        await client.aclose()

    _run(go())


def test_a_lease_won_during_a_follower_refresh_starts_the_first_cycle_at_once(redis_url: str) -> None:
    """The old leader's lock lapses while this follower's refresh is waiting on Redis; the election (its own
    task) wins it then. The first leader cycle must follow without waiting out the interval (an hour here):
    a wake-up lost that way made 6 of 20 benchmark takeovers miss lease + interval."""
    from scaler.config import Config
    from scaler.inventory import Inventory
    from scaler.leader import HighAvailability
    from scaler.loop import Controller, StaticInventory
    from scaler.prometheus import Observer
    from scaler.store import ProfileStore, StateStore
    from scaler.table import Table

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await client.set(LOCK_KEY, "the-old-leader", px=60_000)
        config = Config(interval=3600.0, fast_interval=3600.0)
        controller = Controller(config, StaticInventory(Inventory(())), Observer(config), ProfileStore(None, None),
                                StateStore(None), Table())
        cycled = asyncio.Event()

        async def cycle() -> Any:
            cycled.set()
            return controller.table.published

        controller.cycle = cycle  # type: ignore[method-assign]

        class Follower:  # the refresh during which the old leader's lock lapses
            async def refresh(self) -> None:
                await client.delete(LOCK_KEY)
                await asyncio.sleep(0.5)  # still refreshing when the election (every 0.1 s) wins

        ha = HighAvailability(config, RedisLeadership(client, "b", 0.3), controller, Follower(),  # type: ignore[arg-type]
                              lambda: StateStore(None))
        stop = asyncio.Event()
        running = asyncio.create_task(ha.run(stop))
        try:
            await asyncio.wait_for(cycled.wait(), timeout=30)
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=30)
            await client.aclose()
        assert ha.terms == 1

    _run(go())


# -------------------------------------------------------------------------------- Kubernetes Lease


@pytest.fixture()
def kube() -> Iterator[FakeApiServer]:
    server = FakeApiServer({})
    server.url = server.start()  # type: ignore[attr-defined]
    yield server
    server.stop()


def _lease_api(server: FakeApiServer) -> KubernetesLeaseApi:
    from kubernetes import client as k8s

    conf = k8s.Configuration()
    conf.host = server.url  # type: ignore[attr-defined]
    return KubernetesLeaseApi(k8s.ApiClient(conf))


def test_lease_created_then_held_then_taken_over_after_expiry(kube: FakeApiServer) -> None:
    clock, api = Clock(), _lease_api(kube)
    a = KubeLeaseLeadership(api, "gpumix-system", "a", lease_s=10, clock=clock)
    b = KubeLeaseLeadership(api, "gpumix-system", "b", lease_s=10, clock=clock)
    assert _run(a.acquire()) and a.fencing_token == 0  # created: leaseTransitions 0
    assert not _run(b.acquire())  # held by a, first seen now: valid for 10 s by b's own clock
    clock.now += 5
    assert _run(a.renew()) and a.fencing_token == 0
    clock.now += 6  # 11 s since b first saw the record, but a renewed it meanwhile
    assert not _run(b.acquire())  # b sees a changed record: its 10 s start again from now
    clock.now += 11  # a is gone (no renewals since)
    assert not a.is_leader()
    assert _run(b.acquire()) and b.fencing_token == 1  # one more transition: the next fencing token
    lease = api.get("gpumix-system", "gpumix-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not _run(a.acquire())  # a comes back: held by b and valid, a does not lead


def test_lease_update_with_an_old_resource_version_is_a_conflict(kube: FakeApiServer) -> None:
    api = _lease_api(kube)
    a = KubeLeaseLeadership(api, "ns", "a", lease_s=10)
    assert _run(a.acquire())
    stale = api.get("ns", "gpumix-leader")
    assert stale is not None
    assert _run(a.renew())  # moves the resourceVersion on
    with pytest.raises(LeaseConflict):
        api.replace("ns", "gpumix-leader", stale)
    with pytest.raises(LeaseConflict):
        api.create("ns", stale)  # exists: AlreadyExists is a 409 too


def test_two_candidates_racing_for_an_expired_lease_get_one_winner(kube: FakeApiServer) -> None:
    clock, api = Clock(), _lease_api(kube)
    old = KubeLeaseLeadership(api, "ns", "old", lease_s=10, clock=clock)
    assert _run(old.acquire())
    b = KubeLeaseLeadership(api, "ns", "b", lease_s=10, clock=clock)
    c = KubeLeaseLeadership(api, "ns", "c", lease_s=10, clock=clock)
    assert not _run(b.acquire()) and not _run(c.acquire())  # both observe the record now
    clock.now += 11
    # Both read the same expired record; b's update lands first, c's carries the old resourceVersion.
    current = api.get("ns", "gpumix-leader")
    real_get = api.get
    api.get = lambda ns, name: json.loads(json.dumps(current))  # type: ignore[method-assign]
    assert _run(b.acquire())
    assert not _run(c.acquire())  # 409 Conflict from the server: c does not lead
    api.get = real_get  # type: ignore[method-assign]
    assert b.is_leader() and not c.is_leader()
    lease = api.get("ns", "gpumix-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == "b"


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--ha", "redis"], {}, "--ha needs --redis"),
        ([], {"GPUMIX_HA": "zookeeper"}, "GPUMIX_HA: must be off, redis or kubernetes"),
        (["--ha", "redis", "--redis", "redis://127.0.0.1:1/0"], {"GPUMIX_HA_LEASE": "soon"},
         "GPUMIX_HA_LEASE: must be a number"),
        (["--ha", "redis", "--redis", "redis://127.0.0.1:1/0", "--ha-lease", "0"], {}, "--ha-lease must be > 0"),
    ],
)
def test_bad_ha_settings_are_named(tmp_path: Any, argv: list[str], env: dict[str, str], message: str) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "inventory.yaml").write_text("models: []\n")
    (tmp_path / "profiles").mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "serve", "--prometheus", "http://127.0.0.1:1",
         "--inventory", str(tmp_path / "inventory.yaml"), "--profiles", str(tmp_path / "profiles"), *argv],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )
    assert out.returncode == 2 and message in out.stderr
