"""gpumix down for a while, with KEDA as upstream implements it (sim/keda_emulator.py) driving a fleet on a
simulated clock: the scenario behind tests/emulator/test_outage.py and bench/bench_outage.py.

Two variants serve, two are idle; during the outage gpumix is either `killed` (every rpc fails: connection
refused) or `stale` (up, but its data is stale: GetMetrics answers UNAVAILABLE, IsActive still answers). The
load keeps growing meanwhile, so after the outage gpumix asks for more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scaler.inventory import ModelInfo, VariantInfo
from scaler.render import RenderOptions, scaled_object
from sim.hpa_emulator import RecommendationScaler
from sim.keda_emulator import (
    KedaVersion,
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
BEFORE: Mapping[str, int] = {"m-l4": 3, "m-a10g": 2, "m-l40s": 0, "m-a100": 0}
DURING: Mapping[str, int] = {"m-l4": 5, "m-a10g": 3, "m-l40s": 0, "m-a100": 0}  # what gpumix would ask for
OUTAGE_START_S, OUTAGE_END_S, END_S = 300.0, 900.0, 1500.0


class StandInGpumix:
    """gpumix as KEDA sees it: answers like the service (RecommendationScaler → scaler.metric), or not."""

    def __init__(self, fleet: dict[str, int], mode: str) -> None:
        if mode not in ("killed", "stale"):
            raise ValueError(f"mode: killed or stale, got {mode!r}")
        self.fleet = fleet
        self.mode = mode
        self.down = False
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


@dataclass(frozen=True)
class OutageResult:
    during: Mapping[str, Sequence[int]]  # replicas per second of outage, per variant
    after: Mapping[str, int]

    @property
    def serving_lost(self) -> int:
        """Replicas of serving variants missing at the worst moment, against what ran before."""
        return sum(max(0, BEFORE[v] - min(self.during[v])) for v in BEFORE if BEFORE[v] > 0)

    @property
    def idle_started(self) -> int:
        """Replicas of idle variants started at the worst moment."""
        return sum(max(self.during[v]) for v in BEFORE if BEFORE[v] == 0)

    @property
    def extra_replica_hours(self) -> float:
        """Replica-hours run during the outage beyond holding what ran before."""
        return sum(sum(n - BEFORE[v] for n in self.during[v] if n > BEFORE[v]) for v in BEFORE) / 3600.0


def rendered(**options: Any) -> list[dict[str, Any]]:
    return [scaled_object(MODEL, v, RenderOptions(**options)) for v in MODEL.variants]


def run_outage(manifests: Sequence[Mapping[str, Any]], version: KedaVersion, mode: str) -> OutageResult:
    fleet = dict(BEFORE)
    gpumix = StandInGpumix(fleet, mode)
    emus = {m["metadata"]["name"]: ScaledObjectEmulator(parse_scaled_object(m), gpumix, created_at=0.0,
                                                         keda_version=version) for m in manifests}
    during: dict[str, list[int]] = {name: [] for name in emus}
    t = 0.0
    while t <= END_S:
        gpumix.down = OUTAGE_START_S <= t < OUTAGE_END_S
        if t == OUTAGE_START_S:
            gpumix.recommendation.update(DURING)
        for name, emu in emus.items():
            fleet[name] = emu.advance(t, fleet[name])
            if gpumix.down:
                during[name].append(fleet[name])
        t += 1.0
    return OutageResult(during, dict(fleet))
