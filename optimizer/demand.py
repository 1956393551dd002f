"""Demand: a model's request rate (req/s) per (input, output) bucket of a grid.

Three ways in: explicit buckets, a window of a request trace, or two marginal length histograms (as
Prometheus gives them, cumulative `le` buckets) with a total rate. Lengths are bucketed the way profiles
are: a request belongs to the first tick at or above its length.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.errors import InputError
from optimizer.profile import FloatArray, Grid


class DemandError(InputError):
    """A demand (file or estimate) that cannot be used."""


@dataclass(frozen=True)
class Demand:
    model: str
    grid: Grid
    rates: FloatArray  # shape grid.shape, [output tick][input tick], req/s

    def __post_init__(self) -> None:
        if self.rates.shape != self.grid.shape:
            raise DemandError(self.model, [f"rates: shape {self.rates.shape} does not match grid {self.grid.shape}"])
        if not np.all(np.isfinite(self.rates)) or np.any(self.rates < 0):
            raise DemandError(self.model, ["rates: must be finite and non-negative"])

    @property
    def total(self) -> float:
        return float(self.rates.sum())

    def scaled(self, factor: float) -> Demand:
        return Demand(self.model, self.grid, self.rates * factor)

    def on(self, grid: Grid) -> Demand:
        """The same requests bucketed on another grid (each cell moves to the first target tick at or above
        its own ticks, so requests never get shorter)."""
        if grid == self.grid:
            return self
        out_idx, in_idx = grid.indices(
            np.asarray(self.grid.inputs)[None, :].repeat(len(self.grid.outputs), 0),
            np.asarray(self.grid.outputs)[:, None].repeat(len(self.grid.inputs), 1),
        )
        rates = np.zeros(grid.shape)
        np.add.at(rates, (out_idx.ravel(), in_idx.ravel()), self.rates.ravel())
        return Demand(self.model, grid, rates)

    def to_json(self) -> dict[str, Any]:
        buckets = [
            {"input_tokens": i_t, "output_tokens": o_t, "rps": float(self.rates[i, j])}
            for i, o_t in enumerate(self.grid.outputs)
            for j, i_t in enumerate(self.grid.inputs)
            if self.rates[i, j] > 0
        ]
        return {"model": self.model, "buckets": buckets}


def zero_demand(model: str, grid: Grid) -> Demand:
    return Demand(model, grid, np.zeros(grid.shape))


def from_buckets(model: str, grid: Grid, buckets: Iterable[tuple[float, float, float]]) -> Demand:
    """(input tokens, output tokens, req/s) triples; each lands in its round-up bucket."""
    rates = np.zeros(grid.shape)
    for input_tokens, output_tokens, rps in buckets:
        rates[grid.index(input_tokens, output_tokens)] += rps
    return Demand(model, grid, rates)


def parse_demand(data: Any, grid: Grid, source: str = "demand") -> Demand:
    """The demand file: {"model": ..., "buckets": [{"input_tokens", "output_tokens", "rps"}]}."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise DemandError(source, ["document: must be a JSON object with 'model' and 'buckets'"])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        problems.append("model: must be a non-empty string")
    raw = data.get("buckets")
    triples: list[tuple[float, float, float]] = []
    if not isinstance(raw, list):
        problems.append("buckets: must be a list of {input_tokens, output_tokens, rps}")
        raw = []
    for n, b in enumerate(raw):
        vals = []
        for key in ("input_tokens", "output_tokens", "rps"):
            v = b.get(key) if isinstance(b, Mapping) else None
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                problems.append(f"buckets[{n}].{key}: must be a finite non-negative number, got {v!r}")
            else:
                vals.append(float(v))
        if len(vals) == 3:
            triples.append((vals[0], vals[1], vals[2]))
    if problems:
        raise DemandError(source, problems)
    return from_buckets(str(model), grid, triples)


def from_trace(
    model: str,
    grid: Grid,
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    window_seconds: float,
) -> Demand:
    """Requests seen during one window (arrays of lengths, one entry per request) → rates."""
    if window_seconds <= 0:
        raise DemandError(model, [f"window_seconds: must be positive, got {window_seconds}"])
    rates = np.zeros(grid.shape)
    inputs = np.asarray(input_tokens)
    if inputs.size:
        out_idx, in_idx = grid.indices(inputs, np.asarray(output_tokens))
        np.add.at(rates, (out_idx, in_idx), 1.0)
    return Demand(model, grid, rates / window_seconds)


