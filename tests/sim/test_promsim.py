"""The replay's Prometheus (sim/promsim.py) on the evidence's KV-cache query, and the evidence it becomes."""

from __future__ import annotations

import pytest

from optimizer.ids import VariantId
from scaler import vector
from scaler.config import Config
from scaler.evidence import parse_evidence
from sim.promsim import TSDB, Sample, SimPrometheus

CONFIG = Config(prometheus="http://unused", calibration_window="2m")
POD = {"namespace": "llm", "model_name": "m", "variant": "v", "pod": "v-1"}


def _scrape(tsdb: TSDB, t: float, v1: float | None, v0: float | None = None, pod: dict[str, str] = POD) -> None:
    samples = [Sample("vllm:kv_cache_usage_perc", pod, v1)] if v1 is not None else []
    samples += [Sample("vllm:gpu_cache_usage_perc", pod, v0)] if v0 is not None else []
    tsdb.scrape(t, samples)


@pytest.mark.parametrize(("case", "scrapes", "peak"), [
    # max_over_time (promql/functions.go, funcMaxOverTime) over the samples with t - 2m <= ts <= t
    ("the fullest sample in the window", [(0.0, 0.9), (60.0, 0.4), (120.0, 0.7), (180.0, 0.5)], 0.7),
    ("a sample on the range's start counts", [(60.0, 0.8), (180.0, 0.2)], 0.8),
    ("older samples do not", [(50.0, 0.95), (100.0, 0.3), (180.0, 0.2)], 0.3),
])
def test_kv_peak_is_max_over_the_calibration_window(case: str, scrapes: list[tuple[float, float]], peak: float) -> None:
    tsdb = TSDB()
    for t, v in scrapes:
        _scrape(tsdb, t, v)
    (answer,) = SimPrometheus(CONFIG, tsdb).query("evidence_kv_peak", 180.0)
    assert answer.number == pytest.approx(peak)
    completed = vector.Sample(dict(POD), (180.0, "120"))
    evidence = parse_evidence(CONFIG, {"evidence_kv_peak": [answer], "evidence_completed": [completed]})
    assert evidence[VariantId("llm", "v")].pods["v-1"].kv_peak == pytest.approx(peak)


def test_kv_peak_falls_back_to_the_v0_gauge_only_where_v1_is_missing() -> None:
    """`a or b` (promql/engine.go, VectorOr): vLLM before V1 exports only gpu_cache_usage_perc."""
    tsdb = TSDB()
    other = {**POD, "pod": "v-2"}
    tsdb.scrape(100.0, [Sample("vllm:kv_cache_usage_perc", POD, 0.3), Sample("vllm:gpu_cache_usage_perc", POD, 0.9),
                        Sample("vllm:gpu_cache_usage_perc", other, 0.6)])
    answers = SimPrometheus(CONFIG, tsdb).query("evidence_kv_peak", 120.0)
    assert {a.metric["pod"]: a.number for a in answers} == {"v-1": pytest.approx(0.3), "v-2": pytest.approx(0.6)}


def test_a_pod_without_a_kv_gauge_has_no_peak() -> None:
    tsdb = TSDB()
    _scrape(tsdb, 100.0, None)
    assert SimPrometheus(CONFIG, tsdb).query("evidence_kv_peak", 120.0) == []
