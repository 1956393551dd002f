"""`gpumix benchmark`: measure one OpenAI-compatible endpoint over a grid of lengths and loads (or a trace),
one JSON line per point, resumable; optionally AIBrix's JSONL too, and a PNG of latency against load."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from scaler import logs
from scaler.benchmark import (
    API_PATHS,
    ARRIVALS,
    Benchmark,
    BenchmarkError,
    Point,
    Unreachable,
    endpoint_url,
    grid_points,
    load_trace,
    read_rows,
)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000 (nothing else is contacted)")
    p.add_argument("--model", required=True, help="model name sent in each request")
    p.add_argument("--api", choices=sorted(API_PATHS), default="completions", help="OpenAI API to call")
    p.add_argument("--input", type=_ints, default=[128, 512], help="prompt lengths in tokens, e.g. 128,512,2048")
    p.add_argument("--output", type=_ints, default=[32, 128], help="output lengths in tokens")
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument("--rates", type=_floats, help="offered request rates (req/s), e.g. 1,2,4,8")
    load.add_argument("--concurrency", type=_ints, help="requests kept in flight, e.g. 1,4,16,64")
    load.add_argument("--trace", type=Path, help="replay a trace (Azure CSV or Mooncake JSONL) instead of a grid")
    p.add_argument("--arrival", choices=ARRIVALS, default="poisson", help="arrival process with --rates")
    p.add_argument("--requests", type=int, default=100, help="requests per point (trace: at most this many)")
    p.add_argument("--speedup", type=float, default=1.0, help="trace time divided by this")
    p.add_argument("--out", type=Path, required=True, help="JSONL rows; existing complete points are skipped")
    p.add_argument("--aibrix-out", type=Path, help="also write aibrix_benchmark-style JSONL here")
    p.add_argument("--max-connections", type=int, default=64, help="connection pool size")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout (s)")
    p.add_argument("--point-timeout", type=float, default=600.0, help="time limit per point (s)")
    p.add_argument("--no-ignore-eos", action="store_true", help="do not send vLLM's ignore_eos")
    p.add_argument("--no-calibrate", action="store_true", help="do not calibrate prompt lengths on usage")
    p.add_argument("--api-key-env", help="environment variable holding a bearer token")
    p.add_argument("--seed", type=int, default=0, help="random seed of arrivals and prompts")
    p.add_argument("--plot", type=Path, help="PNG: P99 TPOT and E2E against measured throughput per cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    logs.configure()
    log = logs.get("benchmark")
    trace = []
    try:
        endpoint_url(args.url, args.api)
        if args.trace is not None:
            trace = load_trace(args.trace, limit=args.requests, speedup=args.speedup)
            lengths_in = sorted(r.input_tokens for r in trace)
            lengths_out = sorted(r.output_tokens for r in trace)
            points = [Point(lengths_in[len(trace) // 2], lengths_out[len(trace) // 2], requests=len(trace),
                            trace=args.trace.name)]
        else:
            points = grid_points(args.input, args.output, rates=args.rates or (),
                                 concurrencies=args.concurrency or (), arrival=args.arrival,
                                 requests=args.requests)
        read_rows(args.out)  # refuse a foreign file before sending anything
        api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
        bench = Benchmark(args.url, args.model, api=args.api, seed=args.seed, max_connections=args.max_connections,
                          request_timeout=args.timeout, point_timeout=args.point_timeout,
                          ignore_eos=not args.no_ignore_eos, api_key=api_key, calibrate=not args.no_calibrate)
    except BenchmarkError as exc:
        print(f"gpumix benchmark: {exc}", file=sys.stderr)
        return 2

    print(f"{'point':<44} {'ok':>5} {'err':>5} {'req/s':>8} {'tok/s':>9} {'TTFT p99':>9} {'TPOT p99':>9} "
          f"{'E2E p99':>9}  errors")

    def show(row: dict[str, Any]) -> None:
        print(format_row(row), flush=True)
        log.info("point", input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                 rate=row["request_rate"], concurrency=row["concurrency"], completed=row["completed"],
                 errors=row["errors"], tput_rps=round(row["tput_rps"], 4), complete=row["complete"])

    try:
        result = asyncio.run(bench.run(points, args.out, aibrix_out=args.aibrix_out, trace=trace,
                                       progress=not args.no_progress, on_row=show))
    except Unreachable as exc:
        print(f"gpumix benchmark: {exc}; nothing was measured", file=sys.stderr)
        return 1
    for length, reported in sorted(result.calibration.items()):
        if length in result.calibration_failed:
            log.warning("prompt_length_uncalibrated", input_tokens=length,
                        reason=f"the calibration request failed: {result.calibration_failed[length]}")
        elif reported is None:
            log.warning("prompt_length_uncalibrated", input_tokens=length,
                        reason="the server reported no usage.prompt_tokens; sent one word per token")
        elif reported != length:
            log.warning("prompt_length_off", input_tokens=length, server_counted=reported)
    log.info("benchmark_done", measured=len(result.rows), skipped=len(result.skipped),
             interrupted=result.interrupted, out=str(args.out))
    if result.skipped:
        print(f"skipped {len(result.skipped)} point(s) already in {args.out}")
    if args.plot is not None:
        rows = [r for r in read_rows(args.out) if r.get("model") == args.model and r.get("complete")]
        plot_rows(rows, args.plot)
        print(f"plot: {args.plot}")
    if result.interrupted:
        print("interrupted: finished points are saved; run the same command again to continue", file=sys.stderr)
        return 130
    if result.aborted is not None:
        print(f"gpumix benchmark: stopped: {result.aborted}", file=sys.stderr)
        return 1
    if result.failed:
        print(f"gpumix benchmark: {len(result.failed)} point(s) had failed requests and are not marked complete "
              f"(a profile from them would be wrong); run the same command again to measure them again",
              file=sys.stderr)
        return 1
    return 0


def _fmt(row: dict[str, Any], metric: str) -> str:
    stats = row.get("latency", {}).get(metric)
    return f"{stats['P99']:9.4f}" if stats else f"{'-':>9}"


def format_row(row: dict[str, Any]) -> str:
    load = f"c={row['concurrency']}" if row["concurrency"] is not None else f"{row['request_rate']:g}/s"
    if row.get("trace"):
        load = f"trace {row['trace']}"
    label = f"in={row['input_tokens']} out={row['output_tokens']} {load}" + ("" if row["complete"] else " (cut)")
    errors = ",".join(f"{k}={v}" for k, v in row["errors"].items())
    return (f"{label:<44} {row['completed']:>5} {sum(row['errors'].values()):>5} {row['tput_rps']:8.3f} "
            f"{row['tokens_per_s']:9.1f} {_fmt(row, 'TTFT')} {_fmt(row, 'TPOT')} {_fmt(row, 'E2E')}  {errors}")


def plot_rows(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tpot, ax_e2e) = plt.subplots(1, 2, figsize=(11, 4.5))
    cells = sorted({(r["input_tokens"], r["output_tokens"]) for r in rows})
    for cell in cells:
        pts = sorted((r for r in rows if (r["input_tokens"], r["output_tokens"]) == cell),
                     key=lambda r: r["tput_rps"])
        xs = [r["tput_rps"] for r in pts]
        for ax, metric in ((ax_tpot, "TPOT"), (ax_e2e, "E2E")):
            ys = [r["latency"].get(metric, {}).get("P99", float("nan")) for r in pts]
            ax.plot(xs, ys, marker="o", label=f"in={cell[0]} out={cell[1]}")
    for ax, metric in ((ax_tpot, "TPOT P99 (s)"), (ax_e2e, "E2E P99 (s)")):
        ax.set_xlabel("measured throughput (req/s)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    ax_e2e.legend(fontsize=7)
    fig.suptitle("gpumix benchmark: latency against load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
