"""Demand from what Prometheus reports for one model (DESIGN step 2), as a pure function.

rate = completions + waiting / drain_time (completions alone under-count a saturated fleet), spread over the
grid by the prompt and generation length histograms (marginals, independence assumed); token rates give the
lengths when the histograms are missing and cross-check them when both exist; with no lengths at all the
demand goes to the longest bucket, the conservative side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from optimizer.demand import Demand, from_buckets, from_histograms
from optimizer.profile import Grid

Cumulative = Sequence[tuple[float, float]]  # (le, cumulative count) as a Prometheus histogram gives it


@dataclass(frozen=True)
class LengthFacts:
    """The model's length signals over the rate window."""

    prompt_histogram: Cumulative = ()
    generation_histogram: Cumulative = ()
    prompt_tokens_rps: float | None = None
    generation_tokens_rps: float | None = None


@dataclass(frozen=True)
class Estimate:
    demand: Demand
    source: str  # "histograms", "token_rates" or "no_lengths"
    crosscheck: float | None  # histogram mean prompt length / token-rate mean prompt length
    requests: float | None = None  # how many requests the length mix was measured on (histograms only)


def histogram_mean(cumulative: Cumulative) -> float | None:
    """Mean length from cumulative `le` buckets, each bin at its midpoint (the +Inf bin at its lower edge)."""
    total, weighted, prev_le, prev_count = 0.0, 0.0, 0.0, 0.0
    for le, count in sorted(cumulative):
        mass = count - prev_count
        if mass > 0:
            point = prev_le if not math.isfinite(le) else (prev_le + le) / 2
            weighted += mass * point
            total += mass
        if math.isfinite(le):
            prev_le = le
        prev_count = max(prev_count, count)
    return weighted / total if total > 0 else None


def _has_mass(hist: Cumulative) -> bool:
    return any(count > 0 for _, count in hist)


def estimate_demand(model: str, completions_rps: float, waiting: float, lengths: LengthFacts, grid: Grid,
                    drain_time: float) -> Estimate:
    total = completions_rps + waiting / drain_time
    token_shape: tuple[float, float] | None = None
    if completions_rps > 0 and lengths.prompt_tokens_rps is not None and lengths.generation_tokens_rps is not None:
        token_shape = (lengths.prompt_tokens_rps / completions_rps, lengths.generation_tokens_rps / completions_rps)
    if _has_mass(lengths.prompt_histogram) and _has_mass(lengths.generation_histogram):
        demand = from_histograms(model, grid, lengths.prompt_histogram, lengths.generation_histogram, total)
        crosscheck = None
        hist_mean = histogram_mean(lengths.prompt_histogram)
        if token_shape is not None and hist_mean is not None and token_shape[0] > 0:
            crosscheck = hist_mean / token_shape[0]
        requests = max(count for _, count in lengths.prompt_histogram)  # the +Inf bucket: every request
        return Estimate(demand, "histograms", crosscheck, requests)
    if token_shape is not None:
        return Estimate(from_buckets(model, grid, [(token_shape[0], token_shape[1], total)]), "token_rates", None)
    return Estimate(from_histograms(model, grid, [], [], total), "no_lengths", None)
