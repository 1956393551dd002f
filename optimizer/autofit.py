"""AutoFit right-sizing from a few measurements: fit TPOT = a·B + c (and where the batch stops growing, the
knee) to points measured on one accelerator, carry the fitted scale to other GPUs and MIG slices through
the analytical model's shape (optimizer.perfmodel), and pick the smallest accelerator that meets a TPOT SLO
at a target concurrency, or the largest when none does. Also synthesizes a profile for an accelerator that
was never benchmarked, marked `synthesized`.

Why scale and not absolute numbers: AutoFit's finding (Tardieu & Zhu, KubeCon NA 2024) is that the
analytical model predicts the shape but not the scale; measured points fix the scale. The fitted c and a
divided by the analytical c and a of the measured accelerator are efficiencies of the software stack, which
carry over to other hardware far better than datasheet numbers alone.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from optimizer.perfmodel import (
    CATALOG,
    Accelerator,
    Calibration,
    ModelSpec,
    PerfModel,
    PerfModelError,
    accelerator,
    perf_model,
)
from optimizer.profile import SLO, SUSTAINED_SHARE, BenchmarkRow, Grid, Profile

# A knee is claimed only when bending the line there at least halves the squared error: noise in a
# straight run of points must not be read as saturation.
KNEE_EVIDENCE = 0.5
# Share of the SLO-limited batch that Poisson arrivals may fill on average in a synthesized profile: at
# full occupancy the batch would exceed its limit half the time.
DEFAULT_OCCUPANCY = 0.8


class AutoFitError(ValueError):
    pass


@dataclass(frozen=True)
class Observation:
    """One measured point at fixed request lengths: `batch` sequences decoding together (the closed-loop
    concurrency, or the mean in flight), their mean TPOT, and optionally tokens/s and TTFT."""

    batch: float
    tpot: float
    context_tokens: float  # mean KV tokens per sequence while decoding: input + output/2
    tokens_per_s: float | None = None
    ttft: float | None = None
    prompt_tokens: float | None = None


@dataclass(frozen=True)
class TpotFit:
    a: float  # s per step per sequence
    c: float  # s per step
    knee: float | None  # batch past which TPOT stops growing (the server caps its batch); None: not seen
    context_tokens: float
    ceiling_tokens_per_s: float  # measured maximum, or the fit's value at the knee when one was seen
    points: int
    rel_rmse: float  # root-mean-square relative error of the fit on its own points

    def tpot(self, batch: float) -> float:
        b = batch if self.knee is None else min(batch, self.knee)
        return self.a * b + self.c

    def throughput(self, batch: float) -> float:
        """Output tokens/s at a steady concurrency."""
        b = batch if self.knee is None else min(batch, self.knee)
        return b / self.tpot(b) if b > 0 else 0.0


def _weighted_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares of y = a·x + c in relative terms (weights 1/y), with a ≥ 0 and c ≥ 0."""
    w = 1.0 / y
    design = np.stack([x * w, w], axis=1)
    (a, c), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    if a < 0:  # flat: the best constant
        a, c = 0.0, float(np.sum(w * w * y) / np.sum(w * w))
    if c < 0:  # through the origin
        a, c = float(np.sum(w * w * x * y) / np.sum(w * w * x * x)), 0.0
    resid = (a * x + c - y) * w
    return float(a), float(c), float(np.sum(resid * resid))


