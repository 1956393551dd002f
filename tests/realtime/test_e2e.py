"""End to end in real time (compressed): the simulated fleet scraped by a real Prometheus, profiles in a real
Redis, `gpumix serve` as a subprocess planning from them, and the KEDA/HPA emulator calling it over real gRPC
(external-push) and setting the fleet's replicas. A load step up and then down: the fleet must follow."""

from __future__ import annotations

import time

import pytest

from sim.demo import Player, Stack, Timing, demo_fleet, step_load

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FAST = Timing(cold_start_s=1.0, interval_s=1.0, fast_interval_s=0.5, polling_s=1.0, hpa_sync_s=1.0,
              scale_down_window_s=4.0, cooldown_s=5.0, rate_window="5s", drain_time_s=5.0)
LOAD_S = 16.0
RPS = 6.0


def test_fleet_follows_a_load_step_up_and_down() -> None:
    spec = demo_fleet(FAST)
    cheapest = min(spec.variants, key=lambda v: v.cost_per_hour).name
    floor = {v.name: (1 if v.name == cheapest else 0) for v in spec.variants}
    completions = []
    with Stack(spec, FAST, min_replicas={cheapest: 1}, seed=7) as stack:
        assert stack.fleet is not None
        stack.fleet.listeners.append(completions.append)
        start = time.monotonic()
        while stack.fleet.replicas(cheapest) != 1 or stack.recommendations()[cheapest] is None:
            assert time.monotonic() - start < 20, f"gpumix never published:\n{stack.serve_tail()}"
            time.sleep(0.2)

        player = Player(stack.fleet, step_load(RPS, LOAD_S, prompt=1024, output=32), until=LOAD_S).start()
        t0 = time.monotonic()
        during: list[int] = []
        recommended: list[int] = []
        while time.monotonic() - t0 < LOAD_S + 2:
            during.append(sum(stack.fleet.replicas(v.name) for v in spec.variants))
            recommended.append(sum(n or 0 for n in stack.recommendations().values()))
            time.sleep(0.5)
        player.stop()

        # Up: one cheap replica cannot carry 6 req/s of 1k-token prompts; gpumix plans more and KEDA/HPA
        # apply it to the fleet.
        assert max(recommended) >= 3, (recommended, stack.serve_tail())
        assert max(during) >= 3, during

        # Down: after the load stops, the scale-down window and cooldown pass and the fleet returns to its
        # floor (one replica of the cheapest variant, everything else at zero).
        deadline = time.monotonic() + 30
        current = {}
        while time.monotonic() < deadline:
            current = {v.name: stack.fleet.replicas(v.name) for v in spec.variants}
            if current == floor:
                break
            time.sleep(0.5)
        assert current == floor, (current, [(n, e.at, e.kind, e.replicas_before, e.replicas_after, e.detail)
                                            for n, e in stack.events][-20:])

        calls = stack.driver.scaler.calls
        assert calls["GetMetricSpec"] > 0 and calls["GetMetrics"] > 0 and calls["IsActive"] > 0
        assert calls["StreamIsActive"] >= len(spec.variants)
        assert not stack.driver.errors
        scale_events = [e for _, e in stack.events if e.kind == "scale"]
        assert any(e.replicas_after > e.replicas_before for e in scale_events)
        assert any(e.replicas_after < e.replicas_before for e in scale_events)

    # Every request sent was served (none dropped), and everything was stopped.
    assert len(completions) == player.sent > 0
    assert not any(c.dropped for c in completions)
    assert stack.serve is not None and stack.serve.poll() is not None
    assert stack.workdir is not None and not stack.workdir.exists()
