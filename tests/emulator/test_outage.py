"""gpumix down for 10 simulated minutes under load, with KEDA as upstream implements it (sim/keda_emulator.py,
every release gpumix supports), on the ScaledObjects `gpumix render` writes.

The documented outage behaviour (deploy/README.md, "When gpumix is down"): every serving variant keeps at
least the replicas it had, no idle variant is started, and after the outage the fleet follows gpumix again.
The same scenario on what render wrote before (fallback replicas 0) scales serving variants to zero, and a
fallback with replicas > 0 wakes idle variants from KEDA 2.19: both are checked to fail here, so the test
can tell.
"""

from __future__ import annotations

from typing import Any

import pytest

from scaler.inventory import ModelInfo, VariantInfo
from scaler.render import RenderOptions, scaled_object
from sim.hpa_emulator import RecommendationScaler
from sim.keda_emulator import (
    MetricSpec,
    MetricValue,
    ScaledObjectEmulator,
    ScaledObjectRef,
    ScalerCallError,
    parse_scaled_object,
)

MODEL = ModelInfo("m", "llm", tuple(
    VariantInfo(name=f"m-{gpu}", model="m", namespace="llm", max_replicas=8, scale_down_window_s=300)
    for gpu in ("l4", "a10g", "l40s", "a100")))
# Under load: two variants serve, two are idle (the planner chose the cheaper mix).
BEFORE = {"m-l4": 3, "m-a10g": 2, "m-l40s": 0, "m-a100": 0}
OUTAGE_START, OUTAGE_END, END = 300.0, 900.0, 1500.0
VERSIONS = [(2, 17), (2, 18), (2, 19), (2, 20)]


class Gpumix:
    """gpumix as KEDA sees it: answers like the service (scaler.metric via RecommendationScaler), or, during
    the outage, `killed` (every rpc fails: connection refused) or `stale` (up, but no fresh data: GetMetrics
    answers UNAVAILABLE; IsActive still answers)."""

    def __init__(self, fleet: dict[str, int], mode: str) -> None:
        self.fleet = fleet
        self.mode = mode
        self.down = False
        # The load keeps growing during the outage: gpumix would ask for more if it could.
        self.recommendation = dict(BEFORE)
        self.inner = RecommendationScaler(lambda ref: self.recommendation[ref.name], lambda ref: self.fleet[ref.name])

    def _refuse(self, rpc: str) -> None:
        if self.down and (self.mode == "killed" or rpc == "GetMetrics"):
            raise ScalerCallError("UNAVAILABLE", "connection refused" if self.mode == "killed" else "stale data")

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        self._refuse("GetMetricSpec")
        return self.inner.get_metric_spec(ref)

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        self._refuse("GetMetrics")
        return self.inner.get_metrics(ref, metric_name)

    def is_active(self, ref: ScaledObjectRef) -> bool:
        self._refuse("IsActive")
        return self.inner.is_active(ref)


def run_outage(manifests: list[dict[str, Any]], version: tuple[int, int], mode: str
               ) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Replicas per variant during the outage, and at the end (after recovery)."""
    fleet = dict(BEFORE)
    gpumix = Gpumix(fleet, mode)
    emus = {m["metadata"]["name"]: ScaledObjectEmulator(parse_scaled_object(m), gpumix, created_at=0.0,
                                                         keda_version=version) for m in manifests}
    during: dict[str, list[int]] = {name: [] for name in emus}
    t = 0.0
    while t <= END:
        gpumix.down = OUTAGE_START <= t < OUTAGE_END
        if t == OUTAGE_START:
            gpumix.recommendation.update({"m-l4": 5, "m-a10g": 3})
        for name, emu in emus.items():
            fleet[name] = emu.advance(t, fleet[name])
            if gpumix.down:
                during[name].append(fleet[name])
        t += 1.0
    return during, fleet


def rendered(**options: Any) -> list[dict[str, Any]]:
    return [scaled_object(MODEL, v, RenderOptions(**options)) for v in MODEL.variants]


@pytest.mark.parametrize("mode", ["killed", "stale"])
@pytest.mark.parametrize("push", [False, True])
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"keda-{v[0]}.{v[1]}")
def test_outage_keeps_serving_variants_and_wakes_nothing(version: tuple[int, int], push: bool, mode: str) -> None:
    during, after = run_outage(rendered(push=push), version, mode)
    for name, before in BEFORE.items():
        assert min(during[name]) >= before, f"{name} dropped to {min(during[name])} during the outage"
        if before == 0:
            assert max(during[name]) == 0, f"idle {name} was started during the outage"
    # After recovery gpumix's recommendation (raised during the outage) is applied.
    assert (after["m-l4"], after["m-a10g"], after["m-l40s"], after["m-a100"]) == (5, 3, 0, 0)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"keda-{v[0]}.{v[1]}")
def test_old_rendered_fallback_scaled_serving_variants_to_zero(version: tuple[int, int]) -> None:
    """What render wrote before: fallback {failureThreshold: 3, replicas: 0, currentReplicasIfHigher}. With
    gpumix unreachable, RequestScale takes the scale-to-zero path once cooldownPeriod (300 s) has passed."""
    old = rendered()
    for m in old:
        m["spec"]["fallback"] = {"failureThreshold": 3, "replicas": 0, "behavior": "currentReplicasIfHigher"}
    during, _ = run_outage(old, version, "killed")
    assert min(during["m-l4"]) == 0 and min(during["m-a10g"]) == 0


@pytest.mark.parametrize(("version", "woken"), [((2, 18), False), ((2, 19), True), ((2, 20), True)])
def test_nonzero_fallback_wakes_idle_variants_from_2_19(version: tuple[int, int], woken: bool) -> None:
    with_fallback = rendered()
    for m in with_fallback:
        m["spec"]["fallback"] = {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    during, _ = run_outage(with_fallback, version, "stale")
    assert (max(during["m-a100"]) > 0) == woken