def histogram_shares(cumulative: Sequence[tuple[float, float]], ticks: Sequence[int]) -> FloatArray:
    """Share of requests per grid tick from a cumulative Prometheus histogram [(le, count), ...].

    Each histogram bin (lo, hi] is spread over the grid buckets it overlaps, in proportion to the overlap
    (uniform within the bin); the +Inf bin and anything past the last tick go to the last bucket. An empty
    histogram gives all-zero shares (the caller decides what no data means)."""
    bins = sorted((float(le), float(c)) for le, c in cumulative)
    shares = np.zeros(len(ticks))
    edges: list[float] = []  # the finite upper edges, in order; bin i spans (edges[i-1] or 0, edges[i]]
    masses: list[float] = []  # requests in bin i (0 where the counts do not rise)
    prev_count = 0.0
    for le, count in bins:
        mass = count - prev_count
        if not math.isfinite(count) or mass <= 0:
            prev_count, mass = max(prev_count, count if math.isfinite(count) else prev_count), 0.0
        else:
            prev_count = count
        if not math.isfinite(le):
            shares[-1] += mass
        else:
            edges.append(le)
            masses.append(mass)
    if any(masses):
        shares += np.asarray(masses) @ _bin_weights(tuple(edges), tuple(ticks))
    total = shares.sum()
    return shares / total if total > 0 else shares


@functools.lru_cache(maxsize=256)
def _bin_weights(edges: tuple[float, ...], ticks: tuple[int, ...]) -> FloatArray:
    """[bin, tick]: the share of bin i's requests that falls in grid bucket j. Every vLLM server has the same
    bucket edges and a model's grid changes rarely, so at 1,000 models the 2,000 histograms a cycle share a
    handful of these matrices."""
    hi = np.asarray(ticks, dtype=np.float64)
    lo = np.concatenate(([0.0], hi[:-1]))
    hi_b = np.asarray(edges, dtype=np.float64)[:, None]
    lo_b = np.concatenate(([0.0], hi_b[:-1, 0]))[:, None]
    overlap = np.maximum(0.0, np.minimum(hi, hi_b) - np.maximum(lo, lo_b))
    overlap[:, -1] += np.maximum(0.0, hi_b[:, 0] - np.maximum(hi[-1], lo_b[:, 0]))
    width = hi_b - lo_b
    wide = width[:, 0] > 0
    weights = np.zeros((len(edges), len(ticks)))
    weights[wide] = overlap[wide] / width[wide]
    # a zero-width bin is a point: its requests go to the bucket holding it (past the last tick: the last)
    for i in np.flatnonzero(~wide):
        if edges[i] > 0:
            weights[i, min(int(np.searchsorted(hi, edges[i], side="left")), len(ticks) - 1)] = 1.0
    weights.setflags(write=False)
    return weights


def from_histograms(
    model: str,
    grid: Grid,
    input_histogram: Sequence[tuple[float, float]],
    output_histogram: Sequence[tuple[float, float]],
    total_rps: float,
    fallback_shape: Mapping[str, int] | None = None,
) -> Demand:
    """Marginal length histograms (increase over a window) and a total rate → joint rates, assuming the two
    lengths independent. When a histogram is empty the rate goes to the bucket named by `fallback_shape`
    ({"input_tokens": n, "output_tokens": m}), or the last (longest, so most conservative) bucket."""
    if not math.isfinite(total_rps) or total_rps < 0:
        raise DemandError(model, [f"total_rps: must be finite and non-negative, got {total_rps}"])
    p_in = histogram_shares(input_histogram, grid.inputs)
    p_out = histogram_shares(output_histogram, grid.outputs)
    shape = fallback_shape or {"input_tokens": grid.inputs[-1], "output_tokens": grid.outputs[-1]}
    out_i, in_j = grid.index(shape["input_tokens"], shape["output_tokens"])
    if p_in.sum() == 0:
        p_in[in_j] = 1.0
    if p_out.sum() == 0:
        p_out[out_i] = 1.0
    return Demand(model, grid, np.outer(p_out, p_in) * total_rps)
