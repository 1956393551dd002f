"""What one replica of a variant can do: capacity per (input, output) bucket under an SLO.

A profile's capacity table μ[out][in] is the highest request rate (req/s) one replica sustains for requests
of that shape while meeting the SLO; 0 means it cannot meet the SLO at any rate. Our JSON format is a
superset of AIBrix's (`tputs[out][in]`, `indexes = [[out ticks], [in ticks]]`) and keeps the raw benchmark
rows, so the SLO can change without profiling again.

Pure: parsing takes already-decoded JSON values; reading files is the caller's business, except the two
small `load_*` conveniences, which only read text and say which file was bad.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from optimizer.errors import InputError

FORMAT = "gpumix.profile/v1"
SLO_METRICS = ("ttft", "tpot", "e2e")
PERCENTILES = {"mean": "mean", "50": "P50", "90": "P90", "99": "P99"}
# AIBrix keeps a rate only if the measured throughput reached this share of the offered rate.
SUSTAINED_SHARE = 0.9
# Ticks per axis a profile may have. The planner's memory grows with buckets × variants; 64 × 64 plans
# within the stated budget (BENCHMARKS.md, "Planner memory"). Finer profiles are refused at parse time with
# this limit in the message; a finer *union* of variants' grids is planned on `coarsen`.
MAX_TICKS = 64

FloatArray = npt.NDArray[np.float64]
# Token ticks and lengths beyond this are not lengths but corrupt data (and would not fit numpy's ints).
MAX_TOKENS = 2**31 - 1
MAX_PROBLEMS = 20  # problems listed per document; a corrupt file can have one per cell


def _float(x: int | float) -> float:
    """float(x), with an integer too large for a float read as infinite (then rejected as not finite)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


class ProfileError(InputError):
    """A profile (or benchmark file) that cannot be used."""


@dataclass(frozen=True)
class SLO:
    """Latency objective in seconds at a percentile ("mean", "50", "90" or "99")."""

    percentile: str = "99"
    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    def limits(self) -> dict[str, float]:
        return {m: v for m in SLO_METRICS if (v := getattr(self, m)) is not None}

    def to_json(self) -> dict[str, Any]:
        return {"percentile": self.percentile, **self.limits()}


@dataclass(frozen=True)
class Grid:
    """Bucket ticks in tokens. A request belongs to the first tick at or above its length (round up, the
    conservative side); lengths past the last tick belong to the last bucket."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.outputs), len(self.inputs))

    @property
    def size(self) -> int:
        return len(self.outputs) * len(self.inputs)

    def index(self, input_tokens: float, output_tokens: float) -> tuple[int, int]:
        return (_tick_index(self.outputs, output_tokens), _tick_index(self.inputs, input_tokens))

    def indices(
        self, input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        out_idx = np.searchsorted(np.asarray(self.outputs), np.asarray(output_tokens), side="left")
        in_idx = np.searchsorted(np.asarray(self.inputs), np.asarray(input_tokens), side="left")
        return (
            np.minimum(out_idx, len(self.outputs) - 1).astype(np.intp),
            np.minimum(in_idx, len(self.inputs) - 1).astype(np.intp),
        )

    def to_json(self) -> dict[str, list[int]]:
        return {"input_tokens": list(self.inputs), "output_tokens": list(self.outputs)}


def _tick_index(ticks: Sequence[int], value: float) -> int:
    return min(int(np.searchsorted(np.asarray(ticks), value, side="left")), len(ticks) - 1)


@dataclass(frozen=True)
class BenchmarkRow:
    """One `aibrix_benchmark`-style measurement: one metric at one (input, output, offered rate) point."""

    input_tokens: int
    output_tokens: int
    request_rate: float
    metric: str
    mean: float
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def value(self, percentile: str) -> float | None:
        return {"mean": self.mean, "50": self.p50, "90": self.p90, "99": self.p99}[percentile]

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "request_rate": self.request_rate,
            "metric": self.metric,
            "mean": self.mean,
        }
        for key, val in (("P50", self.p50), ("P90", self.p90), ("P99", self.p99)):
            if val is not None:
                row[key] = val
        return row


@dataclass(frozen=True, eq=False)  # identity equality: the capacity array has no truth value
class Profile:
    model: str
    variant: str
    accelerator: str
    cost_per_hour: float
    slo: SLO
    grid: Grid
    capacity: FloatArray  # shape grid.shape: [output tick][input tick], req/s per replica
    gpus_per_replica: int = 1
    rows: tuple[BenchmarkRow, ...] = field(default=(), repr=False)
    synthesized: bool = False
    created: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity.shape != self.grid.shape:
            raise ProfileError(
                self.variant, [f"capacity: shape {self.capacity.shape} does not match grid {self.grid.shape}"]
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "variant": self.variant,
            "accelerator": self.accelerator,
            "cost_per_hour": self.cost_per_hour,
            "gpus_per_replica": self.gpus_per_replica,
            "slo": self.slo.to_json(),
            "grid": self.grid.to_json(),
            "capacity_rps": self.capacity.tolist(),
            "synthesized": self.synthesized,
            "created": self.created,
            "rows": [r.to_json() for r in self.rows],
        }

    def to_aibrix(self) -> dict[str, Any]:
        slos: dict[str, Any] = {"percentile": _aibrix_percentile(self.slo.percentile), **self.slo.limits()}
        return {
            "gpu": self.variant,
            "cost": self.cost_per_hour,
            "tputs": self.capacity.tolist(),
            "indexes": [list(self.grid.outputs), list(self.grid.inputs)],
            "created": self.created,
            "slos": slos,
        }

    def with_capacity(self, grid: Grid, capacity: FloatArray) -> Profile:
        return replace(self, grid=grid, capacity=capacity)

    @functools.cached_property
    def mean_servable_capacity(self) -> float | None:
        """Mean req/s per replica over the cells it can serve (None: it serves none). Asked of every variant
        every cycle; a profile's capacity never changes after it is built (a corrected one is a new profile)."""
        servable = self.capacity[self.capacity > 0]
        return float(servable.mean()) if servable.size else None


