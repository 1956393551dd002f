"""Profiles and state.

Profiles come from Redis (our key `gpumix:profile:<model>:<variant>` holding `Profile.to_json`, and AIBrix's
`aibrix:profile_<model>_<deployment>` holding its own JSON, read as is) and/or a directory of JSON files
(either format; the embedded default). Only the keys of variants the inventory knows are fetched (one
MGET), so AIBrix's ambiguous `<model>_<deployment>` key never needs splitting.

State is what makes a restart continue where it stopped: per variant, the recommendations published inside
its scale-down window (the HPA's memory) and the last one with its time. In Redis when configured (hash
`gpumix:state`, one JSON field per variant), in memory otherwise. If Redis goes away the service keeps its
memory and writes again when Redis is back; it never overwrites Redis state it has not read first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from optimizer.ids import VariantId
from optimizer.profile import Profile, ProfileError, parse_profile
from scaler import logs
from scaler.inventory import Inventory
from scaler.prometheus import StateLog

log = logs.get("gpumix.store")

STATE_KEY = "gpumix:state"
T = TypeVar("T")


def our_key(model: str, variant: str) -> str:
    return f"gpumix:profile:{model}:{variant}"


def aibrix_key(model: str, variant: str) -> str:
    return f"aibrix:profile_{model}_{variant}"


@dataclass(frozen=True)
class ProfileStatus:
    profile: Profile | None
    status: str  # ok | missing | invalid
    source: str = ""
    detail: str = ""


REDIS_DEADLINE_S = 2.0


def connect(url: str) -> aioredis.Redis:
    # Short timeouts and no client-side retries (redis-py retries with backoff by default): a Redis outage
    # must cost a cycle a second, not stall it. The next cycle is the retry.
    return aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                   retry=Retry(NoBackoff(), 0))


async def _bounded(awaitable: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(awaitable, REDIS_DEADLINE_S)
    except TimeoutError as exc:
        raise RedisError(f"no answer within {REDIS_DEADLINE_S} s") from exc


class DirectoryProfiles:
    """*.json under a directory (recursively). A file that fails to parse makes the variant named by its
    file stem `invalid`; it is reported with every problem, never guessed around."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[Path, tuple[float, Profile | ProfileError, str | None]] = {}
        self.state = StateLog()

    def _parse(self, file: Path) -> tuple[Profile | ProfileError, str | None]:
        try:
            data = json.loads(file.read_text())
            profile = parse_profile(data, str(file))
        except (OSError, json.JSONDecodeError) as exc:
            return ProfileError(str(file), [f"cannot read JSON: {exc}"]), None
        except ProfileError as exc:
            return exc, None
        # AIBrix files do not name the model: any model may claim the variant (key model None).
        return profile, None if isinstance(data, Mapping) and "tputs" in data else profile.model

    def scan(self) -> tuple[dict[tuple[str | None, str], Profile], dict[str, ProfileError]]:
        by_key: dict[tuple[str | None, str], Profile] = {}
        invalid: dict[str, ProfileError] = {}
        for file in sorted(self.path.rglob("*.json")):
            mtime = file.stat().st_mtime
            cached = self._cache.get(file)
            if cached is None or cached[0] != mtime:
                cached = self._cache[file] = (mtime, *self._parse(file))
            _, parsed, model = cached
            if isinstance(parsed, ProfileError):
                invalid[file.stem] = parsed
                self.state.report(f"profile:{file}", "invalid", problems=parsed.problems)
            else:
                by_key[(model, parsed.variant)] = parsed
                self.state.report(f"profile:{file}", "ok")
        return by_key, invalid


