"""The calibration's evidence from Prometheus: per variant, each pod's latency histograms, completions and
age over the calibration window, the waiting queue at both ends and the variant's length mix
(`optimizer.calibrate.VariantEvidence`). `gpumix serve` asks for it every `calibration_interval`
(scaler/loop.py); `gpumix calibrate` once. The replay answers the same queries from its TSDB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from optimizer.calibrate import PodEvidence, VariantEvidence
from optimizer.ids import VariantId
from scaler.config import EVIDENCE_QUERIES, Config

LATENCY = {"evidence_ttft": "ttft", "evidence_tpot": "tpot", "evidence_e2e": "e2e"}


class QueryRunner(Protocol):
    async def run_queries(self, names: Sequence[str], at: float, deadline: float | None = None
                          ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]: ...


def _value(sample: Mapping[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


class _Variant:
    def __init__(self) -> None:
        self.completed: dict[str, float] = {}
        self.ages: dict[str, float] = {}
        self.latency: dict[str, dict[str, list[tuple[float, float]]]] = {}
        self.waiting = {"evidence_waiting_start": 0.0, "evidence_waiting_end": 0.0}
        self.lengths: dict[str, list[tuple[float, float]]] = {}


def parse_evidence(config: Config, results: Mapping[str, list[dict[str, Any]]]) -> dict[VariantId, VariantEvidence]:
    """Query answers → evidence per variant. NaN/Inf/negative samples are dropped: a histogram that loses a
    bucket that way is then refused by `LatencyHistogram.from_buckets` for that pod alone."""
    window_s = config.calibration_window_s
    found: dict[VariantId, _Variant] = {}

    def rows(name: str) -> list[tuple[VariantId, Mapping[str, str], float]]:
        out = []
        for s in results.get(name, []):
            labels = s.get("metric", {})
            ns, variant = labels.get(config.namespace_label, ""), labels.get(config.variant_label, "")
            if ns and variant and (v := _value(s)) is not None:
                out.append((VariantId(ns, variant), labels, v))
        return out

    def at(vid: VariantId) -> _Variant:
        return found.setdefault(vid, _Variant())

    for vid, labels, v in rows("evidence_completed"):
        at(vid).completed[labels.get("pod", "")] = v
    for vid, labels, v in rows("evidence_age"):
        at(vid).ages[labels.get("pod", "")] = v
    for name, metric in LATENCY.items():
        for vid, labels, v in rows(name):
            if (le := labels.get("le")) is not None:
                at(vid).latency.setdefault(labels.get("pod", ""), {}).setdefault(metric, []).append((float(le), v))
    for name in ("evidence_waiting_start", "evidence_waiting_end"):
        for vid, _, v in rows(name):
            at(vid).waiting[name] += v
    for name in ("evidence_prompt_histogram", "evidence_generation_histogram"):
        for vid, labels, v in rows(name):
            if (le := labels.get("le")) is not None:
                at(vid).lengths.setdefault(name, []).append((float(le), v))

    out = {}
    for vid, f in found.items():
        pods = {pod: PodEvidence(f.ages.get(pod), f.completed.get(pod, 0.0), f.latency.get(pod, {}))
                for pod in set(f.completed) | set(f.latency)}
        out[vid] = VariantEvidence(window_s, pods, f.waiting["evidence_waiting_start"],
                                   f.waiting["evidence_waiting_end"], f.lengths.get("evidence_prompt_histogram"),
                                   f.lengths.get("evidence_generation_histogram"))
    return out


async def collect(config: Config, source: QueryRunner, at: float, deadline: float | None = None
                  ) -> dict[VariantId, VariantEvidence] | None:
    """This window's evidence, or None when any of its queries failed (half the evidence would misjudge a
    variant: latency without completions, say); the Observer has logged and counted the failure."""
    results, errors = await source.run_queries(EVIDENCE_QUERIES, at, deadline)
    if errors:
        return None
    return parse_evidence(config, results)
