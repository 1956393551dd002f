"""The calibration's evidence from Prometheus: per variant, each pod's latency histograms, completions and
age over the calibration window, the waiting queue at both ends and the variant's length mix
(`optimizer.calibrate.VariantEvidence`). `gpumix serve` asks for it every `calibration_interval`
(scaler/loop.py); `gpumix calibrate` once. The replay answers the same queries from its TSDB.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from optimizer.calibrate import PodEvidence, VariantEvidence
from optimizer.ids import VariantId
from scaler.config import EVIDENCE_QUERIES, Config
from scaler.vector import Sample, Samples

LATENCY = {"evidence_ttft": "ttft", "evidence_tpot": "tpot", "evidence_e2e": "e2e"}


class QueryRunner(Protocol):
    async def run_queries(self, names: Sequence[str], at: float, deadline: float | None = None, *,
                          health: bool = True) -> tuple[dict[str, Samples], dict[str, str]]: ...


class _Variant:
    def __init__(self) -> None:
        self.completed: dict[str, float] = {}
        self.ages: dict[str, float] = {}
        self.kv_peaks: dict[str, float] = {}
        self.latency: dict[str, dict[str, list[tuple[float, float]]]] = {}
        self.waiting = {"evidence_waiting_start": 0.0, "evidence_waiting_end": 0.0}
        self.lengths: dict[str, list[tuple[float, float]]] = {}


class _Builder:
    """Evidence assembled one query's answer at a time, so no answer has to be kept once it is read."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.found: dict[VariantId, _Variant] = {}

    def _rows(self, samples: Sequence[Sample]) -> list[tuple[VariantId, Mapping[str, str], float]]:
        out: list[tuple[VariantId, Mapping[str, str], float]] = []
        for s in samples:
            labels = s.metric
            ns, variant = labels.get(self.config.namespace_label, ""), labels.get(self.config.variant_label, "")
            if ns and variant and (v := s.number) is not None:
                out.append((VariantId(ns, variant), labels, v))
        return out

    def add(self, name: str, samples: Sequence[Sample]) -> None:
        found = self.found
        for vid, labels, v in self._rows(samples):
            f = found.setdefault(vid, _Variant())
            pod = labels.get("pod", "")
            if name == "evidence_completed":
                f.completed[pod] = v
            elif name == "evidence_age":
                f.ages[pod] = v
            elif name == "evidence_kv_peak":
                f.kv_peaks[pod] = v
            elif name in LATENCY and (le := labels.get("le")) is not None:
                f.latency.setdefault(pod, {}).setdefault(LATENCY[name], []).append((float(le), v))
            elif name in ("evidence_waiting_start", "evidence_waiting_end"):
                f.waiting[name] += v
            elif name in ("evidence_prompt_histogram", "evidence_generation_histogram") and (
                    le := labels.get("le")) is not None:
                f.lengths.setdefault(name, []).append((float(le), v))

    def build(self) -> dict[VariantId, VariantEvidence]:
        out = {}
        for vid, f in self.found.items():
            pods = {pod: PodEvidence(f.ages.get(pod), f.completed.get(pod, 0.0), f.latency.get(pod, {}),
                                     f.kv_peaks.get(pod))
                    for pod in set(f.completed) | set(f.latency)}
            out[vid] = VariantEvidence(self.config.calibration_window_s, pods, f.waiting["evidence_waiting_start"],
                                       f.waiting["evidence_waiting_end"], f.lengths.get("evidence_prompt_histogram"),
                                       f.lengths.get("evidence_generation_histogram"))
        return out


def parse_evidence(config: Config, results: Mapping[str, Samples]) -> dict[VariantId, VariantEvidence]:
    """Query answers → evidence per variant. NaN/Inf/negative samples are dropped: a histogram that loses a
    bucket that way is then refused by `LatencyHistogram.from_buckets` for that pod alone."""
    builder = _Builder(config)
    for name in EVIDENCE_QUERIES:
        builder.add(name, results.get(name, []))
    return builder.build()


async def collect(config: Config, source: QueryRunner, at: float, deadline: float | None = None
                  ) -> dict[VariantId, VariantEvidence] | None:
    """This window's evidence, or None when any of its queries failed (half the evidence would misjudge a
    variant: latency without completions, say); the Observer has logged and counted the failure.

    One query at a time under one deadline, each answer reduced to evidence before the next is asked: per
    pod and bucket the answers are the largest gpumix reads, and at 4,000 pods holding them all at once as
    decoded JSON cost ~230 MiB (BENCHMARKS.md "cycle")."""
    budget = config.prometheus_timeout if deadline is None else deadline
    until = time.monotonic() + budget
    builder = _Builder(config)
    for name in EVIDENCE_QUERIES:
        results, errors = await source.run_queries((name,), at, max(until - time.monotonic(), 0.0), health=False)
        if errors:
            return None
        builder.add(name, results.get(name, []))
        del results
    return builder.build()
