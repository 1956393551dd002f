"""Calibration state in Redis, and the operator's controls over it.

Two hashes, so the service and an operator never overwrite each other:
- `gpumix:calibration` — what the service learnt: one JSON field per entry, `variant:<namespace>/<variant>`
  (`VariantCalibration`) and `model:<namespace>/<model>` (`ModelHeadroom`). Written by the service only.
- `gpumix:calibration:control` — what an operator asked (`gpumix calibrate --freeze/--unfreeze/--reset`):
  fields keyed the same way, `{"frozen": bool, "reset_at": unix time | null}`. The service reads it every
  cycle and applies it with `optimizer.calibrate.apply_control`; a reset is applied once (the entry
  remembers `reset_seen`), a freeze holds while the control says so.

Like the HPA state in `scaler/store.py`: a stored entry that does not parse is logged once and left out —
never raised for the others — and nothing is written before the stored state was read once, so a service
started during a Redis outage does not erase what the previous one learnt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from optimizer.calibrate import CalibrationSettings, CalibrationState, CalibrationStep, Control, parse_state
from scaler import logs
from scaler.prometheus import StateLog
from scaler.store import _bounded

log = logs.get("gpumix.calibration")

CALIBRATION_KEY = "gpumix:calibration"
CONTROL_KEY = "gpumix:calibration:control"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def parse_control(raw: bytes | str, source: str) -> Control:
    try:
        data: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: must be a JSON object like {{\"frozen\": true}}")
    frozen = data.get("frozen", False)
    reset_at = data.get("reset_at")
    problems = []
    if not isinstance(frozen, bool):
        problems.append(f"frozen: must be true or false, got {frozen!r}")
    if reset_at is not None and (isinstance(reset_at, bool) or not isinstance(reset_at, int | float)
                                 or not math.isfinite(reset_at)):
        problems.append(f"reset_at: must be a unix time, got {reset_at!r}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return Control(bool(frozen), None if reset_at is None else float(reset_at))


def decode_fields(raw: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Redis hash → {field: decoded JSON}, and the fields that were not JSON at all."""
    fields: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, value in raw.items():
        name = _text(key)
        try:
            fields[name] = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            problems[name] = f"{name}: not JSON: {exc}"
    return fields, problems


class CalibrationStore:
    def __init__(self, redis_client: aioredis.Redis | None, settings: CalibrationSettings) -> None:
        self.redis = redis_client
        self.settings = settings
        self.state = CalibrationState()
        self.loaded = redis_client is None
        self.health = StateLog()
        self._reported: dict[str, str] = {}  # malformed entries already logged, with their problem

    def _report(self, problems: Mapping[str, str], what: str) -> None:
        for key, problem in problems.items():
            if self._reported.get(key) != problem:
                self._reported[key] = problem
                log.warning(f"{what}_unreadable", entry=key, problem=problem)

    async def load(self) -> bool:
        """Read the learnt state once; until that succeeds `save` writes nothing."""
        if self.loaded or self.redis is None:
            return self.loaded
        try:
            raw = await _bounded(self.redis.hgetall(CALIBRATION_KEY))
        except (RedisError, OSError) as exc:
            self.health.report("redis:calibration", "unreachable", error=str(exc))
            return False
        fields, problems = decode_fields(raw)
        restored, invalid = parse_state(fields, self.settings)
        self._report({**problems, **invalid}, "calibration")
        # Entries learnt while Redis was unreachable are newer than what it holds.
        self.state = CalibrationState({**restored.variants, **self.state.variants},
                                      {**restored.models, **self.state.models})
        self.loaded = True
        self.health.report("redis:calibration", "ok")
        log.info("calibration_restored", variants=len(restored.variants), models=len(restored.models),
                 unreadable=len(problems) + len(invalid))
        return True

    async def controls(self) -> dict[str, Control]:
        """The operator's controls ({} without Redis, or while it is unreachable: nothing changes then)."""
        if self.redis is None:
            return {}
        try:
            raw = await _bounded(self.redis.hgetall(CONTROL_KEY))
        except (RedisError, OSError) as exc:
            self.health.report("redis:calibration_control", "unreachable", error=str(exc))
            return {}
        self.health.report("redis:calibration_control", "ok")
        out: dict[str, Control] = {}
        problems: dict[str, str] = {}
        for key, value in raw.items():
            name = _text(key)
            try:
                out[name] = parse_control(value, f"{CONTROL_KEY} {name}")
            except ValueError as exc:
                problems[name] = str(exc)
        self._report(problems, "calibration_control")
        return out

    async def save(self, state: CalibrationState, keys: Iterable[str] | None = None) -> bool:
        """Keep `state` and write its entries (all, or those named as `to_fields` keys them)."""
        self.state = state
        if self.redis is None:
            return True
        if not await self.load():
            return False
        fields = state.to_fields()
        chosen = fields if keys is None else {k: fields[k] for k in keys if k in fields}
        if not chosen:
            return True
        try:
            await _bounded(self.redis.hset(CALIBRATION_KEY,
                                           mapping={k: json.dumps(v) for k, v in chosen.items()}))
        except (RedisError, OSError) as exc:
            self.health.report("redis:calibration", "unreachable", error=str(exc))
            return False
        self.health.report("redis:calibration", "ok")
        return True

    # -- the operator's side (gpumix calibrate)

    async def read(self) -> tuple[CalibrationState, dict[str, str], dict[str, Control]]:
        """Stored state, its unreadable entries (key → problem) and the controls; raises RedisError."""
        assert self.redis is not None
        fields, problems = decode_fields(await _bounded(self.redis.hgetall(CALIBRATION_KEY)))
        state, invalid = parse_state(fields, self.settings)
        controls: dict[str, Control] = {}
        for key, value in (await _bounded(self.redis.hgetall(CONTROL_KEY))).items():
            name = _text(key)
            try:
                controls[name] = parse_control(value, f"{CONTROL_KEY} {name}")
            except ValueError as exc:
                problems[name] = str(exc)
        return state, {**problems, **invalid}, controls

    async def set_control(self, key: str, *, frozen: bool | None = None, reset_at: float | None = None) -> Control:
        """Merge an instruction into the entry's control (raises RedisError)."""
        assert self.redis is not None
        raw = await _bounded(self.redis.hget(CONTROL_KEY, key))
        current = Control()
        if raw is not None:
            try:
                current = parse_control(raw, key)
            except ValueError:
                log.warning("calibration_control_replaced", entry=key, was=_text(raw)[:200])
        control = Control(current.frozen if frozen is None else frozen,
                          current.reset_at if reset_at is None else reset_at)
        await _bounded(self.redis.hset(CONTROL_KEY, key,
                                       json.dumps({"frozen": control.frozen, "reset_at": control.reset_at})))
        log.info("calibration_control", entry=key, frozen=control.frozen, reset_at=control.reset_at)
        return control


def log_step(step: CalibrationStep) -> None:
    """One line per change, with the evidence it rests on (nothing for cycles that change nothing)."""
    for key, v in step.changes():
        ev = v.evidence
        log.info("calibration_changed", entry=key, outcome=v.outcome.value, before=round(v.before, 4),
                 after=round(v.after, 4), why=v.detail, bounded=v.bounded, load=_r(ev.load),
                 latency_ratio=_r(ev.latency_ratio), attainment=_r(ev.attainment), requests=_r(ev.requests),
                 estimate=_r(ev.estimate), replicas_used=ev.replicas_used, replicas_warming=ev.replicas_warming)


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)