def fit_tpot(points: Sequence[Observation]) -> TpotFit:
    """TPOT = a·B + c on the points before the knee; the knee is the hinge K of TPOT = a·min(B, K) + c that
    fits best, if it fits clearly better than a straight line."""
    good = [p for p in points if p.batch > 0 and p.tpot > 0 and math.isfinite(p.tpot) and math.isfinite(p.batch)]
    if len({p.batch for p in good}) < 2:
        raise AutoFitError(
            "need measurements at two or more batch sizes with a positive TPOT, "
            f"got {len(good)} usable of {len(points)}"
        )
    x = np.asarray([p.batch for p in good], dtype=np.float64)
    y = np.asarray([p.tpot for p in good], dtype=np.float64)
    a, c, sse = _weighted_line(x, y)
    knee: float | None = None
    best_sse = KNEE_EVIDENCE * sse
    batches = sorted(set(x.tolist()))
    for k in batches[1:-1]:  # a hinge needs two points on the line and one past it
        ka, kc, ksse = _weighted_line(np.minimum(x, k), y)
        if ksse < best_sse:
            a, c, knee, best_sse = ka, kc, float(k), ksse
    if knee is not None:
        sse = best_sse
    context = float(np.mean([p.context_tokens for p in good]))
    measured = [p.tokens_per_s for p in good if p.tokens_per_s is not None]
    if knee is not None:
        ceiling = knee / (a * knee + c)
    elif measured:
        ceiling = max(measured)
    else:
        ceiling = float(x.max() / (a * x.max() + c))
    return TpotFit(a=a, c=c, knee=knee, context_tokens=context, ceiling_tokens_per_s=float(ceiling),
                   points=len(good), rel_rmse=math.sqrt(sse / len(good)))


# ------------------------------------------------------------------------------------ carrying the scale


@dataclass(frozen=True)
class Scale:
    """Measured ÷ analytical on the benchmarked accelerator."""

    reference: str
    decode_c: float = 1.0
    decode_a: float = 1.0
    prefill: float = 1.0
    knee: float | None = None  # measured knee ÷ analytical knee, when a knee was measured

    @staticmethod
    def analytic(reference: str = "") -> Scale:
        return Scale(reference=reference)


def calibrate(fit: TpotFit, model: str | ModelSpec, reference: str | Accelerator,
              calibration: Calibration | None = None, prefill_points: Iterable[Observation] = ()) -> Scale:
    pm = perf_model(model, reference, calibration)
    if not pm.fits:
        raise AutoFitError(f"model does not fit on {pm.accelerator} per its specs; cannot use it as reference")
    a_model = pm.a(fit.context_tokens)
    prefill_ratios = [p.ttft / pm.prefill_time(p.prompt_tokens) for p in prefill_points
                      if p.ttft is not None and p.prompt_tokens and p.ttft > 0]
    knee = None
    if fit.knee is not None and pm.knee(fit.context_tokens) > 0:
        knee = fit.knee / pm.knee(fit.context_tokens)
    return Scale(
        reference=pm.accelerator,
        decode_c=fit.c / pm.c if pm.c > 0 else 1.0,
        decode_a=fit.a / a_model if a_model > 0 else 1.0,
        prefill=float(np.median(prefill_ratios)) if prefill_ratios else 1.0,
        knee=knee,
    )


@dataclass(frozen=True)
class Prediction:
    """One candidate accelerator at the target load."""

    accelerator: str
    cost_per_hour: float
    memory_gb: float
    fits: bool  # the weights and some KV cache fit in memory
    c: float
    a: float  # at the context length asked for
    knee: int  # max concurrent sequences before requests queue
    max_batch: int  # largest batch meeting the TPOT SLO (≤ knee)
    tpot: float | None  # at the target load, None when the load is past the knee (it would queue)
    tokens_per_s: float  # at the target load (or at the knee when past it)
    ceiling_tokens_per_s: float
    meets_slo: bool