def _aibrix_percentile(p: str) -> int | str:
    return int(p) if p.isdigit() else p


# --------------------------------------------------------------------------------------------- parsing


class _Problems:
    """Collects every problem in one document before raising, like KEDA's scaler config parsing."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, fieldname: str, problem: str) -> None:
        self.items.append(f"{fieldname}: {problem}")

    def raise_if_any(self) -> None:
        if self.items:
            more = len(self.items) - MAX_PROBLEMS
            raise ProfileError(self.source, self.items[:MAX_PROBLEMS] + ([f"... {more} more"] if more > 0 else []))

    def string(self, data: Mapping[str, Any], key: str, default: str | None = None) -> str:
        val = data.get(key, default)
        if not isinstance(val, str) or not val:
            self.add(key, "missing" if val is None else f"must be a non-empty string, got {val!r}")
            return ""
        return val

    def number(self, data: Mapping[str, Any], key: str, default: float | None = None, *, positive: bool) -> float:
        val = data.get(key, default)
        if isinstance(val, bool) or not isinstance(val, int | float):
            self.add(key, "missing" if val is None else f"must be a number, got {val!r}")
            return 0.0
        fval = _float(val)
        if not math.isfinite(fval) or fval < 0 or (positive and fval == 0):
            self.add(key, f"must be a finite {'positive' if positive else 'non-negative'} number, got {val!r}")
            return 0.0
        return fval

    def ticks(self, val: Any, fieldname: str) -> tuple[int, ...]:
        if not isinstance(val, list) or not val:
            self.add(fieldname, "must be a non-empty list of token counts")
            return ()
        if len(val) > MAX_TICKS:
            self.add(fieldname, f"{len(val)} ticks, more than the {MAX_TICKS} the planner supports per axis "
                     f"(memory grows with the grid); profile on a coarser grid, or keep every "
                     f"{math.ceil(len(val) / MAX_TICKS)}th tick and the last one")
            return ()
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 < t <= MAX_TOKENS for t in val):
            self.add(fieldname, f"ticks must be integers in 1..{MAX_TOKENS}, got {_short(val)}")
            return ()
        if any(b <= a for a, b in itertools.pairwise(val)):
            self.add(fieldname, f"ticks must be strictly increasing, got {val!r}")
            return ()
        return tuple(val)

    def matrix(self, val: Any, fieldname: str, shape: tuple[int, int]) -> FloatArray:
        rows, cols = shape
        empty = np.zeros(shape)
        if not isinstance(val, list) or len(val) != rows:
            got = len(val) if isinstance(val, list) else type(val).__name__
            self.add(fieldname, f"must be a list of {rows} rows (one per output tick), got {got}")
            return empty
        for i, row in enumerate(val):
            if not isinstance(row, list) or len(row) != cols:
                self.add(f"{fieldname}[{i}]", f"must have {cols} values (one per input tick)")
                return empty
            for j, x in enumerate(row):
                bad = isinstance(x, bool) or not isinstance(x, int | float)
                if bad or not math.isfinite(_float(x)) or _float(x) < 0:
                    self.add(f"{fieldname}[{i}][{j}]", f"must be a finite non-negative number, got {_short(x)}")
                    return empty
        return np.asarray(val, dtype=np.float64)

    def slo(self, val: Any, fieldname: str) -> SLO:
        if not isinstance(val, Mapping):
            self.add(fieldname, "must be an object like {\"percentile\": 99, \"tpot\": 0.05}")
            return SLO()
        percentile = str(val.get("percentile", "99"))
        if percentile not in PERCENTILES:
            self.add(f"{fieldname}.percentile", f"must be one of {sorted(PERCENTILES)}, got {percentile!r}")
        limits: dict[str, float] = {}
        for key in val:
            if key == "percentile":
                continue
            if key not in SLO_METRICS:
                self.add(f"{fieldname}.{key}", f"unknown SLO metric; use one of {', '.join(SLO_METRICS)}")
                continue
            limits[key] = self.number(val, key, positive=True)
        return SLO(percentile=percentile, **limits)


def parse_profile(data: Any, source: str = "profile", *, model: str | None = None) -> Profile:
    """Our JSON format, or AIBrix's (recognised by its `tputs` key). `model` names the model for AIBrix
    files, which do not carry it."""
    if isinstance(data, Mapping) and "tputs" in data:
        return parse_aibrix_profile(data, source, model=model)
    p = _Problems(source)
    if not isinstance(data, Mapping):
        raise ProfileError(source, ["document: must be a JSON object"])
    fmt = data.get("format")
    if fmt != FORMAT:
        p.add("format", f"expected {FORMAT!r} (or an AIBrix profile with 'tputs'), got {fmt!r}")
    grid_data = data.get("grid")
    grid_data = grid_data if isinstance(grid_data, Mapping) else {}
    inputs = p.ticks(grid_data.get("input_tokens"), "grid.input_tokens")
    outputs = p.ticks(grid_data.get("output_tokens"), "grid.output_tokens")
    capacity = p.matrix(data.get("capacity_rps"), "capacity_rps", (len(outputs), len(inputs)))
    rows = _parse_rows(data.get("rows", []), p)
    gpus = data.get("gpus_per_replica", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        p.add("gpus_per_replica", f"must be a positive integer, got {gpus!r}")
    profile_model = p.string(data, "model", model)
    variant = p.string(data, "variant")
    fields = dict(
        model=profile_model,
        variant=variant,
        accelerator=p.string(data, "accelerator", variant or None),
        cost_per_hour=p.number(data, "cost_per_hour", positive=True),
        slo=p.slo(data.get("slo", {}), "slo"),
        created=p.number(data, "created", 0.0, positive=False),
    )
    synthesized = data.get("synthesized", False)
    if not isinstance(synthesized, bool):
        p.add("synthesized", "must be true or false")
    p.raise_if_any()
    return Profile(
        **fields,  # type: ignore[arg-type]
        grid=Grid(inputs, outputs),
        capacity=capacity,
        gpus_per_replica=int(gpus),
        rows=rows,
        synthesized=bool(synthesized),
    )


def parse_aibrix_profile(data: Mapping[str, Any], source: str = "profile", *, model: str | None = None) -> Profile:
    """An AIBrix GPU-optimizer profile as `aibrix_gen_profile` writes it."""
    p = _Problems(source)
    variant = p.string(data, "gpu")
    indexes = data.get("indexes")
    if not isinstance(indexes, list) or len(indexes) != 2:
        p.add("indexes", "must be [[output ticks], [input ticks]]")
        indexes = [[], []]
    outputs = p.ticks(indexes[0], "indexes[0] (output ticks)")
    inputs = p.ticks(indexes[1], "indexes[1] (input ticks)")
    capacity = p.matrix(data.get("tputs"), "tputs", (len(outputs), len(inputs)))
    cost = p.number(data, "cost", positive=True)
    slo = p.slo(data["slos"], "slos") if "slos" in data else SLO()
    created = p.number(data, "created", 0.0, positive=False)
    p.raise_if_any()
    return Profile(
        model=model or variant,
        variant=variant,
        accelerator=variant,
        cost_per_hour=cost,
        slo=slo,
        grid=Grid(inputs, outputs),
        capacity=capacity,
        created=created,
    )


def _parse_rows(val: Any, p: _Problems) -> tuple[BenchmarkRow, ...]:
    if not isinstance(val, list):
        p.add("rows", "must be a list of benchmark rows")
        return ()
    rows: list[BenchmarkRow] = []
    for i, item in enumerate(val):
        try:
            rows.append(parse_benchmark_row(item))
        except ValueError as exc:
            p.add(f"rows[{i}]", str(exc))
    return tuple(rows)


def parse_benchmark_row(item: Any) -> BenchmarkRow:
    """One JSON object of an `aibrix_benchmark` JSONL file (or ours, which is the same shape)."""
    if not isinstance(item, Mapping):
        raise ValueError("must be a JSON object")
    missing = [k for k in ("input_tokens", "output_tokens", "request_rate", "metric", "mean") if k not in item]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")

    def num(key: str) -> float | None:
        v = item.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(_float(v)) or v < 0:
            raise ValueError(f"{key} must be a finite non-negative number, got {_short(v)}")
        return float(v)

    def tokens(key: str) -> int:
        v = item[key]
        whole = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, bool) or not whole or not 0 <= v <= MAX_TOKENS:
            raise ValueError(f"{key} must be a whole number of tokens in 0..{MAX_TOKENS}, got {_short(v)}")
        return int(v)

    metric = item["metric"]
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a string, got {_short(metric)}")
    mean, rate = num("mean"), num("request_rate")
    if mean is None or rate is None:
        raise ValueError(f"{'mean' if mean is None else 'request_rate'} must be a number, got null")
    return BenchmarkRow(
        input_tokens=tokens("input_tokens"),
        output_tokens=tokens("output_tokens"),
        request_rate=rate,
        metric=metric.upper(),
        mean=mean,
        p50=num("P50"),
        p90=num("P90"),
        p99=num("P99"),
    )


def parse_benchmark_lines(lines: Iterable[str], source: str) -> tuple[BenchmarkRow, ...]:
    problems: list[str] = []
    rows: list[BenchmarkRow] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse_benchmark_row(json.loads(line)))
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"line {n}: {exc}")
    if problems:
        raise ProfileError(source, problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else []))
    if not rows:
        raise ProfileError(source, ["no benchmark rows"])
    return tuple(rows)


def load_profile(path: str | Path, *, model: str | None = None) -> Profile:
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(source, [f"cannot read JSON: {exc}"]) from exc
    return parse_profile(data, source, model=model)


def load_benchmark_rows(path: str | Path) -> tuple[BenchmarkRow, ...]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProfileError(str(path), [f"cannot read: {exc}"]) from exc
    return parse_benchmark_lines(text.splitlines(), str(path))


# ---------------------------------------------------------------------------------- SLO derivation


def derive_capacity(rows: Iterable[BenchmarkRow], slo: SLO, grid: Grid | None = None) -> tuple[Grid, FloatArray]:
    """μ per cell from raw rows, the way `aibrix_gen_profile` does it: the highest offered rate whose
    latencies all meet the SLO and whose measured throughput (TPUT) is at least 90 % of the offered rate;
    μ is that measured throughput. A cell with no such rate gets 0."""
    if not slo.limits():
        raise ProfileError("slo", ["no latency limit given: set at least one of ttft, tpot, e2e"])
    points: dict[tuple[int, int, float], dict[str, BenchmarkRow]] = {}
    for row in rows:
        points.setdefault((row.output_tokens, row.input_tokens, row.request_rate), {})[row.metric] = row
    if grid is None:
        grid = Grid(tuple(sorted({k[1] for k in points})), tuple(sorted({k[0] for k in points})))
    return grid, _highest_rate_capacity(points, grid, slo)


def _meets(row: BenchmarkRow | None, percentile: str, limit: float) -> bool:
    if row is None:
        return False
    value = row.value(percentile)
    return value is not None and value <= limit


def sustains(metrics: Mapping[str, BenchmarkRow], rate: float, slo: SLO) -> bool:
    """Whether one measured point (its rows by metric, at offered `rate`) counts for capacity: every SLO
    limit met, and a throughput of at least 90 % of the offered rate (AIBrix's gen_profile rule)."""
    if "TPUT" not in metrics or metrics["TPUT"].mean < SUSTAINED_SHARE * rate:
        return False
    return all(_meets(metrics.get(m.upper()), slo.percentile, lim) for m, lim in slo.limits().items())


def _highest_rate_capacity(
    points: Mapping[tuple[int, int, float], Mapping[str, BenchmarkRow]], grid: Grid, slo: SLO
) -> FloatArray:
    best_rate = np.full(grid.shape, -1.0)
    capacity = np.zeros(grid.shape)
    out_pos = {t: i for i, t in enumerate(grid.outputs)}
    in_pos = {t: j for j, t in enumerate(grid.inputs)}
    for (out_t, in_t, rate), metrics in points.items():
        if out_t not in out_pos or in_t not in in_pos or not sustains(metrics, rate, slo):
            continue
        i, j = out_pos[out_t], in_pos[in_t]
        if rate > best_rate[i, j]:
            best_rate[i, j] = rate
            capacity[i, j] = metrics["TPUT"].mean
    return capacity


def derive_profile(
    rows: Sequence[BenchmarkRow],
    slo: SLO,
    *,
    model: str,
    variant: str,
    accelerator: str,
    cost_per_hour: float,
    gpus_per_replica: int = 1,
    created: float = 0.0,
) -> Profile:
    grid, capacity = derive_capacity(rows, slo)
    return Profile(
        model=model,
        variant=variant,
        accelerator=accelerator,
        cost_per_hour=cost_per_hour,
        slo=slo,
        grid=grid,
        capacity=capacity,
        gpus_per_replica=gpus_per_replica,
        rows=tuple(rows),
        created=created,
    )


def with_slo(profile: Profile, slo: SLO) -> Profile:
    """The same variant under another SLO, from its raw rows (no re-profiling)."""
    if not profile.rows:
        raise ProfileError(profile.variant, ["rows: profile has no raw benchmark rows; cannot change its SLO"])
    _, capacity = derive_capacity(profile.rows, slo, profile.grid)
    return replace(profile, slo=slo, capacity=capacity)


# ---------------------------------------------------------------------------------------- resampling


def common_grid(grids: Iterable[Grid]) -> Grid:
    """The union of every variant's ticks: no variant loses resolution."""
    grids = list(grids)
    if not grids:
        raise ProfileError("profiles", ["no profiles to build a grid from"])
    return Grid(
        tuple(sorted({t for g in grids for t in g.inputs})),
        tuple(sorted({t for g in grids for t in g.outputs})),
    )


def coarsen(grid: Grid, max_ticks: int = MAX_TICKS) -> Grid:
    """At most `max_ticks` of the grid's own ticks per axis, evenly spread, the last one always kept.
    Conservative with `Demand.on` and `resample`: a request moves up to the next kept tick (so it is never
    made shorter) and capacity is read at that tick, which was measured."""

    def keep(ticks: tuple[int, ...]) -> tuple[int, ...]:
        if len(ticks) <= max_ticks:
            return ticks
        positions = np.linspace(len(ticks) - 1, 0, max_ticks).round().astype(int)
        return tuple(ticks[i] for i in sorted(set(positions.tolist())))

    return Grid(keep(grid.inputs), keep(grid.outputs))


def resample(profile: Profile, grid: Grid) -> Profile:
    """Capacity on another grid without claiming more than was measured: a target bucket takes the measured
    cell with the smallest ticks at or above its own in both lengths (those requests are at least as long,
    so at least as hard). Buckets past the measured range get 0: not measured, so not servable."""
    if grid == profile.grid:
        return profile
    src_out = np.asarray(profile.grid.outputs)
    src_in = np.asarray(profile.grid.inputs)
    out_idx = np.searchsorted(src_out, np.asarray(grid.outputs), side="left")
    in_idx = np.searchsorted(src_in, np.asarray(grid.inputs), side="left")
    capacity = np.zeros(grid.shape)
    rows_ok = out_idx < len(src_out)
    cols_ok = in_idx < len(src_in)
    capacity[np.ix_(rows_ok, cols_ok)] = profile.capacity[np.ix_(out_idx[rows_ok], in_idx[cols_ok])]
    return profile.with_capacity(grid, capacity)
