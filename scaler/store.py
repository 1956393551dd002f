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
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

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


class ProfileState(StrEnum):
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"


@dataclass(frozen=True)
class ProfileStatus:
    profile: Profile | None
    status: str  # a ProfileState: ok | missing | invalid
    source: str = ""
    detail: str = ""
    # The stored value is unusable now (`detail` says why) and `profile` is the last good one read from
    # `source` at `good_since`: an in-use profile overwritten with garbage keeps its variant planned.
    last_good: bool = False
    good_since: float | None = None


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


def decode_json(raw: bytes) -> Any:
    """JSON from stored bytes, or ValueError saying plainly what is wrong (encoding, syntax, size, depth)."""
    try:
        text = raw.decode("utf-8-sig")  # a BOM is harmless; other non-UTF-8 is not
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to be a profile") from None
    except ValueError as exc:  # e.g. an integer past Python's 4300-digit conversion limit
        raise ValueError(f"not usable JSON: {exc}") from None


def parse_stored(raw: bytes, source: str, model: str | None = None) -> tuple[Profile | ProfileError, bool]:
    """A profile from stored bytes (and whether it was AIBrix's format), or every problem with it naming
    `source` and the field. Nothing raises: an unforeseen failure of the parser is reported as a problem of
    this one profile, so it cannot stop planning for every other."""
    try:
        data = decode_json(raw)
    except ValueError as exc:
        return ProfileError(source, [str(exc)]), False
    aibrix = isinstance(data, Mapping) and "tputs" in data
    try:
        return parse_profile(data, source, model=model), aibrix
    except ProfileError as exc:
        return exc, aibrix
    except Exception as exc:
        log.exception("profile_parser_failed", source=source)
        return ProfileError(source, [f"cannot parse ({type(exc).__name__}: {exc})"]), aibrix


class DirectoryProfiles:
    """*.json under a directory (recursively). A file that fails to parse makes the variant named by its
    file stem `invalid` (and the variant it last provided, if another); it is reported with every problem,
    never guessed around. If the directory cannot be listed, the last listing stands (like Redis answers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, tuple[float, Profile | ProfileError, str | None]] = {}
        self._provided: dict[str, str] = {}  # file -> variant it last gave a good profile for
        self._last: tuple[dict[tuple[str | None, str], Profile], dict[str, ProfileError]] = ({}, {})
        self.state = StateLog()

    def _parse(self, file: Path) -> tuple[Profile | ProfileError, str | None]:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            return ProfileError(str(file), [f"cannot read: {exc}"]), None
        parsed, aibrix = parse_stored(raw, str(file))
        if isinstance(parsed, ProfileError):
            return parsed, None
        # AIBrix files do not name the model: any model may claim the variant (key model None).
        return parsed, None if aibrix else parsed.model

    def scan(self) -> tuple[dict[tuple[str | None, str], Profile], dict[str, ProfileError]]:
        by_key: dict[tuple[str | None, str], Profile] = {}
        invalid: dict[str, ProfileError] = {}
        try:
            files = _json_files(self.path)
        except OSError as exc:
            self.state.report(f"profiles:{self.path}", "unreadable", error=str(exc))
            return self._last
        self.state.report(f"profiles:{self.path}", "ok")
        # Keyed by the path's text and stat'ed through os: at 4,000 files a cycle, pathlib's per-call overhead
        # (hashing, str) was most of the scan.
        for name in files:
            try:
                mtime = os.stat(name).st_mtime
            except OSError:  # removed between listing and reading
                continue
            cached = self._cache.get(name)
            if cached is None or cached[0] != mtime:
                cached = self._cache[name] = (mtime, *self._parse(Path(name)))
            _, parsed, model = cached
            if isinstance(parsed, ProfileError):
                invalid[Path(name).stem] = parsed
                if name in self._provided:
                    invalid.setdefault(self._provided[name], parsed)
                self.state.report(f"profile:{name}", "invalid", problems=parsed.problems)
            else:
                by_key[(model, parsed.variant)] = parsed
                self._provided[name] = parsed.variant
                self.state.report(f"profile:{name}", "ok")
        self._last = (by_key, invalid)
        return by_key, invalid


def _json_files(root: Path) -> list[str]:
    """Every *.json under `root`, recursively, as `Path.rglob` finds them (dotfiles included, symlinked
    directories not entered) and in `sorted(Path)`'s order (by path components), as strings: at 4,000
    profiles rglob's Path objects and their sorting were two thirds of a scan (62 of 95 ms)."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")

    def unlistable(exc: OSError) -> None:
        # The root unreadable is the directory unreadable (its last listing stands); a subdirectory that
        # cannot be listed is skipped, as rglob skips it (a volume's root-only lost+found must not freeze
        # every profile at its last listing).
        if exc.filename == str(root):
            raise exc

    found = [os.path.join(d, f) for d, dirs, names in os.walk(root, onerror=unlistable)
             for f in [*names, *dirs] if f.endswith(".json")]
    return sorted(found, key=lambda name: name.split(os.sep))