@dataclass(frozen=True)
class Predictor:
    model: ModelSpec | str
    scale: Scale
    calibration: Calibration | None = None

    def perf(self, accel: str | Accelerator) -> PerfModel:
        return perf_model(self.model, accel, self.calibration)

    def line(self, accel: str | Accelerator, context_tokens: float) -> tuple[float, float, int]:
        """(a, c, knee) on `accel` at this context length."""
        pm = self.perf(accel)
        knee = pm.knee(context_tokens)
        if self.scale.knee is not None:
            knee = max(1, int(knee * self.scale.knee)) if knee > 0 else 0
        return pm.a(context_tokens) * self.scale.decode_a, pm.c * self.scale.decode_c, knee

    def prefill_time(self, accel: str | Accelerator, prompt_tokens: float) -> float:
        return self.perf(accel).prefill_time(prompt_tokens) * self.scale.prefill

    def predict(self, accel: str | Accelerator, *, load: int, tpot_slo: float, context_tokens: float) -> Prediction:
        acc = accel if isinstance(accel, Accelerator) else accelerator(accel)
        a, c, knee = self.line(acc, context_tokens)
        fits = knee > 0
        max_batch = 0
        if fits and tpot_slo >= a + c:
            max_batch = min(knee, int((tpot_slo - c) / a) if a > 0 else knee)
        tpot = a * load + c if fits and load <= knee else None
        b = min(load, knee)
        tokens = b / (a * b + c) if b > 0 else 0.0
        return Prediction(
            accelerator=acc.name, cost_per_hour=acc.cost_per_hour, memory_gb=acc.memory_gb, fits=fits, c=c, a=a,
            knee=knee, max_batch=max_batch, tpot=tpot, tokens_per_s=tokens,
            ceiling_tokens_per_s=knee / (a * knee + c) if fits else 0.0,
            meets_slo=fits and max_batch >= load,
        )


def candidates(names: Iterable[str] | None = None) -> list[Accelerator]:
    if names is None:
        return list(CATALOG.values())
    out = []
    problems = []
    for n in names:
        try:
            out.append(accelerator(n))
        except PerfModelError as exc:
            problems.append(str(exc).split(";")[0])
    if problems:
        raise AutoFitError("; ".join(problems))
    return out


def size_order(p: Prediction) -> tuple[float, float, str]:
    """'Smallest' = cheapest, then least memory: a MIG slice is priced at its compute share."""
    return (p.cost_per_hour, p.memory_gb, p.accelerator)


def right_size(predictions: Sequence[Prediction]) -> Prediction:
    """The smallest candidate meeting the SLO at the load; if none does, the one sustaining the largest
    batch within the SLO (then the most throughput), i.e. the largest that can be had."""
    fitting = [p for p in predictions if p.fits]
    if not fitting:
        raise AutoFitError("the model fits on none of the candidates")
    ok = [p for p in fitting if p.meets_slo]
    if ok:
        return min(ok, key=size_order)
    return max(fitting, key=lambda p: (p.max_batch, p.ceiling_tokens_per_s, -p.cost_per_hour))


# -------------------------------------------------------------------------------------- synthesis


def synthesize_profile(
    predictor: Predictor,
    accel: str | Accelerator,
    *,
    model: str,
    variant: str,
    slo: SLO,
    grid: Grid,
    cost_per_hour: float | None = None,
    occupancy: float = DEFAULT_OCCUPANCY,
    created: float = 0.0,
) -> Profile:
    """Capacity per (input, output) cell from the predicted line: the largest batch B whose TPOT (and E2E
    = prefill + output·TPOT) meets the SLO, held at `occupancy`, each request holding a decode slot for its
    prefill plus `output` steps. A cell whose prefill alone breaks a TTFT limit gets 0."""
    if not 0 < occupancy <= 1:
        raise AutoFitError(f"occupancy must be in (0, 1], got {occupancy}")
    if not slo.limits():
        raise AutoFitError("slo: give at least one of tpot, ttft, e2e")
    acc = accel if isinstance(accel, Accelerator) else accelerator(accel)
    capacity = np.zeros(grid.shape)
    limits = slo.limits()
    for i, out_t in enumerate(grid.outputs):
        for j, in_t in enumerate(grid.inputs):
            context = in_t + out_t / 2.0
            a, c, knee = predictor.line(acc, context)
            prefill = predictor.prefill_time(acc, in_t)
            if knee <= 0 or ("ttft" in limits and prefill > limits["ttft"]):
                continue
            batch = knee
            if "tpot" in limits:
                batch = min(batch, int((limits["tpot"] - c) / a) if a > 0 else knee)
            if "e2e" in limits:
                per_token = (limits["e2e"] - prefill) / out_t
                batch = min(batch, int((per_token - c) / a) if a > 0 else knee)
            if batch < 1:
                continue
            service = prefill + out_t * (a * batch + c)
            capacity[i, j] = occupancy * batch / service
    return Profile(
        model=model, variant=variant, accelerator=acc.name,
        cost_per_hour=acc.cost_per_hour if cost_per_hour is None else cost_per_hour,
        slo=slo, grid=grid, capacity=capacity, synthesized=True, created=created,
    )


