"""AutoFit: the fit of TPOT = a·B + c with its knee, carrying the scale to other accelerators, the pick,
and synthesized profiles."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.autofit import (
    AutoFitError,
    Observation,
    Predictor,
    Scale,
    calibrate,
    calibrate_rows,
    candidates,
    fit_tpot,
    observations_from_rows,
    right_size,
    synthesize_profile,
)
from optimizer.perfmodel import Calibration, mig_slices, perf_model
from optimizer.profile import SLO, Grid, load_benchmark_rows
from tests.conftest import DATA


def _line(a: float, c: float, batches: list[float], knee: float | None = None, noise: float = 0.0,
          context: float = 600.0) -> list[Observation]:
    rng = np.random.default_rng(7)
    out = []
    for b in batches:
        eff = b if knee is None else min(b, knee)
        tpot = (a * eff + c) * (1 + noise * rng.standard_normal())
        out.append(Observation(batch=b, tpot=tpot, context_tokens=context, tokens_per_s=eff / tpot))
    return out


def test_fit_recovers_the_line() -> None:
    fit = fit_tpot(_line(0.0005, 0.012, [1, 2, 4, 8, 16, 32]))
    assert fit.a == pytest.approx(0.0005, rel=1e-6) and fit.c == pytest.approx(0.012, rel=1e-6)
    assert fit.knee is None and fit.rel_rmse < 1e-9
    assert fit.tpot(10) == pytest.approx(0.017)


def test_noise_is_not_read_as_a_knee() -> None:
    fit = fit_tpot(_line(0.0005, 0.012, [1, 2, 4, 8, 16, 32, 64], noise=0.02))
    assert fit.knee is None
    assert fit.a == pytest.approx(0.0005, rel=0.1) and fit.c == pytest.approx(0.012, rel=0.1)


def test_knee_is_found_where_the_batch_stops_growing() -> None:
    fit = fit_tpot(_line(0.001, 0.01, [1, 2, 4, 8, 16, 32, 64, 128], knee=16))
    assert fit.knee == 16
    assert fit.a == pytest.approx(0.001, rel=1e-6) and fit.c == pytest.approx(0.01, rel=1e-6)
    assert fit.ceiling_tokens_per_s == pytest.approx(16 / 0.026)
    assert fit.tpot(100) == pytest.approx(fit.tpot(16))


def test_fit_needs_two_batch_sizes() -> None:
    with pytest.raises(AutoFitError, match="two or more batch sizes"):
        fit_tpot([Observation(4, 0.02, 100), Observation(4, 0.021, 100), Observation(8, 0.0, 100)])


def test_scale_carries_to_other_accelerators() -> None:
    """Points 'measured' on an A100 whose stack is slower than the default calibration; the fitted scale
    must predict an L4 under the same stack better than the uncalibrated analytical model does."""
    truth = Calibration(bandwidth_efficiency=0.5, compute_efficiency=0.4, step_overhead_s=0.003)
    context = 700.0
    ref = perf_model("llama2-7b", "A100-80GB", truth)
    obs = [Observation(b, ref.tpot(b, context), context) for b in (1, 4, 16, 32)]
    scale = calibrate(fit_tpot(obs), "llama2-7b", "A100-80GB")
    assert scale.decode_c > 1 and scale.decode_a > 1
    tuned, raw = Predictor("llama2-7b", scale), Predictor("llama2-7b", Scale.analytic())
    target = perf_model("llama2-7b", "L4", truth)
    for b in (1, 8, 16):
        true_tpot = target.tpot(b, context)
        a, c, _ = tuned.line("L4", context)
        ra, rc, _ = raw.line("L4", context)
        assert abs(a * b + c - true_tpot) / true_tpot < 0.1
        assert abs(a * b + c - true_tpot) < abs(ra * b + rc - true_tpot)
    # On the reference itself the prediction is the fitted line.
    a, c, _ = tuned.line("A100-80GB", context)
    assert a * 16 + c == pytest.approx(ref.tpot(16, context), rel=1e-6)


def test_recommend_smallest_meeting_slo_else_largest() -> None:
    """AutoFit's example shape at a 50 ms TPOT: more concurrency needs a bigger slice."""
    pred = Predictor("llama2-7b", Scale.analytic())
    slices = candidates([a.name for a in mig_slices("A100-80GB")])

    def pick(load: int, slo: float = 0.05) -> tuple[str, bool]:
        r = right_size([pred.predict(a, load=load, tpot_slo=slo, context_tokens=1024) for a in slices])
        return r.accelerator, r.meets_slo

    small, mid, big = pick(1), pick(16), pick(64)
    assert small == ("A100-80GB/1g.20gb", True)  # 1g.10gb cannot hold the weights
    assert mid == ("A100-80GB/3g.40gb", True)
    assert big == ("A100-80GB/7g.80gb", True)
    assert pick(500) == ("A100-80GB/7g.80gb", False)  # none can: the largest
    every = [pred.predict(a, load=16, tpot_slo=0.05, context_tokens=1024) for a in slices]
    too_small = next(p for p in every if p.accelerator == "A100-80GB/1g.10gb")
    assert not too_small.fits and too_small.tpot is None
    with pytest.raises(AutoFitError, match="not in the catalog"):
        candidates(["A100", "B300"])


