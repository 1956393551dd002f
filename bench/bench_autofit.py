"""How wrong is AutoFit? Error of the fitted TPOT = a·B + c line on held-out measurements, from AIBrix's
published llama2-7b benchmark rows (data/aibrix/, A100 and A40).

1. Same accelerator: per (input, output) cell, fit on the lighter sustained loads, predict the heaviest.
2. Across accelerators: fix the scale on the A100 rows, predict every sustained A40 point from the A40's
   specs; the uncalibrated analytical model is the baseline.
3. Synthesized profile: an A40 profile synthesized from the A100 scale against AIBrix's own A40 profile
   under its SLO (E2E P99 ≤ 5 s).

Those rows come from AIBrix's simulator, which streams nothing (TPOT and TTFT are 0), so the per-token time
is E2E ÷ output tokens and the batch is throughput × E2E (Little's law); see optimizer/autofit.py.

    .venv/bin/python -m bench.bench_autofit [--plot autofit.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.report import write_section
from optimizer.autofit import (
    AutoFitError,
    Observation,
    Predictor,
    Scale,
    calibrate_rows,
    fit_tpot,
    observations_from_rows,
    synthesize_profile,
)
from optimizer.profile import SLO, derive_capacity, load_benchmark_rows

DATA = Path(__file__).resolve().parent.parent / "data" / "aibrix"
MODEL = "llama2-7b"
ACCELERATORS = {"a100": "A100-80GB", "a40": "A40"}


def _summary(errors: list[float]) -> str:
    e = np.abs(np.asarray(errors)) * 100
    return f"{len(e)} | {np.median(e):.1f} % | {np.percentile(e, 90):.1f} % | {e.max():.1f} %"


def held_out_same_gpu(name: str) -> tuple[list[float], list[tuple[float, float]]]:
    cells = observations_from_rows(load_benchmark_rows(DATA / f"simulator-llama2-7b-{name}.jsonl"))
    errors, pairs = [], []
    for obs in cells.values():
        obs = sorted(obs, key=lambda o: o.batch)
        if len(obs) < 3:
            continue
        train, test = obs[:-1], obs[-1]
        try:
            fit = fit_tpot(train)
        except AutoFitError:
            continue
        pred = fit.a * test.batch + fit.c  # extrapolate the line, knee or not
        errors.append(pred / test.tpot - 1)
        pairs.append((test.tpot, pred))
    return errors, pairs


def across_gpus(scale: Scale) -> tuple[list[float], list[tuple[float, float]]]:
    predictor = Predictor(MODEL, scale)
    cells = observations_from_rows(load_benchmark_rows(DATA / "simulator-llama2-7b-a40.jsonl"))
    errors, pairs = [], []
    for (in_t, out_t), obs in cells.items():
        a, c, _ = predictor.line("A40", in_t + out_t / 2)
        for o in obs:
            pred = _with_prefill(predictor, o, a, c, in_t, out_t)
            errors.append(pred / o.tpot - 1)
            pairs.append((o.tpot, pred))
    return errors, pairs


def _with_prefill(predictor: Predictor, o: Observation, a: float, c: float, in_t: int, out_t: int) -> float:
    # The measured per-token time is E2E ÷ output: it carries the prefill too.
    return a * o.batch + c + predictor.prefill_time("A40", in_t) / out_t


def synthesized_vs_published(scale: Scale) -> tuple[float, float, int, int, int]:
    # The A40 file carries no SLO; the A100 file's (E2E P99 ≤ 5 s) applied to the A40 rows, as
    # aibrix_gen_profile would.
    slos = json.loads((DATA / "simulator-llama2-7b-a100.json").read_text())["slos"]
    slo = SLO(percentile=str(slos["percentile"]), e2e=float(slos["e2e"]))
    grid, measured = derive_capacity(load_benchmark_rows(DATA / "simulator-llama2-7b-a40.jsonl"), slo)
    synth = synthesize_profile(Predictor(MODEL, scale), "A40", model=MODEL, variant="a40", slo=slo, grid=grid)
    both = (synth.capacity > 0) & (measured > 0)
    ratio = synth.capacity[both] / measured[both]
    over = int(((synth.capacity > 0) & (measured == 0)).sum())
    under = int(((synth.capacity == 0) & (measured > 0)).sum())
    return float(np.median(ratio)), float(np.percentile(np.abs(np.log(ratio)), 90)), int(both.sum()), over, under


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plot", type=Path, default=Path("autofit.png"))
    args = ap.parse_args()

    lines = ["## AutoFit model error", "",
             "Fit TPOT = a·B + c on some measurements, predict held-out ones (AIBrix's llama2-7b benchmark rows, "
             "`data/aibrix/`; per-token time = E2E ÷ output tokens, batch = throughput × E2E). Absolute "
             "relative error of the predicted per-token time:", "",
             "| case | points | median | P90 | max |", "|---|---|---|---|---|"]
    same_pairs = {}
    for name in ACCELERATORS:
        errors, pairs = held_out_same_gpu(name)
        same_pairs[name] = pairs
        lines.append(f"| {ACCELERATORS[name]}: fit lighter loads, predict heaviest sustained load per cell | "
                     f"{_summary(errors)} |")
    scale, _ = calibrate_rows(load_benchmark_rows(DATA / "simulator-llama2-7b-a100.jsonl"), MODEL, "A100-80GB")
    cross, cross_pairs = across_gpus(scale)
    raw, _ = across_gpus(Scale.analytic("A100-80GB"))
    lines.append(f"| A40 predicted from A100 measurements (scale c×{scale.decode_c:.2f}, a×{scale.decode_a:.2f}) | "
                 f"{_summary(cross)} |")
    lines.append(f"| A40 from datasheet specs only (perfmodel defaults, no measurement) | {_summary(raw)} |")
    median, p90_log, cells, over, under = synthesized_vs_published(scale)
    lines += ["", f"Synthesized A40 profile (from the A100 scale, E2E P99 ≤ 5 s, occupancy 0.8) against the A40 "
              f"capacity derived from AIBrix's A40 rows: median capacity ratio synthesized/measured {median:.2f} "
              f"over {cells} cells both can serve (P90 |log ratio| {p90_log:.2f}); {over} cells claimed that "
              f"AIBrix measured as unservable, {under} cells given up that it could serve.", "",
              "Reading: a ratio far from 1 means the synthesized profile should not drive the planner without "
              "measurement; the model sizes the mean batch, while an E2E P99 limit is set by queueing bursts "
              "it does not model. Profiles made this way are marked `synthesized`."]
    body = "\n".join(lines)
    print(body)
    write_section("autofit", body)
    _plot(same_pairs, cross_pairs, args.plot)
    print(f"plot: {args.plot}")
    return 0


def _plot(same: dict[str, list[tuple[float, float]]], cross: list[tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, pairs in same.items():
        m, p = zip(*pairs, strict=True)
        ax.scatter(m, p, s=14, label=f"{ACCELERATORS[name]} held-out")
    m, p = zip(*cross, strict=True)
    ax.scatter(m, p, s=14, marker="x", label="A40 from A100 scale")
    lo = min(min(m), min(p))
    hi = max(max(m), max(p))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured per-token time (s)")
    ax.set_ylabel("predicted (s)")
    ax.legend(fontsize=8)
    ax.set_title("AutoFit: predicted vs measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