class ProfileStore:
    def __init__(self, directory: str | None, redis_client: aioredis.Redis | None) -> None:
        self.directory = DirectoryProfiles(directory) if directory else None
        self.redis = redis_client
        self._redis_cache: dict[str, bytes | None] = {}  # last good answers, used while Redis is down
        # Parsed profiles by key with the bytes they came from: a profile with its raw rows is hundreds of KB
        # of JSON, the same every cycle, so it is parsed again only when its value changes.
        self._parsed: dict[str, tuple[bytes, Profile | str]] = {}
        self.state = StateLog()

    async def _fetch(self, keys: list[str]) -> dict[str, bytes | None]:
        if self.redis is None or not keys:
            return {}
        try:
            values = await _bounded(self.redis.mget(keys))
            self.state.report("redis:profiles", "ok")
            self._redis_cache = dict(zip(keys, values, strict=True))
        except (RedisError, OSError) as exc:
            self.state.report("redis:profiles", "unreachable", error=str(exc))
        return self._redis_cache

    async def lookup(self, inventory: Inventory) -> dict[VariantId, ProfileStatus]:
        """Profile status for every (namespace, variant) of the inventory."""
        wanted = [(m.name, v.name) for m in inventory.models for v in m.variants]
        keys = [k for model, variant in wanted for k in (our_key(model, variant), aibrix_key(model, variant))]
        fetched = await self._fetch(keys)
        by_key, invalid = self.directory.scan() if self.directory else ({}, {})
        out: dict[VariantId, ProfileStatus] = {}
        for m in inventory.models:
            for v in m.variants:
                out[VariantId(v.namespace, v.name)] = self._resolve(m.name, v.name, fetched, by_key, invalid)
        return out

    def _parse_redis(self, key: str, raw: bytes, model: str) -> Profile | str:
        """The profile stored under `key`, or what is wrong with it."""
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        parsed: Profile | str
        try:
            parsed = parse_profile(json.loads(raw), f"redis {key}", model=model)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            parsed = f"redis {key}: not JSON: {exc}"
        except ProfileError as exc:
            parsed = str(exc)
        self._parsed[key] = (raw, parsed)
        return parsed

    def _resolve(
        self,
        model: str,
        variant: str,
        fetched: Mapping[str, bytes | None],
        by_key: Mapping[tuple[str | None, str], Profile],
        invalid: Mapping[str, ProfileError],
    ) -> ProfileStatus:
        problems: list[str] = []
        for key in (our_key(model, variant), aibrix_key(model, variant)):
            raw = fetched.get(key)
            if raw is None:
                continue
            profile = self._parse_redis(key, raw, model)
            if isinstance(profile, str):
                problems.append(profile)
                continue
            if profile.variant != variant or profile.model != model:
                problems.append(f"redis {key}: names {profile.model}/{profile.variant}, not {model}/{variant}")
                continue
            return ProfileStatus(profile, "ok", f"redis {key}")
        for key in ((model, variant), (None, variant)):
            if key in by_key:
                profile = by_key[key]
                if profile.model != model:
                    profile = replace(profile, model=model)
                return ProfileStatus(profile, "ok", "directory")
        if variant in invalid:
            problems.append(str(invalid[variant]))
        if problems:
            return ProfileStatus(None, "invalid", detail="; ".join(problems))
        detail = (f"no profile for {model}/{variant}: no Redis key {our_key(model, variant)} or "
                  f"{aibrix_key(model, variant)}, no file in the profiles directory")
        return ProfileStatus(None, "missing", detail=detail)


# ------------------------------------------------------------------------------------------- state


@dataclass
class StoredVariant:
    history: list[tuple[float, int]]  # (unix time, published recommendation)
    recommendation: int | None = None
    at: float | None = None  # when `recommendation` was decided from fresh data

    def to_json(self) -> str:
        # "replicas" is the stored key since 0.1: kept so state written by older versions reads back.
        return json.dumps({"history": [[t, n] for t, n in self.history], "replicas": self.recommendation,
                           "at": self.at})

    @staticmethod
    def from_json(raw: bytes | str) -> StoredVariant:
        data: Any = json.loads(raw)
        history = [(float(t), int(n)) for t, n in data.get("history", [])]
        replicas = data.get("replicas")
        at = data.get("at")
        return StoredVariant(history, None if replicas is None else int(replicas), None if at is None else float(at))


class StateStore:
    def __init__(self, redis_client: aioredis.Redis | None) -> None:
        self.redis = redis_client
        self.variants: dict[VariantId, StoredVariant] = {}
        self.loaded = redis_client is None  # nothing to read when in memory only
        self.state = StateLog()

    async def load(self) -> bool:
        """Read state from Redis once; until that succeeds nothing is written, so a service that starts
        during a Redis outage does not erase the windows of the one before it."""
        if self.loaded or self.redis is None:
            return self.loaded
        try:
            raw = await _bounded(self.redis.hgetall(STATE_KEY))
        except (RedisError, OSError) as exc:
            self.state.report("redis:state", "unreachable", error=str(exc))
            return False
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            try:
                vid = VariantId.parse(name)
                restored = StoredVariant.from_json(value)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("state_unreadable", variant=name, error=str(exc))
                continue
            mine = self.variants.get(vid)
            if mine is not None:  # decided while Redis was unreachable: keep both
                restored.history = sorted({*restored.history, *mine.history})
                if mine.at is not None and (restored.at is None or mine.at > restored.at):
                    restored.recommendation, restored.at = mine.recommendation, mine.at
            self.variants[vid] = restored
        self.loaded = True
        self.state.report("redis:state", "ok")
        log.info("state_restored", variants=len(raw))
        return True

    def history(self) -> dict[VariantId, list[tuple[float, int]]]:
        return {k: list(v.history) for k, v in self.variants.items()}

    def put(self, vid: VariantId, history: list[tuple[float, int]], decided_at: float | None) -> None:
        """What the cycle core decided for one variant: its new history, and the decision time when it came
        from fresh data (otherwise the old one stays, and ages towards UNAVAILABLE)."""
        state = self.variants.setdefault(vid, StoredVariant([]))
        state.history = list(history)
        state.recommendation = history[-1][1] if history else None
        if decided_at is not None:
            state.at = decided_at

    async def save(self, names: Iterable[VariantId] | None = None) -> bool:
        if self.redis is None:
            return True
        if not await self.load():
            return False
        chosen = self.variants if names is None else {n: self.variants[n] for n in names if n in self.variants}
        if not chosen:
            return True
        try:
            await _bounded(self.redis.hset(STATE_KEY, mapping={str(k): v.to_json() for k, v in chosen.items()}))
        except (RedisError, OSError) as exc:
            self.state.report("redis:state", "unreachable", error=str(exc))
            return False
        self.state.report("redis:state", "ok")
        return True


def now() -> float:
    return time.time()