# ------------------------------------------------------------------------------------ from benchmark rows


def observations_from_rows(rows: Iterable[BenchmarkRow]) -> dict[tuple[int, int], list[Observation]]:
    """Per (input, output) cell, one observation per sustained load point. The batch is Little's law on the
    measured numbers (throughput × mean E2E), which is the concurrency itself for a closed-loop point. TPOT
    is the measured mean; where a server streams nothing measurable (AIBrix's simulator reports TPOT 0),
    E2E ÷ output tokens stands in. Saturated open-loop points (throughput < 90 % of offered) are left
    out: their E2E is queueing, not decoding."""
    points: dict[tuple[int, int, float], dict[str, BenchmarkRow]] = {}
    for row in rows:
        points.setdefault((row.input_tokens, row.output_tokens, row.request_rate), {})[row.metric] = row
    cells: dict[tuple[int, int], list[Observation]] = {}
    for (in_t, out_t, rate), metrics in sorted(points.items()):
        tput, e2e = metrics.get("TPUT"), metrics.get("E2E")
        if tput is None or e2e is None or tput.mean <= 0 or tput.mean < SUSTAINED_SHARE * rate:
            continue
        tpot_row, ttft_row, tt_row = metrics.get("TPOT"), metrics.get("TTFT"), metrics.get("TT")
        streamed = tpot_row is not None and tpot_row.mean > 0
        tpot = tpot_row.mean if tpot_row is not None and streamed else e2e.mean / out_t
        cells.setdefault((in_t, out_t), []).append(Observation(
            batch=tput.mean * e2e.mean,
            tpot=tpot,
            context_tokens=in_t + out_t / 2.0,
            tokens_per_s=tt_row.mean if tt_row is not None else tput.mean * out_t,
            # Without streamed tokens there is no first-token time worth the name.
            ttft=ttft_row.mean if streamed and ttft_row is not None and ttft_row.mean > 0 else None,
            prompt_tokens=float(in_t),
        ))
    return cells


def calibrate_rows(rows: Iterable[BenchmarkRow], model: str | ModelSpec, reference: str | Accelerator,
                   calibration: Calibration | None = None) -> tuple[Scale, dict[tuple[int, int], TpotFit]]:
    """Fit every cell with enough points and take the median of their scales: one cell's noise does not
    decide the scale for every accelerator."""
    cells = observations_from_rows(rows)
    fits: dict[tuple[int, int], TpotFit] = {}
    scales: list[Scale] = []
    for cell, obs in cells.items():
        try:
            fit = fit_tpot(obs)
        except AutoFitError:
            continue
        fits[cell] = fit
        # TTFT at the lightest load is prefill without queueing.
        lightest = min(obs, key=lambda o: o.batch)
        scales.append(calibrate(fit, model, reference, calibration, [lightest]))
    if not scales:
        raise AutoFitError("no (input, output) cell has sustained measurements at two or more loads")
    knees = [s.knee for s in scales if s.knee is not None]
    scale = Scale(
        reference=scales[0].reference,
        decode_c=float(np.median([s.decode_c for s in scales])),
        decode_a=float(np.median([s.decode_a for s in scales])),
        prefill=float(np.median([s.prefill for s in scales])),
        knee=float(np.median(knees)) if knees else None,
    )
    return scale, fits