def test_synthesized_profile() -> None:
    pred = Predictor("llama2-7b", Scale.analytic())
    grid = Grid((128, 512, 2048), (16, 128, 512))
    prof = synthesize_profile(pred, "L4", model="llama2-7b", variant="llama2-7b-l4", slo=SLO(tpot=0.1, ttft=0.5),
                              grid=grid)
    assert prof.synthesized and prof.accelerator == "L4" and prof.cost_per_hour == 0.70
    cap = prof.capacity
    assert cap.shape == (3, 3) and (cap > 0).any()
    assert np.all(np.diff(cap, axis=0) <= 0) and np.all(np.diff(cap, axis=1) <= 0)  # longer is harder
    tight = synthesize_profile(pred, "L4", model="m", variant="v", slo=SLO(tpot=0.001), grid=grid)
    assert not tight.capacity.any()
    with pytest.raises(AutoFitError, match="occupancy"):
        synthesize_profile(pred, "L4", model="m", variant="v", slo=SLO(tpot=0.05), grid=grid, occupancy=0)


def test_calibration_from_aibrix_rows() -> None:
    rows = load_benchmark_rows(DATA / "aibrix" / "simulator-llama2-7b-a100.jsonl")
    cells = observations_from_rows(rows)
    # saturated rates are left out: the 1024/128 cell sustains 1..4 req/s and breaks at 8
    assert len(cells[(1024, 128)]) == 3
    assert all(o.ttft is None for o in cells[(1024, 128)])  # that simulator streams nothing
    scale, fits = calibrate_rows(rows, "llama2-7b", "A100-80GB")
    assert len(fits) > 20 and scale.prefill == 1.0
    assert 0.5 < scale.decode_c < 2 and 0.5 < scale.decode_a < 3


def test_recommend_command(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from optimizer.profile import load_profile
    from scaler.cli import main

    out = tmp_path / "a40.json"
    code = main(["rightsize", "--model-params", "llama2-7b", "--load", "16", "--tpot", "0.05", "--accelerators",
                 "A100-80GB,A100-80GB/1g.20gb,A100-80GB/3g.40gb,L4", "--measured",
                 str(DATA / "aibrix" / "simulator-llama2-7b-a100.jsonl"), "--reference", "A100-80GB",
                 "--synthesize-profile", str(out), "--for", "A40", "--grid-inputs", "128,1024",
                 "--grid-outputs", "64,512"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pick: A100-80GB/3g.40gb (the smallest that meets the SLO)" in printed
    assert "A100-80GB/1g.20gb" in printed and "scaled by measurements on A100-80GB" in printed
    prof = load_profile(out)
    assert prof.synthesized and prof.accelerator == "A40" and prof.grid == Grid((128, 1024), (64, 512))
    assert prof.slo == SLO(percentile="99", tpot=0.05)
    assert main(["rightsize", "--model-params", "params=x,layers=32", "--load", "3", "--tpot", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "params must be a positive number" in err and "missing hidden, kv_heads, head_dim" in err
    assert main(["rightsize", "--model-params", "llama2-7b", "--load", "3", "--tpot", "0.05", "--measured",
                 str(DATA / "aibrix" / "simulator-llama2-7b-a100.jsonl")]) == 2
    assert "--reference" in capsys.readouterr().err
