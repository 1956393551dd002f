"""`gpumix rightsize` (AutoFit): the smallest GPU or MIG slice meeting a TPOT SLO at a target concurrency,
from the model's parameters and the analytical model, scaled by measurements of one accelerator when given;
optionally a synthesized profile for an accelerator that was never benchmarked."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from optimizer.autofit import (
    AutoFitError,
    Prediction,
    Predictor,
    Scale,
    calibrate_rows,
    candidates,
    right_size,
    synthesize_profile,
)
from optimizer.perfmodel import MODELS, ModelSpec, PerfModelError, accelerator, model_spec
from optimizer.profile import SLO, Grid, ProfileError
from scaler import logs
from scaler.commands.profile import load_rows, parse_slo

SPEC_KEYS = {"params": "parameters_b", "layers": "layers", "hidden": "hidden", "kv_heads": "kv_heads",
             "head_dim": "head_dim", "bytes_per_param": "bytes_per_param", "max_context": "max_context"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-params", required=True,
                   help=f"a known model ({', '.join(sorted(MODELS))}) or "
                        "params=6.7,layers=32,hidden=4096,kv_heads=32,head_dim=128 (params in billions)")
    p.add_argument("--load", type=int, required=True, help="target concurrency (requests in flight)")
    p.add_argument("--tpot", type=float, required=True, help="TPOT SLO in seconds")
    p.add_argument("--context", type=float, default=1024.0, help="mean tokens per sequence while decoding")
    p.add_argument("--accelerators", help="comma-separated candidates (default: every GPU and MIG slice known)")
    p.add_argument("--measured", type=Path, nargs="*", default=[],
                   help="benchmark rows of one accelerator to fix the scale (gpumix benchmark or AIBrix JSONL)")
    p.add_argument("--reference", help="the accelerator the rows were measured on")
    p.add_argument("--measured-model", help="model name inside the rows, if they hold several")
    p.add_argument("--synthesize-profile", type=Path, metavar="OUT",
                   help="write a synthesized profile (for --for, default: the pick)")
    p.add_argument("--for", dest="synth_for", help="accelerator to synthesize the profile for")
    p.add_argument("--variant", help="variant (Deployment) name of the synthesized profile")
    p.add_argument("--model-name", help="model name in the synthesized profile (default: --model-params name)")
    p.add_argument("--slo", help="SLO of the synthesized profile, e.g. tpot=0.05,ttft=1 (default: tpot=--tpot)")
    p.add_argument("--percentile", default="99", help="percentile of the synthesized profile's SLO")
    p.add_argument("--grid-inputs", default="128,256,512,1024,2048,4096",
                   help="input lengths (tokens) of the synthesized profile's grid")
    p.add_argument("--grid-outputs", default="16,32,64,128,256,512",
                   help="output lengths (tokens) of the synthesized profile's grid")
    p.add_argument("--cost", type=float, help="cost per hour of the synthesized variant (default: catalog)")


def parse_model(text: str) -> ModelSpec:
    if "=" not in text:
        return model_spec(text)
    values: dict[str, float] = {}
    problems: list[str] = []
    name = "custom"
    for part in (x.strip() for x in text.split(",") if x.strip()):
        key, _, val = part.partition("=")
        if key == "name":
            name = val
            continue
        if key not in SPEC_KEYS:
            problems.append(f"--model-params: unknown key {key!r}; use name, {', '.join(SPEC_KEYS)}")
            continue
        try:
            values[SPEC_KEYS[key]] = float(val)
            if values[SPEC_KEYS[key]] <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"--model-params: {key} must be a positive number, got {val!r}")
    named = {part.partition("=")[0].strip() for part in text.split(",")}
    missing = [k for k in ("params", "layers", "hidden", "kv_heads", "head_dim") if k not in named]
    if missing:
        problems.append(f"--model-params: missing {', '.join(missing)}")
    if problems:
        raise PerfModelError("; ".join(problems))
    ints = {k: int(v) for k, v in values.items() if k in ("layers", "hidden", "kv_heads", "head_dim", "max_context")}
    return ModelSpec(name=name, parameters_b=values["parameters_b"], **ints,
                     **({"bytes_per_param": values["bytes_per_param"]} if "bytes_per_param" in values else {}))


def _ticks(text: str, flag: str) -> tuple[int, ...]:
    try:
        ticks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise AutoFitError(f"{flag}: comma-separated token counts, got {text!r}") from exc
    if not ticks or list(ticks) != sorted(set(ticks)) or ticks[0] < 1:
        raise AutoFitError(f"{flag}: strictly increasing positive token counts, got {text!r}")
    return ticks


def format_prediction(p: Prediction, load: int) -> str:
    if not p.fits:
        return f"{p.accelerator:<22} {p.cost_per_hour:7.2f} {'does not fit in memory':>40}"
    tpot = f"{p.tpot * 1000:8.1f}" if p.tpot is not None else f"{'queues':>8}"
    return (f"{p.accelerator:<22} {p.cost_per_hour:7.2f} {tpot} {p.tokens_per_s:10.0f} {p.max_batch:9d} "
            f"{p.knee:6d} {p.ceiling_tokens_per_s:10.0f}  {'yes' if p.meets_slo else 'no'}")


def run(args: argparse.Namespace) -> int:
    logs.configure()
    log = logs.get("rightsize")
    try:
        spec = parse_model(args.model_params)
        if args.load < 1 or not args.tpot > 0 or not args.context > 0:
            raise AutoFitError("--load must be ≥ 1, --tpot and --context positive")
        names = [n.strip() for n in args.accelerators.split(",")] if args.accelerators else None
        pool = candidates(names)
        scale = Scale.analytic()
        if args.measured:
            if not args.reference:
                raise AutoFitError("--measured needs --reference: the accelerator the rows were measured on")
            loaded = load_rows(args.measured, args.measured_model)
            scale, fits = calibrate_rows(loaded.rows, spec, args.reference)
            log.info("calibrated", reference=scale.reference, cells=len(fits), decode_c=round(scale.decode_c, 3),
                     decode_a=round(scale.decode_a, 3), prefill=round(scale.prefill, 3), knee=scale.knee)
        predictor = Predictor(spec, scale)
        preds = [predictor.predict(a, load=args.load, tpot_slo=args.tpot, context_tokens=args.context) for a in pool]
        pick = right_size(preds)
    except (AutoFitError, PerfModelError, ProfileError) as exc:
        print(f"gpumix rightsize: {exc}", file=sys.stderr)
        return 2

    basis = (f"scaled by measurements on {scale.reference} (c×{scale.decode_c:.2f}, a×{scale.decode_a:.2f})"
             if args.measured else "analytical model, datasheet specs")
    print(f"{spec.name}: load {args.load} in flight, TPOT ≤ {args.tpot * 1000:g} ms, context {args.context:g} "
          f"tokens; {basis}")
    print(f"{'accelerator':<22} {'$/h':>7} {'TPOT ms':>8} {'tok/s':>10} {'max batch':>9} {'knee':>6} "
          f"{'ceiling':>10}  meets")
    for p in sorted(preds, key=lambda p: (p.cost_per_hour, p.memory_gb, p.accelerator)):
        print(format_prediction(p, args.load))
    verdict = "the smallest that meets the SLO" if pick.meets_slo else "none meets the SLO; the largest"
    print(f"pick: {pick.accelerator} ({verdict})")

    if args.synthesize_profile is not None:
        try:
            target = accelerator(args.synth_for) if args.synth_for else accelerator(pick.accelerator)
            slo = parse_slo(args.slo, args.percentile) if args.slo else SLO(percentile=args.percentile,
                                                                           tpot=args.tpot)
            grid = Grid(_ticks(args.grid_inputs, "--grid-inputs"), _ticks(args.grid_outputs, "--grid-outputs"))
            variant = args.variant or f"{spec.name}-{target.name.lower().replace('/', '-').replace('.', '-')}"
            profile = synthesize_profile(predictor, target, model=args.model_name or spec.name, variant=variant,
                                         slo=slo, grid=grid, cost_per_hour=args.cost, created=time.time())
        except (AutoFitError, PerfModelError, ProfileError) as exc:
            print(f"gpumix rightsize: {exc}", file=sys.stderr)
            return 2
        args.synthesize_profile.write_text(json.dumps(profile.to_json(), indent=1) + "\n")
        print(f"synthesized profile for {target.name} ({variant}): {args.synthesize_profile}; "
              f"{int((profile.capacity > 0).sum())}/{profile.grid.size} cells servable")
    log.info("recommendation", model=spec.name, pick=pick.accelerator, meets_slo=pick.meets_slo, load=args.load,
             tpot_slo=args.tpot)
    return 0
