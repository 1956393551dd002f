"""Two replicas, one leader: leader election, fenced state writes, and followers that answer from Redis.

Only the leader plans. Every replica answers KEDA and HTTP, a follower with the leader's published
recommendations read from the Redis hash `gpumix:state` (the state store's), so an answer does not depend
on which replica KEDA reached. When the leader dies, another replica acquires the lease once it expires,
loads the published history (the HPA windows) from Redis and plans on from there.

Electors (`Leadership`):
- `RedisLeadership` — a lock key set with SET NX PX, renewed and released by Lua scripts that act only
  while the key still holds this replica's value; every acquisition takes the next value of a counter, the
  fencing token.
- `KubeLeaseLeadership` — a coordination.k8s.io/v1 Lease, following client-go's
  tools/leaderelection/leaderelection.go (LeaderElector.tryAcquireOrRenew): create it when missing; a lease
  held by another is valid until `leaseDurationSeconds` after this replica *observed* its record change (its
  own clock, never the holder's timestamps); take-over and renewal are updates carrying the record's
  resourceVersion, so two candidates racing for it get one 200 and one 409 Conflict; `leaseTransitions`
  grows by one at every change of holder and is the fencing token.

Fencing: `FencedStateStore` writes state through a Lua script that compares the writer's token with the
highest one that ever wrote (`gpumix:state:fence`) and refuses an older one, so a deposed leader's late
write (a long GC pause, a partition) cannot overwrite its successor's windows.

Wiring (`gpumix serve --ha redis|kubernetes`): `HighAvailability.run` replaces `Controller.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from optimizer.cycle import VariantInput, first_responder
from optimizer.ids import ModelId, VariantId
from scaler import logs
from scaler.config import Config
from scaler.loop import Controller, InventorySource
from scaler.prometheus import Observer
from scaler.store import STATE_KEY, ProfileStore, StateError, StateStore, StoredVariant
from scaler.table import ModelView, Published, Table, VariantView

log = logs.get("gpumix.leader")

LOCK_KEY = "gpumix:leader"
TOKEN_KEY = "gpumix:leader:token"  # fencing counter of the Redis elector
FENCE_KEY = "gpumix:state:fence"  # highest fencing token that has written state
LEASE_NAME = "gpumix-leader"

# SET NX PX and the next fencing token in one step: a token is never taken without the lock, or the lock
# without a token.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
  return token
end
return false
"""
# Renew or release only while the lock still holds our value: an expired lock taken by another stays his.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FENCED_HSET = """
local fence = tonumber(redis.call('GET', KEYS[2]) or '-1')
local token = tonumber(ARGV[1])
if token < fence then return 0 end
if token > fence then redis.call('SET', KEYS[2], ARGV[1]) end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def default_identity() -> str:
    # A pod's hostname is its name; the pid tells two processes on one host apart (tests, a laptop).
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


class Leadership(Protocol):
    """What the service needs from an elector."""

    identity: str
    lease_s: float

    async def acquire(self) -> bool:
        """Try once to become (or stay) leader; True when this replica leads afterwards."""
        ...

    async def renew(self) -> bool:
        """Extend the lease; False when it is lost (another holds it, or it could not be renewed in time)."""
        ...

    async def release(self) -> None: ...

    def is_leader(self) -> bool: ...

    @property
    def fencing_token(self) -> int | None: ...

    def depose(self) -> None:
        """Stop leading at once (a fenced write was refused: someone newer leads)."""
        ...