class ProfileStore:
    def __init__(self, directory: str | None, redis_client: aioredis.Redis | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = DirectoryProfiles(directory) if directory else None
        self.redis = redis_client
        self.clock = clock
        self._redis_cache: dict[str, bytes | None] = {}  # last good answers, used while Redis is down
        # Parsed profiles by key with the bytes they came from: a profile with its raw rows is hundreds of KB
        # of JSON, the same every cycle, so it is parsed again only when its value changes.
        self._parsed: dict[str, tuple[bytes, Profile | str]] = {}
        self._good: dict[tuple[str, str], ProfileStatus] = {}  # (model, variant) -> last ok status
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

    async def _types(self, keys: list[str]) -> dict[str, str]:
        """Redis types of keys MGET answered nil for: nil means absent *or* not a string (a hash, a list)."""
        if self.redis is None or not keys:
            return {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                answers = await _bounded(pipe.execute())
        except (RedisError, OSError):
            return {}  # reported by _fetch; the variant stays `missing` this cycle
        out = {}
        for key, kind in zip(keys, answers, strict=True):
            name = kind.decode() if isinstance(kind, bytes) else str(kind)
            if name != "none":
                out[key] = name
        return out

    async def lookup(self, inventory: Inventory) -> dict[VariantId, ProfileStatus]:
        """Profile status for every (namespace, variant) of the inventory. Never raises: whatever is wrong
        with one profile is that variant's status."""
        wanted = [(m.name, v.name) for m in inventory.models for v in m.variants]
        keys = [k for model, variant in wanted for k in (our_key(model, variant), aibrix_key(model, variant))]
        fetched = await self._fetch(keys)
        by_key, invalid = self.directory.scan() if self.directory else ({}, {})
        resolved: dict[tuple[str, str], tuple[str, ProfileStatus]] = {}
        for m in inventory.models:
            for v in m.variants:
                resolved[(v.namespace, v.name)] = (m.name, self._resolve(m.name, v.name, fetched, by_key, invalid))
        unread = [k for (_, variant), (model, status) in resolved.items() if status.status == ProfileState.MISSING
                  for k in (our_key(model, variant), aibrix_key(model, variant))]
        types = await self._types([k for k in unread if k in fetched])
        out: dict[VariantId, ProfileStatus] = {}
        for (namespace, variant), (model, status) in resolved.items():
            wrong = [f"redis {k}: holds a {types[k]}, not a string of profile JSON"
                     for k in (our_key(model, variant), aibrix_key(model, variant)) if k in types]
            if wrong:
                status = ProfileStatus(None, ProfileState.INVALID, detail="; ".join(wrong))
            out[VariantId(namespace, variant)] = self._keep_last_good(model, variant, status)
        return out

    def _keep_last_good(self, model: str, variant: str, status: ProfileStatus) -> ProfileStatus:
        key = (model, variant)
        what = f"profile:{model}/{variant}"
        if status.status == ProfileState.OK:
            self._good[key] = replace(status, good_since=self.clock())
            self.state.report(what, "ok")
            return status
        good = self._good.get(key)
        if status.status == ProfileState.MISSING or good is None:
            # Removed on purpose (or never there): nothing is kept, the variant is no longer planned.
            self._good.pop(key, None)
            self.state.report(what, status.status, detail=status.detail)
            return status
        detail = (f"{status.detail}; using the last good profile from {good.source} "
                  f"(read at {_iso(good.good_since)})")
        self.state.report(what, "last_good", detail=detail)
        return replace(good, detail=detail, last_good=True)

    def _parse_redis(self, key: str, raw: bytes, model: str) -> Profile | str:
        """The profile stored under `key`, or what is wrong with it."""
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        parsed, _ = parse_stored(raw, f"redis {key}", model=model)
        result: Profile | str = str(parsed) if isinstance(parsed, ProfileError) else parsed
        self._parsed[key] = (raw, result)
        return result

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
            return ProfileStatus(profile, ProfileState.OK, f"redis {key}")
        for claim in ((model, variant), (None, variant)):
            if claim in by_key:
                profile = by_key[claim]
                if profile.model != model:
                    profile = replace(profile, model=model)
                return ProfileStatus(profile, ProfileState.OK, "directory")
        if variant in invalid:
            problems.append(str(invalid[variant]))
        if problems:
            return ProfileStatus(None, ProfileState.INVALID, detail="; ".join(problems))
        detail = (f"no profile for {model}/{variant}: no Redis key {our_key(model, variant)} or "
                  f"{aibrix_key(model, variant)}, no file in the profiles directory")
        return ProfileStatus(None, ProfileState.MISSING, detail=detail)


def _iso(t: float | None) -> str:
    return "?" if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------------------------------------------------- state


MAX_REPLICAS = 2**31 - 1  # the HPA's replica counts are int32


class StateError(ValueError):
    pass


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateError(f"{what}: must be a whole number of replicas, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise StateError(f"{what}: must be a whole number of replicas, got {value!r}")
    if not 0 <= value <= MAX_REPLICAS:
        raise StateError(f"{what}: must be in 0..{MAX_REPLICAS}, got {value!r}")
    return int(value)


def _time(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateError(f"{what}: must be a unix time in seconds, got {value!r}")
    try:
        t = float(value)
    except OverflowError:
        raise StateError(f"{what}: must be a unix time in seconds, got a {len(str(value))}-digit number") from None
    if not math.isfinite(t) or t < 0:
        raise StateError(f"{what}: must be a finite unix time in seconds, got {value!r}")
    return t


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
        """Raises StateError naming the field for anything but what to_json writes."""
        try:
            data: Any = decode_json(raw if isinstance(raw, bytes) else raw.encode())
        except ValueError as exc:
            raise StateError(str(exc)) from None
        if not isinstance(data, Mapping):
            raise StateError(f"must be a JSON object with history, replicas and at, got {type(data).__name__}")
        entries = data.get("history", [])
        if not isinstance(entries, list):
            raise StateError(f"history: must be a list of [time, replicas] pairs, got {type(entries).__name__}")
        history = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, list) or len(entry) != 2:
                raise StateError(f"history[{i}]: must be a [time, replicas] pair, got {entry!r:.80}")
            history.append((_time(entry[0], f"history[{i}][0]"), _count(entry[1], f"history[{i}][1]")))
        replicas, at = data.get("replicas"), data.get("at")
        return StoredVariant(history, None if replicas is None else _count(replicas, "replicas"),
                            None if at is None else _time(at, "at"))


class StateStore:
    def __init__(self, redis_client: aioredis.Redis | None) -> None:
        self.redis = redis_client
        self.variants: dict[VariantId, StoredVariant] = {}
        self.loaded = redis_client is None  # nothing to read when in memory only
        self.state = StateLog()

    async def load(self) -> bool:
        """Read state from Redis once; until that succeeds nothing is written, so a service that starts
        during a Redis outage does not erase the windows of the one before it. An entry that cannot be read
        is skipped with one line naming it (its variant starts afresh; the next save replaces it)."""
        if self.loaded or self.redis is None:
            return self.loaded
        try:
            raw = await _bounded(self.redis.hgetall(STATE_KEY))
        except ResponseError as exc:
            # Not a hash (WRONGTYPE): nothing there is ours to read, and writing would fail the same way.
            # Planning goes on in memory; saving reports the same problem once.
            log.error("state_unreadable", key=STATE_KEY, error=str(exc),
                      hint=f"{STATE_KEY} must be a hash of variant -> JSON; delete or rename the key")
            self.loaded = True
            return True
        except (RedisError, OSError) as exc:
            self.state.report("redis:state", "unreachable", error=str(exc))
            return False
        skipped = 0
        for key, value in raw.items():
            name = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else str(key)
            try:
                vid = VariantId.parse(name)
                restored = StoredVariant.from_json(value)
            except (StateError, ValueError) as exc:
                log.warning("state_entry_skipped", key=STATE_KEY, variant=name, error=str(exc))
                skipped += 1
                continue
            mine = self.variants.get(vid)
            if mine is not None:  # decided while Redis was unreachable: keep both
                restored.history = sorted({*restored.history, *mine.history})
                if mine.at is not None and (restored.at is None or mine.at > restored.at):
                    restored.recommendation, restored.at = mine.recommendation, mine.at
            self.variants[vid] = restored
        self.loaded = True
        self.state.report("redis:state", "ok")
        log.info("state_restored", variants=len(raw) - skipped, skipped=skipped)
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
        except ResponseError as exc:
            self.state.report("redis:state", "rejected", error=str(exc), redis_key=STATE_KEY)
            return False
        except (RedisError, OSError) as exc:
            self.state.report("redis:state", "unreachable", error=str(exc))
            return False
        self.state.report("redis:state", "ok")
        return True


def now() -> float:
    return time.time()
