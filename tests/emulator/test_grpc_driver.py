"""The emulator's gRPC side against the project's real ExternalScaler servicer (scaler/keda.py) on a real
loopback channel: status codes arrive as KEDA sees them, a StreamIsActive stream is held and its messages
delivered, KEDA's fallback engages on a scaler that keeps answering UNAVAILABLE and not when GetMetricSpec
itself fails."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from optimizer.hpa import Behavior, ScalingPolicy, ScalingRules
from optimizer.ids import VariantId
from scaler import keda
from scaler.config import Config
from scaler.table import Published, Table, VariantView
from sim.keda_emulator import Fallback, ScaledObjectEmulator, ScaledObjectRef, ScaledObjectSpec, ScalerCallError
from sim.keda_grpc import GrpcExternalScaler

pytestmark = pytest.mark.integration


@pytest.fixture()
def table() -> Table:
    return Table()


@pytest.fixture()
async def scaler(table: Table) -> object:
    server = await keda.start(table, Config(), port=0)
    client = GrpcExternalScaler(f"127.0.0.1:{server.port}")
    yield client
    client.close()
    await server.stop(grace=0.1)


async def test_status_codes_reach_the_emulator(scaler: GrpcExternalScaler) -> None:
    missing_variant = ScaledObjectRef("so", "llm", {"scalerAddress": "x", "model": "m"})
    with pytest.raises(ScalerCallError) as err:
        await asyncio.to_thread(scaler.get_metric_spec, missing_variant)
    assert err.value.code == "INVALID_ARGUMENT" and "variant" in err.value.message

    unknown = ScaledObjectRef("so", "llm", {"scalerAddress": "x", "model": "m", "variant": "m-l4"})
    with pytest.raises(ScalerCallError) as err:
        await asyncio.to_thread(scaler.get_metrics, unknown, "gpumix-llm-m-l4")
    assert err.value.code == "NOT_FOUND"
    # IsActive never fails for missing data: it says "not active".
    assert await asyncio.to_thread(scaler.is_active, unknown) is False
    assert scaler.calls["GetMetricSpec"] == 1 and scaler.calls["GetMetrics"] == 1 and scaler.calls["IsActive"] == 1


async def test_stream_is_active_is_held_and_delivered(scaler: GrpcExternalScaler) -> None:
    ref = ScaledObjectRef("so", "llm", {"scalerAddress": "x", "model": "m", "variant": "m-l4"})
    got: list[bool] = []
    first = threading.Event()
    stop = threading.Event()

    def on_message(active: bool) -> None:
        got.append(active)
        first.set()

    t = threading.Thread(target=scaler.hold_stream, args=(ref, on_message, stop), daemon=True)
    t.start()
    assert await asyncio.to_thread(first.wait, 10)
    assert got[0] is False
    stop.set()
    await asyncio.to_thread(t.join, 10)
    assert not t.is_alive()
    assert scaler.calls["StreamIsActive"] == 1


def _spec() -> ScaledObjectSpec:
    fast_down = Behavior(scale_down=ScalingRules(0.0, (ScalingPolicy("Percent", 100, 15.0),)))
    return ScaledObjectSpec(name="so", namespace="llm", deployment="m-l4",
                            metadata={"scalerAddress": "x", "model": "m", "variant": "m-l4"},
                            min_replicas=1, fallback=Fallback(failure_threshold=2, replicas=5), behavior=fast_down)


async def run(emu: ScaledObjectEmulator, replicas: int, syncs: range) -> int:
    for k in syncs:
        replicas = await asyncio.to_thread(emu.advance, 15.0 * k, replicas)
    return replicas


async def test_no_fallback_when_get_metric_spec_fails(scaler: GrpcExternalScaler) -> None:
    """NOT_FOUND from GetMetricSpec (unknown variant): KEDA has no metric target to fall back with, so it
    reports errors and the HPA holds the current count (scalers_cache.go GetMetricSpecForScalingForScaler:
    "got empty metric spec" after one retry; fallback.go is never reached)."""
    emu = ScaledObjectEmulator(_spec(), scaler, created_at=0.0)
    replicas = await run(emu, 2, range(6))
    assert replicas == 2
    assert {e.kind for e in emu.events if e.kind in ("error", "fallback")} == {"error"}
    assert "got empty metric spec" in next(e.detail for e in emu.events if e.kind == "error")
    assert emu.failures == 0


async def test_fallback_engages_and_recovers_over_a_real_channel(scaler: GrpcExternalScaler, table: Table) -> None:
    vid = VariantId("llm", "m-l4")
    view = VariantView(id=vid, model="m", profile_status="ok")
    table.publish(Published(variants={vid: view}))
    # KEDA 2.18: only the HPA's reads count failures (from 2.19 the scale loop's polls count too).
    emu = ScaledObjectEmulator(_spec(), scaler, created_at=0.0, keda_version=(2, 18))
    # No recommendation yet: GetMetrics answers UNAVAILABLE; syncs at 0 and 15 fail (failures 1, 2), the
    # one at 30 passes the threshold and KEDA reports fallback.replicas.
    replicas = await run(emu, 2, range(3))
    kinds = [e.kind for e in emu.events if e.kind in ("error", "fallback")]
    assert kinds == ["error", "error", "fallback"]
    assert "UNAVAILABLE" in next(e.detail for e in emu.events if e.kind == "error")
    assert replicas == 5
    table.publish(Published(variants={vid: dataclasses.replace(
        view, recommendation=3, decided_at=time.time(), current=5)}))
    replicas = await run(emu, replicas, range(3, 5))
    assert replicas == 3
    assert emu.failures == 0