class RedisLeadership:
    def __init__(self, client: aioredis.Redis, identity: str | None = None, lease_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.identity = identity or default_identity()
        self.lease_s = lease_s
        self.clock = clock
        self._value: str | None = None  # what the lock key holds while we lead
        self._token: int | None = None
        self._valid_until = 0.0  # local clock: lease measured from *before* the request that set it

    @property
    def fencing_token(self) -> int | None:
        return self._token if self.is_leader() else None

    def is_leader(self) -> bool:
        return self._token is not None and self.clock() < self._valid_until

    def depose(self) -> None:
        self._value, self._token = None, None

    async def acquire(self) -> bool:
        if self._value is not None and await self.renew():
            return True
        sent = self.clock()
        try:
            token = await self.client.eval(_ACQUIRE, 2, LOCK_KEY, TOKEN_KEY, self.identity,
                                           int(self.lease_s * 1000))
        except (RedisError, OSError) as exc:
            log.warning("lease_unreachable", error=str(exc))
            return False
        if token is None:
            return False
        self._token = int(token)
        self._value = f"{self.identity}#{self._token}"
        self._valid_until = sent + self.lease_s
        return True

    async def renew(self) -> bool:
        if self._value is None:
            return False
        sent = self.clock()
        try:
            ok = await self.client.eval(_RENEW, 1, LOCK_KEY, self._value,
                                        int(self.lease_s * 1000))
        except (RedisError, OSError) as exc:
            log.warning("lease_unreachable", error=str(exc))
            return self.is_leader()  # still ours until it expires; the next renewal may get through
        if not ok:
            self.depose()
            return False
        self._valid_until = sent + self.lease_s
        return True

    async def release(self) -> None:
        if self._value is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.eval(_RELEASE, 1, LOCK_KEY, self._value)
        self.depose()


# ------------------------------------------------------------------------------- Kubernetes Lease


class LeaseConflict(Exception):
    pass


class LeaseApi(Protocol):
    """The three Lease calls the elector makes (get returns None for 404; create/replace raise
    LeaseConflict for 409)."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


class KubernetesLeaseApi:
    """LeaseApi over the official client (coordination.k8s.io/v1), plain dicts in and out."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client as k8s

        self.api = k8s.CoordinationV1Api(api_client)
        self.client = api_client
        self._exc = k8s.ApiException

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.api.read_namespaced_lease(name, namespace, _preload_content=False)
        except self._exc as exc:
            if exc.status == 404:
                return None
            raise
        return _json(resp)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created = self.api.create_namespaced_lease(namespace, body, _preload_content=False)  # type: ignore[arg-type]
            return _json(created)
        except self._exc as exc:
            if exc.status == 409:
                raise LeaseConflict(str(exc.reason)) from exc
            raise

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return _json(self.api.replace_namespaced_lease(name, namespace, body,  # type: ignore[arg-type]
                                                              _preload_content=False))
        except self._exc as exc:
            if exc.status == 409:
                raise LeaseConflict(str(exc.reason)) from exc
            raise


def _json(resp: Any) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(resp.data)
    return data


def _micro_time(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseLeadership:
    def __init__(self, api: LeaseApi, namespace: str, identity: str | None = None, lease_s: float = 15.0,
                 name: str = LEASE_NAME, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_s = lease_s
        self.clock = clock
        self.wall = wall
        self._observed: dict[str, Any] | None = None  # the last record seen (its spec)
        self._observed_version: str | None = None
        self._observed_at = 0.0  # local clock when the record last changed (client-go's observedTime)
        self._leading = False
        self._valid_until = 0.0

    @property
    def fencing_token(self) -> int | None:
        if not self.is_leader() or self._observed is None:
            return None
        return int(self._observed.get("leaseTransitions") or 0)

    def is_leader(self) -> bool:
        return self._leading and self.clock() < self._valid_until

    def depose(self) -> None:
        self._leading = False

    async def acquire(self) -> bool:
        return await asyncio.to_thread(self._try_acquire_or_renew)

    async def renew(self) -> bool:
        if not self._leading:
            return False
        return await asyncio.to_thread(self._try_acquire_or_renew)

    async def release(self) -> None:
        """Give the lease up the way client-go's ReleaseOnCancel does: holder emptied, duration 1 s."""
        if not self._leading or self._observed_version is None or self._observed is None:
            return
        spec = {**self._observed, "holderIdentity": "", "leaseDurationSeconds": 1}
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.api.replace, self.namespace, self.name, self._body(spec))
        self.depose()

    def _body(self, spec: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self._observed_version is not None:
            meta["resourceVersion"] = self._observed_version  # optimistic concurrency: 409 if it moved
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _record(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro_time(self.wall())
        return {"holderIdentity": self.identity, "leaseDurationSeconds": round(self.lease_s),
                "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}

    def _set_observed(self, obj: dict[str, Any], at: float) -> None:
        self._observed = dict(obj.get("spec") or {})
        self._observed_version = (obj.get("metadata") or {}).get("resourceVersion")
        self._observed_at = at

    def _try_acquire_or_renew(self) -> bool:
        sent = self.clock()
        try:
            current = self.api.get(self.namespace, self.name)
            if current is None:  # no lease yet: create it (leaseTransitions starts at 0)
                self._observed_version = None
                created = self.api.create(self.namespace, self._body(self._record(0, None)))
                return self._won(created, sent)
            version = (current.get("metadata") or {}).get("resourceVersion")
            if version != self._observed_version:
                self._set_observed(current, sent)
            spec = self._observed or {}
            holder = spec.get("holderIdentity") or ""
            duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
            mine = holder == self.identity and self._leading
            if holder and holder != self.identity and sent < self._observed_at + duration:
                self._leading = False
                return False  # held by another and not expired by our own clock
            transitions = int(spec.get("leaseTransitions") or 0)
            if not mine:
                transitions += 1  # a change of holder: the next fencing token
            acquired = spec.get("acquireTime") if mine else None
            updated = self.api.replace(self.namespace, self.name, self._body(self._record(transitions, acquired)))
            return self._won(updated, sent)
        except LeaseConflict:
            self._leading = False  # someone else updated it first
            return False
        except Exception as exc:  # API unreachable: lead until the lease we hold runs out
            log.warning("lease_unreachable", error=str(exc))
            return self.is_leader()

    def _won(self, obj: dict[str, Any], sent: float) -> bool:
        self._set_observed(obj, sent)
        self._leading = True
        self._valid_until = sent + self.lease_s
        return True


# ------------------------------------------------------------------------------------ state writes


class FencedStateStore(StateStore):
    """The state store whose writes carry the leader's fencing token; a refused write deposes it."""

    def __init__(self, redis_client: aioredis.Redis, leadership: Leadership) -> None:
        super().__init__(redis_client)
        self.leadership = leadership
        self.refused = 0

    async def save(self, names: Any = None) -> bool:
        assert self.redis is not None
        token = self.leadership.fencing_token
        if token is None:
            return False  # not (or no longer) leading: a follower never writes
        if not await self.load():
            return False
        chosen = self.variants if names is None else {n: self.variants[n] for n in names if n in self.variants}
        if not chosen:
            return True
        args: list[str] = [str(token)]
        for k, v in chosen.items():
            args += [str(k), v.to_json()]
        try:
            ok = await asyncio.wait_for(
                self.redis.eval(_FENCED_HSET, 2, STATE_KEY, FENCE_KEY, *args),
                2.0,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self.state.report("redis:state", "unreachable", error=str(exc))
            return False
        if not ok:
            self.refused += 1
            log.warning("state_write_fenced", token=token, hint="a newer leader holds the lease; stepping down")
            self.leadership.depose()
            return False
        self.state.report("redis:state", "ok")
        return True


async def read_published(client: aioredis.Redis) -> dict[VariantId, StoredVariant] | None:
    """The leader's published state from `gpumix:state` (read only); None when Redis cannot be read."""
    try:
        raw = await asyncio.wait_for(client.hgetall(STATE_KEY), 2.0)
    except (RedisError, OSError, TimeoutError):
        return None
    out: dict[VariantId, StoredVariant] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)
        with contextlib.suppress(StateError, ValueError):  # the store logs bad entries when it loads them
            out[VariantId.parse(name)] = StoredVariant.from_json(value)
    return out


# --------------------------------------------------------------------------------------- followers


class Follower:
    """Turns the leader's published state into the recommendations table a follower answers from."""

    def __init__(self, inventory: InventorySource, observer: Observer, profiles: ProfileStore,
                 client: aioredis.Redis, table: Table, clock: Callable[[], float] = time.time) -> None:
        self.inventory = inventory
        self.observer = observer
        self.profiles = profiles
        self.client = client
        self.table = table
        self.clock = clock

    async def refresh(self) -> Published | None:
        now = self.clock()
        inventory = self.inventory.current()
        obs, profiles, published = await asyncio.gather(
            self.observer.observe(now), self.profiles.lookup(inventory), read_published(self.client)
        )
        if published is None:
            return None  # keep answering with what was last read; staleness rules apply to it as usual
        variants: dict[VariantId, VariantView] = {}
        models: dict[ModelId, ModelView] = {}
        for model in inventory.models:
            idle = True
            inputs = []
            for v in model.variants:
                vid = VariantId(v.namespace, v.name)
                status = profiles[vid]
                st = published.get(vid)
                current = obs.replicas.get((v.namespace, v.name), v.current_replicas)
                view = VariantView(
                    id=vid, model=model.name, profile_status=status.status, profile_detail=status.detail,
                    recommendation=None if st is None else st.recommendation,
                    decided_at=None if st is None else st.at,
                    current=current, reason="published by the leader",
                    tolerance_up=v.tolerance_up, tolerance_down=v.tolerance_down,
                )
                variants[vid] = view
                inputs.append(VariantInput(vid, status.profile))
                idle = idle and (view.recommendation or 0) == 0 and (current or 0) == 0
            mid = ModelId(model.namespace, model.name)
            models[mid] = ModelView(id=mid, first_responder=first_responder(inputs), idle=idle)
        decided = [st.at for st in published.values() if st.at is not None]
        result = Published(variants, models, planned_at=max(decided) if decided else None)
        self.table.publish(result)
        return result


# ------------------------------------------------------------------------------------------ running


class HighAvailability:
    """Runs one replica of an HA pair: renews or competes for the lease every min(lease/3, interval/2) s; each interval
    the leader runs the control cycle and a follower refreshes from Redis; both run the fast path."""

    def __init__(self, config: Config, leadership: Leadership, controller: Controller, follower: Follower,
                 make_state: Callable[[], StateStore]) -> None:
        self.config = config
        self.leadership = leadership
        self.controller = controller
        self.follower = follower
        self.make_state = make_state
        self.took_over = asyncio.Event()
        self.terms = 0  # how many times this replica became leader

    async def _elect(self) -> None:
        was = self.leadership.is_leader()
        ok = await (self.leadership.renew() if was else self.leadership.acquire())
        if ok and not was:
            # A fresh store: it reads the published history from Redis before its first write, so the new
            # leader continues the HPA windows where the old one left them.
            self.controller.state = self.make_state()
            # evidence gathered in an earlier term describes a window long gone: the new term's comes next
            self.controller.evidence = None
            self.terms += 1
            log.info("leading", identity=self.leadership.identity, token=self.leadership.fencing_token)
            self.took_over.set()
        elif was and not ok:
            log.warning("leadership_lost", identity=self.leadership.identity)

    async def _step(self) -> None:
        if self.leadership.is_leader():
            await self.controller.cycle()
        else:
            await self.follower.refresh()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            # A follower tries twice per interval, so lease acquisition plus the first cycle fit in the lease plus
            # one interval; the leader renews as often, so its lease rarely has less than lease − interval/2 left.
            asyncio.create_task(self.controller._every(min(self.leadership.lease_s / 3, self.config.interval / 2),
                                                       self._elect, stop, "election")),
            # the fast path on every replica (followers answer IsActive too); the evidence only for the leader
            *self.controller.background(stop, leading=self.leadership.is_leader),
        ]
        try:
            while not stop.is_set():
                began = time.monotonic()
                # Cleared before the step, not after it: a lease won while a follower refresh was awaiting
                # Redis must still wake the loop at once (clearing it afterwards lost that wake-up, and the
                # new leader's first cycle waited out the interval: 6 of 20 takeovers came late that way).
                self.took_over.clear()
                try:
                    await self._step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad cycle must not end the service
                    self.controller.table.counters.error("cycle_error")
                    log.exception("cycle_failed", error=str(exc))
                delay = max(0.01, self.config.interval - (time.monotonic() - began))
                waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self.took_over.wait())]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED), delay)
                for w in waits:
                    w.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.leadership.release()


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def lease_namespace(config: Config) -> str:
    """The pod's own namespace (POD_NAMESPACE, or the mounted service account's), else the watched one."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    return config.kube_namespace or "gpumix-system"


__all__ = [
    "FencedStateStore",
    "Follower",
    "HighAvailability",
    "KubeLeaseLeadership",
    "KubernetesLeaseApi",
    "Leadership",
    "LeaseApi",
    "LeaseConflict",
    "RedisLeadership",
    "lease_namespace",
    "read_published",
]
