"""Calibration state and controls in a real Redis: restarts keep them, malformed entries cost only
themselves, an outage erases nothing, operator controls survive the service's writes."""

from __future__ import annotations

import json

import pytest
import redis

from optimizer.calibrate import (
    CalibrationSettings,
    CalibrationState,
    Control,
    ModelHeadroom,
    Track,
    VariantCalibration,
    apply_control,
)
from scaler.calibration_store import CALIBRATION_KEY, CONTROL_KEY, CalibrationStore
from scaler.store import connect

pytestmark = pytest.mark.integration
S = CalibrationSettings()
STATE = CalibrationState({"llm/a": VariantCalibration(0.6, updates=4, regions={"in<=1024": Track(0.5, 5)})},
                         {"llm/m": ModelHeadroom(0.88, attainment=0.993)})


async def test_a_restart_continues_with_what_was_learnt(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert await CalibrationStore(client, S).save(STATE)
        again = CalibrationStore(client, S)
        assert await again.load()
        assert again.state == STATE
    finally:
        await client.aclose()


async def test_malformed_entries_are_skipped_and_the_rest_kept(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    plain.hset(CALIBRATION_KEY, mapping={
        "variant:llm/a": json.dumps(STATE.variants["llm/a"].to_json()),
        "variant:llm/bad": json.dumps({"factor": "lots"}),
        "variant:llm/notjson": b"{",
        "model:llm/m": json.dumps(STATE.models["llm/m"].to_json()),
    })
    plain.hset(CONTROL_KEY, mapping={"variant:llm/a": json.dumps({"frozen": True}),
                                     "variant:llm/x": json.dumps({"frozen": "please"})})
    client = connect(redis_url)
    try:
        store = CalibrationStore(client, S)
        assert await store.load()
        assert store.state == STATE
        assert await store.controls() == {"variant:llm/a": Control(frozen=True)}
        state, problems, controls = await store.read()
        assert state == STATE and set(controls) == {"variant:llm/a"}
        assert set(problems) == {"variant:llm/bad", "variant:llm/notjson", "variant:llm/x"}
        assert "factor" in problems["variant:llm/bad"] and "frozen" in problems["variant:llm/x"]
    finally:
        await client.aclose()
        plain.close()


async def test_nothing_is_written_before_the_stored_state_was_read(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    plain.hset(CALIBRATION_KEY, "variant:llm/a", json.dumps(STATE.variants["llm/a"].to_json()))
    down = connect("redis://127.0.0.1:1")  # nothing listens there
    store = CalibrationStore(down, S)
    try:
        assert not await store.save(CalibrationState({"llm/b": VariantCalibration(0.9)}))
        assert store.state.variants["llm/b"].factor == 0.9  # kept in memory meanwhile
    finally:
        await down.aclose()
    client = connect(redis_url)
    try:
        store.redis = client  # Redis is back
        assert await store.save(store.state)
        stored = {k.decode() for k in plain.hkeys(CALIBRATION_KEY)}
        assert stored == {"variant:llm/a", "variant:llm/b"}  # what it had not read was not erased
        assert store.state.variants["llm/a"] == STATE.variants["llm/a"]
    finally:
        await client.aclose()
        plain.close()


async def test_operator_controls_survive_the_services_writes(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        service = CalibrationStore(client, S)
        await service.save(STATE)
        operator = CalibrationStore(client, S)
        await operator.set_control("variant:llm/a", frozen=True)
        await operator.set_control("variant:llm/a", reset_at=100.0)  # merged, not replaced
        await service.save(STATE)  # the service's next write does not touch the controls
        controls = await service.controls()
        assert controls == {"variant:llm/a": Control(frozen=True, reset_at=100.0)}
        applied = apply_control(service.state, controls, S)
        assert applied.variants["llm/a"] == VariantCalibration(frozen=True, reset_seen=100.0)
    finally:
        await client.aclose()
