"""`gpumix profile`: benchmark rows (ours or AIBrix's JSONL) → a profile under an SLO, the way
`aibrix_gen_profile` does it (optimizer.profile.derive_profile), with the reasons why a cell meets no rate,
a heatmap of the capacity table, and optionally a copy in Redis where `gpumix serve` reads profiles."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from optimizer.profile import (
    PERCENTILES,
    SLO,
    SLO_METRICS,
    SUSTAINED_SHARE,
    BenchmarkRow,
    FloatArray,
    Grid,
    Profile,
    ProfileError,
    derive_profile,
)
from scaler import logs
from scaler.benchmark import BenchmarkError, iter_benchmark_rows, rows_to_benchmark_rows

OUR_KEY = "gpumix:profile:{model}:{variant}"
AIBRIX_KEY = "aibrix:profile_{model}_{variant}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rows", nargs="+", type=Path, help="benchmark JSONL (gpumix benchmark or aibrix_benchmark)")
    p.add_argument("--slo", required=True, help="latency limits, e.g. ttft=0.5,tpot=0.05 or e2e=5 (s, or 50ms)")
    p.add_argument("--percentile", default="99", help=f"one of {', '.join(PERCENTILES)}")
    p.add_argument("--variant", required=True, help="the Deployment this profile describes")
    p.add_argument("--accelerator", required=True, help="GPU or MIG slice, e.g. A100-80GB or A100-40GB/3g.20gb")
    p.add_argument("--cost", type=float, required=True, help="cost per replica-hour")
    p.add_argument("--model", help="model name (default: the one in the rows)")
    p.add_argument("--gpus-per-replica", type=int, default=1, help="GPUs one replica uses")
    p.add_argument("--out", type=Path, help="our profile JSON (default: profile-<variant>.json)")
    p.add_argument("--aibrix-out", type=Path, help="also write AIBrix's profile JSON")
    p.add_argument("--to", help="store in Redis: redis://host:port/[db]?model=NAME")
    p.add_argument("--aibrix-key", action="store_true", help="with --to, also write the AIBrix key")
    p.add_argument("--plot", type=Path, help="heatmap PNG of the capacity table")


# ----------------------------------------------------------------------------------------------- inputs


def parse_slo(text: str, percentile: str) -> SLO:
    """`ttft=0.5,tpot=50ms` → SLO. Every bad part is reported at once."""
    problems: list[str] = []
    limits: dict[str, float] = {}
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep:
            problems.append(f"--slo: {part!r} is not NAME=SECONDS")
            continue
        if name not in SLO_METRICS:
            problems.append(f"--slo: unknown metric {name!r}; use {', '.join(SLO_METRICS)}")
            continue
        value = value.strip().lower()
        scale = 1.0
        if value.endswith("ms"):
            value, scale = value[:-2], 1e-3
        elif value.endswith("s"):
            value = value[:-1]
        try:
            seconds = float(value) * scale
        except ValueError:
            problems.append(f"--slo: {name} must be a number of seconds, got {part.partition('=')[2]!r}")
            continue
        if not math.isfinite(seconds) or seconds <= 0:
            problems.append(f"--slo: {name} must be positive, got {seconds}")
            continue
        limits[name] = seconds
    if percentile not in PERCENTILES:
        problems.append(f"--percentile: must be one of {', '.join(PERCENTILES)}, got {percentile!r}")
    if not limits and not problems:
        problems.append("--slo: give at least one of ttft, tpot, e2e")
    if problems:
        raise ProfileError("slo", problems)
    return SLO(percentile=percentile, **limits)


@dataclass
class LoadedRows:
    rows: list[BenchmarkRow]
    models: set[str]
    skipped: list[str]


def load_rows(paths: Sequence[Path], model: str | None) -> LoadedRows:
    """Rows of both formats from several files. Our rows carry the model and are filtered by it; incomplete
    points (Ctrl-C) and trace replays are left out, with a note."""
    rows: list[BenchmarkRow] = []
    models: set[str] = set()
    skipped: list[str] = []
    problems: list[str] = []
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        try:
            for n, item in iter_benchmark_rows(lines, str(path)):
                if isinstance(item, BenchmarkRow):
                    rows.append(item)
                    continue
                if model is not None and item["model"] != model:
                    continue
                models.add(item["model"])
                if not item.get("complete", False):
                    skipped.append(f"{path}:{n}: point was interrupted; re-run the benchmark to finish it")
                elif item.get("mode") == "trace":
                    skipped.append(f"{path}:{n}: trace replay mixes lengths; not a grid point")
                else:
                    rows.extend(rows_to_benchmark_rows(item))
        except (BenchmarkError, ValueError) as exc:
            problems.append(str(exc))
    if len(models) > 1 and model is None:
        problems.append(f"rows hold several models ({', '.join(sorted(models))}): choose one with --model")
    if not rows and not problems:
        problems.append("no usable benchmark rows" + (f" for model {model!r}" if model else ""))
    if problems:
        raise ProfileError(", ".join(str(p) for p in paths), problems)
    return LoadedRows(rows, models, skipped)


# ------------------------------------------------------------------------------------------ explanation


def _failures(metrics: dict[str, BenchmarkRow], rate: float, slo: SLO) -> list[str]:
    why: list[str] = []
    tput = metrics.get("TPUT")
    if tput is None:
        why.append("no throughput (TPUT) row")
    elif tput.mean < SUSTAINED_SHARE * rate:
        why.append(f"throughput {tput.mean:.3g} req/s < {SUSTAINED_SHARE:.0%} of offered {rate:g} req/s")
    label = "mean" if slo.percentile == "mean" else f"P{slo.percentile}"
    for metric, limit in slo.limits().items():
        row = metrics.get(metric.upper())
        value = None if row is None else row.value(slo.percentile)
        if value is None:
            why.append(f"no {metric.upper()} {label} measured")
        elif value > limit:
            why.append(f"{metric.upper()} {label} {value:.3g} s > {limit:g} s")
    return why


def explain_cells(rows: Iterable[BenchmarkRow], slo: SLO, grid: Grid, capacity: FloatArray) -> list[str]:
    """One line per cell that meets no rate (why, at the lightest load measured, since heavier loads only
    make it worse), and per cell whose SLO held even at the heaviest rate tried (capacity is a floor)."""
    points: dict[tuple[int, int], dict[float, dict[str, BenchmarkRow]]] = {}
    for row in rows:
        points.setdefault((row.output_tokens, row.input_tokens), {}).setdefault(row.request_rate, {})[row.metric] = row
    notes: list[str] = []
    for i, out_t in enumerate(grid.outputs):
        for j, in_t in enumerate(grid.inputs):
            cell = f"in={in_t} out={out_t}"
            by_rate = points.get((out_t, in_t), {})
            if not by_rate:
                notes.append(f"{cell}: not measured")
                continue
            if capacity[i, j] <= 0:
                lightest = min(by_rate)
                reasons = "; ".join(_failures(by_rate[lightest], lightest, slo)) or "unknown"
                notes.append(f"{cell}: meets no rate; at the lightest load measured ({lightest:g} req/s): {reasons}")
            else:
                heaviest = max(by_rate)
                if not _failures(by_rate[heaviest], heaviest, slo) and len(by_rate) > 1:
                    notes.append(f"{cell}: SLO still met at the heaviest load tried ({heaviest:g} req/s); "
                                 f"capacity {capacity[i, j]:.3g} req/s is a lower bound")
    return notes


def format_table(profile: Profile) -> str:
    head = "out\\in " + "".join(f"{t:>9}" for t in profile.grid.inputs)
    lines = [head]
    for i, out_t in enumerate(profile.grid.outputs):
        cells = "".join(f"{v:9.3f}" if v > 0 else f"{'-':>9}" for v in profile.capacity[i])
        lines.append(f"{out_t:>7}" + cells)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- outputs


def redis_target(url: str, model: str) -> tuple[str, str]:
    """`redis://host:port/db?model=NAME` → (connection URL without our parameter, model name)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ProfileError("--to", [f"must be a redis:// URL, got {url!r}"])
    query = parse_qs(parts.query)
    chosen = query.pop("model", [model])[-1]
    rest = urlencode({k: v[-1] for k, v in query.items()})
    return urlunsplit(parts._replace(query=rest)), chosen


