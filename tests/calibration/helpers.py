"""Deterministic latency histograms and windows for the calibration tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optimizer.calibrate import LatencyHistogram, ModelWindow, ReplicaWindow, VariantWindow
from optimizer.profile import SLO

# vLLM's TTFT bucket bounds (vllm/v1/metrics/loggers.py, as sim/realtime.py carries them).
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
SLO_TTFT = SLO(percentile="99", ttft=1.0)
MATURE = 10_000.0


def histogram(values: Sequence[float], bounds: Sequence[float] = TTFT_BOUNDS) -> LatencyHistogram:
    pairs = [(b, float(sum(1 for v in values if v <= b))) for b in bounds]
    return LatencyHistogram.from_buckets([*pairs, (math.inf, float(len(values)))])


def exponential(n: int, p99: float) -> list[float]:
    """n latencies at the quantiles of an exponential whose 99th percentile is `p99`: the share above a limit
    L is 100^(-L/p99) — 1 % at p99 = L, 10 % at p99 = 2L."""
    scale = p99 / math.log(100)
    return [-scale * math.log(1 - (i + 0.5) / n) for i in range(n)]


def ttft(n: int, ratio: float) -> dict[str, LatencyHistogram]:
    """TTFT histogram of n requests whose 99th percentile is `ratio` × the 1 s limit."""
    return {"ttft": histogram(exponential(n, ratio * SLO_TTFT.ttft))}  # type: ignore[operator]


def window(*, load: float, ratio: float, replicas: int = 4, completed: float | None = None,
           ages: Sequence[float] | None = None, waiting_growth: float = 0.0, window_s: float = 60.0,
           predicted: float | None = 10.0, regions: dict[str, float] | None = None,
           variant: str = "llm/v", unservable: float | None = None, kv_peak: float | None = None) -> VariantWindow:
    """A variant running at `load` × its raw profile capacity (10 req/s per replica by default), with
    requests spread evenly over its replicas, whose TTFT tail sits at `ratio` × the limit."""
    ages = [MATURE] * replicas if ages is None else list(ages)
    per = load * (predicted or 1.0) * window_s if completed is None else completed
    reps = tuple(ReplicaWindow(age_s=a, completed=per, histograms=ttft(max(1, round(per)), ratio), kv_peak=kv_peak)
                 for a in ages)
    return VariantWindow(variant, window_s, reps, predicted, SLO_TTFT, 0.0, waiting_growth * len(ages),
                         regions or {}, unservable)


def model_window(*, requests: int, ratio: float, load: float | None, model: str = "llm/m") -> ModelWindow:
    return ModelWindow(model, SLO_TTFT, ttft(requests, ratio), load)