def store_in_redis(profile: Profile, url: str, *, aibrix_key: bool) -> list[str]:
    import redis

    conn_url, model = redis_target(url, profile.model)
    if model != profile.model:
        # The store checks that a profile names the model its key names.
        profile = replace(profile, model=model)
    client = redis.Redis.from_url(conn_url, socket_timeout=10)
    keys = []
    try:
        key = OUR_KEY.format(model=model, variant=profile.variant)
        client.set(key, json.dumps(profile.to_json()))
        keys.append(key)
        if aibrix_key:
            key = AIBRIX_KEY.format(model=model, variant=profile.variant)
            client.set(key, json.dumps(profile.to_aibrix()))
            keys.append(key)
    finally:
        client.close()
    return keys


def plot_capacity(profile: Profile, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cap = profile.capacity
    fig, ax = plt.subplots(figsize=(1.1 * len(profile.grid.inputs) + 3, 0.6 * len(profile.grid.outputs) + 2.5))
    masked = np.ma.masked_less_equal(cap, 0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    img = ax.imshow(masked, cmap=cmap, origin="lower", aspect="auto")
    ax.set_xticks(range(len(profile.grid.inputs)), [str(t) for t in profile.grid.inputs])
    ax.set_yticks(range(len(profile.grid.outputs)), [str(t) for t in profile.grid.outputs])
    ax.set_xlabel("input tokens")
    ax.set_ylabel("output tokens")
    for i in range(cap.shape[0]):
        for j in range(cap.shape[1]):
            ax.text(j, i, f"{cap[i, j]:.2g}" if cap[i, j] > 0 else "×", ha="center", va="center", fontsize=8,
                    color="#aa0000" if cap[i, j] <= 0 else ("black" if cap[i, j] > 0.6 * cap.max() else "white"))
    fig.colorbar(img, ax=ax, label="req/s per replica within SLO")
    limits = ", ".join(f"{k}≤{v:g}s" for k, v in profile.slo.limits().items())
    ax.set_title(f"{profile.model} on {profile.variant} ({profile.accelerator}), P{profile.slo.percentile} {limits}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build(args: argparse.Namespace) -> tuple[Profile, LoadedRows, list[str]]:
    problems: list[str] = []
    slo = None
    try:
        slo = parse_slo(args.slo, str(args.percentile))
    except ProfileError as exc:
        problems += exc.problems
    if not (args.cost > 0 and math.isfinite(args.cost)):
        problems.append(f"--cost: must be a positive cost per hour, got {args.cost}")
    if args.gpus_per_replica < 1:
        problems.append(f"--gpus-per-replica: must be ≥ 1, got {args.gpus_per_replica}")
    if problems:
        raise ProfileError("arguments", problems)
    assert slo is not None
    loaded = load_rows(args.rows, args.model)
    model = args.model or (next(iter(loaded.models)) if loaded.models else None)
    if model is None:
        # AIBrix rows carry a model field that the shared parser drops; read it from the first line.
        model = _aibrix_model(args.rows) or args.variant
    profile = derive_profile(loaded.rows, slo, model=model, variant=args.variant, accelerator=args.accelerator,
                             cost_per_hour=args.cost, gpus_per_replica=args.gpus_per_replica, created=time.time())
    return profile, loaded, explain_cells(loaded.rows, slo, profile.grid, profile.capacity)


def _aibrix_model(paths: Sequence[Path]) -> str | None:
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                item: Any = json.loads(line)
                model = item.get("model") if isinstance(item, dict) else None
                return model if isinstance(model, str) and model else None
    return None


def run(args: argparse.Namespace) -> int:
    logs.configure()
    log = logs.get("profile")
    try:
        profile, loaded, notes = build(args)
    except ProfileError as exc:
        print(f"gpumix profile: {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    for note in loaded.skipped:
        log.warning("row_skipped", note=note)
    print(f"{profile.model} on {profile.variant} ({profile.accelerator}), cost {profile.cost_per_hour:g}/h, "
          f"SLO {profile.slo.to_json()}")
    print("capacity (req/s per replica; - = meets no rate):")
    print(format_table(profile))
    if notes:
        print("notes:")
        for note in notes:
            print(f"  {note}")
    out = args.out or Path(f"profile-{profile.variant}.json")
    out.write_text(json.dumps(profile.to_json(), indent=1) + "\n")
    print(f"profile: {out}")
    if args.aibrix_out is not None:
        args.aibrix_out.write_text(json.dumps(profile.to_aibrix(), indent=1) + "\n")
        print(f"aibrix profile: {args.aibrix_out}")
    if args.plot is not None:
        plot_capacity(profile, args.plot)
        print(f"heatmap: {args.plot}")
    if args.to:
        try:
            keys = store_in_redis(profile, args.to, aibrix_key=args.aibrix_key)
        except ProfileError as exc:
            print(f"gpumix profile: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # redis errors: the file is written; say what failed
            print(f"gpumix profile: cannot store in Redis at {urlsplit(args.to).hostname}: {exc}", file=sys.stderr)
            return 1
        print("stored: " + ", ".join(keys))
    log.info("profile_written", model=profile.model, variant=profile.variant, out=str(out),
             cells=int(profile.grid.size), servable=int((profile.capacity > 0).sum()))
    return 0
