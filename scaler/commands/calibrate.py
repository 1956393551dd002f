"""`gpumix calibrate`: for a running system, each variant's observed capacity against its profile and the
stored corrections; write corrected profiles; freeze, unfreeze or reset a variant's correction or a model's
headroom.

Reads Prometheus with the service's configuration (the same file, GPUMIX_* environment and label names;
read-only) plus the calibration's per-pod evidence queries (scaler/config.py, `evidence_*`), which the
service asks every `calibration_interval`.
Controls go to Redis' `gpumix:calibration:control`, which a running `gpumix serve` applies next cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from redis.exceptions import RedisError

from optimizer.calibrate import (
    CalibrationError,
    CalibrationSettings,
    CalibrationState,
    VariantEvidence,
    VariantWindow,
    Verdict,
    apply,
    apply_control,
    attainment,
    judge,
    model_slo,
    served_histograms,
    variant_window,
)
from optimizer.ids import VariantId
from scaler.config import EVIDENCE_QUERIES, Config, ConfigError, duration_s, load
from scaler.evidence import parse_evidence
from scaler.prometheus import Observer

# ---------------------------------------------------------------------------------------------- CLI

FLAGS = (
    ("--prometheus", "prometheus", "Prometheus base URL"),
    ("--redis", "redis", "Redis holding profiles and calibration state"),
    ("--profiles", "profiles", "directory of profile JSON files"),
    ("--inventory", "inventory", "static inventory YAML"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the service's YAML configuration (flags and GPUMIX_* env win)")
    for flag, dest, help_text in FLAGS:
        p.add_argument(flag, dest=dest, default=None, help=help_text)
    p.add_argument("--kubernetes", action="store_true", default=None, help="inventory from the Kubernetes API")
    p.add_argument("--window", default="5m", help="observation window")
    p.add_argument("--warmup", type=float, default=CalibrationSettings.warmup_s,
                   help="seconds after ready before a replica's samples count")
    p.add_argument("--min-completions", type=float, default=CalibrationSettings.min_completions,
                   help="fewest completions in the window for a variant's window to count")
    p.add_argument("--write", type=Path, metavar="DIR", help="write profiles with the stored corrections applied")
    for action in ("freeze", "unfreeze", "reset"):
        p.add_argument(f"--{action}", action="append", default=[], metavar="VARIANT",
                       help=f"{action} a variant's correction (namespace/variant)")
        p.add_argument(f"--{action}-headroom", action="append", default=[], metavar="MODEL",
                       help=f"{action} a model's utilisation target (namespace/model)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _controls(args: argparse.Namespace) -> list[tuple[str, bool | None, bool]]:
    """(state key, frozen or None, reset) per requested control."""
    out: list[tuple[str, bool | None, bool]] = []
    for action, frozen, reset in (("freeze", True, False), ("unfreeze", False, False), ("reset", None, True)):
        out += [(f"variant:{v}", frozen, reset) for v in getattr(args, action)]
        out += [(f"model:{m}", frozen, reset) for m in getattr(args, f"{action}_headroom")]
    return out


def _redis_url(args: argparse.Namespace) -> str | None:
    if args.redis:
        return str(args.redis)
    if os.environ.get("GPUMIX_REDIS"):
        return os.environ["GPUMIX_REDIS"]
    if args.config:
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            url = (yaml.safe_load(Path(args.config).read_text()) or {}).get("redis")
            return None if url is None else str(url)
    return None


def run(args: argparse.Namespace) -> int:
    settings = CalibrationSettings(warmup_s=args.warmup, min_completions=args.min_completions)
    try:
        settings.checked()
        window_s = duration_s(args.window)
    except (CalibrationError, ValueError) as exc:
        print(f"gpumix calibrate: {exc}", file=sys.stderr)
        return 2
    controls = _controls(args)
    bad = [k for k, _, _ in controls if "/" not in k.partition(":")[2]]
    if bad:
        print(f"gpumix calibrate: name {', '.join(k.partition(':')[2] for k in bad)} as namespace/name",
              file=sys.stderr)
        return 2
    if controls and not args.write:
        url = _redis_url(args)
        if url is None:
            print("gpumix calibrate: controls are kept in Redis: give --redis URL", file=sys.stderr)
            return 2
        return asyncio.run(_set_controls(url, controls, settings))
    overrides = {dest: getattr(args, dest) for _, dest, _ in FLAGS}
    overrides["kubernetes"] = args.kubernetes
    overrides["calibration_window"] = args.window
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"gpumix calibrate: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_report(config, args, settings, window_s, controls))


async def _set_controls(url: str, controls: Sequence[tuple[str, bool | None, bool]],
                        settings: CalibrationSettings) -> int:
    from scaler.calibration_store import CalibrationStore
    from scaler.store import connect

    client = connect(url)
    try:
        store = CalibrationStore(client, settings)
        now = time.time()
        for key, frozen, reset in controls:
            control = await store.set_control(key, frozen=frozen, reset_at=now if reset else None)
            print(f"{key}: frozen={str(control.frozen).lower()} reset_at={control.reset_at}")
    except (RedisError, OSError) as exc:
        print(f"gpumix calibrate: redis {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    return 0


async def _report(config: Config, args: argparse.Namespace, settings: CalibrationSettings, window_s: float,
                  controls: Sequence[tuple[str, bool | None, bool]]) -> int:
    from scaler.calibration_store import CalibrationStore
    from scaler.inventory import Inventory, InventoryError, load_inventory
    from scaler.store import ProfileStore, connect

    redis_client = connect(config.redis) if config.redis else None
    kube = None
    try:
        inventory: Inventory
        if config.kubernetes:
            from scaler.kube import KubeInventory

            kube = KubeInventory(config)
            await kube.start()
            inventory = kube.current()
        else:
            assert config.inventory is not None
            inventory = load_inventory(config.inventory)
        profiles = await ProfileStore(config.profiles, redis_client).lookup(inventory)
        state, unreadable, stored_controls = CalibrationState(), {}, {}
        if redis_client is not None:
            store = CalibrationStore(redis_client, settings)
            state, unreadable, stored_controls = await store.read()
            if controls:
                now = time.time()
                for key, frozen, reset in controls:
                    stored_controls[key] = await store.set_control(key, frozen=frozen,
                                                                   reset_at=now if reset else None)
        state = apply_control(state, stored_controls, settings)
        observer = Observer(config)
        results, errors = await observer.run_queries(EVIDENCE_QUERIES, time.time())
        if errors:
            failed = ", ".join(f"{q}: {kind}" for q, kind in sorted(errors.items()))
            print(f"gpumix calibrate: prometheus {config.prometheus}: {failed}", file=sys.stderr)
            return 1
    except InventoryError as exc:
        print(f"gpumix calibrate: inventory {exc.source}:\n  - " + "\n  - ".join(exc.problems), file=sys.stderr)
        return 2
    except (RedisError, OSError) as exc:
        print(f"gpumix calibrate: redis: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # prometheus-api-client raises its own and requests' errors
        print(f"gpumix calibrate: prometheus {config.prometheus}: {exc}", file=sys.stderr)
        return 1
    finally:
        if kube is not None:
            await kube.stop()
        if redis_client is not None:
            with contextlib.suppress(Exception):
                await redis_client.aclose()

    seen = parse_evidence(config, results)
    rows = []
    for model in inventory.models:
        for v in model.variants:
            key = f"{v.namespace}/{v.name}"
            status = profiles[VariantId(v.namespace, v.name)]
            entry = state.variants.get(key)
            row: dict[str, Any] = {"variant": key, "model": f"{model.namespace}/{model.name}",
                                   "profile": status.status, "stored_factor": 1.0 if entry is None else entry.factor,
                                   "frozen": False if entry is None else entry.frozen}
            if status.profile is None:
                row["detail"] = status.detail
                rows.append(row)
                continue
            obs = seen.get(VariantId(v.namespace, v.name), VariantEvidence(window_s))
            window, problems = variant_window(key, obs, status.profile, settings)
            verdict = judge(row["stored_factor"], window, settings)
            row.update(_observed(window, verdict))
            row["problems"] = problems
            rows.append(row)
            if args.write:
                args.write.mkdir(parents=True, exist_ok=True)
                corrected = apply(status.profile, state.correction(key, settings))
                (args.write / f"{v.name}.json").write_text(json.dumps(corrected.to_json(), indent=1))
    models = []
    for model in inventory.models:
        key = f"{model.namespace}/{model.name}"
        usable = [p for v in model.variants if (p := profiles[VariantId(v.namespace, v.name)].profile) is not None]
        observed = None
        if usable:
            evidence = [e for v in model.variants if (e := seen.get(VariantId(v.namespace, v.name))) is not None]
            att = attainment(served_histograms(evidence), model_slo(usable), settings.attainment_target,
                             settings.interpolation)
            observed = None if att is None else att.attainment
        entry = state.models.get(key)
        models.append({"model": key, "utilization": state.utilization(key, settings),
                       "frozen": entry is not None and entry.frozen,
                       "stored_attainment": None if entry is None else entry.attainment,
                       "observed_attainment": observed, "target": settings.attainment_target})
    if args.json:
        print(json.dumps({"window_s": window_s, "variants": rows, "models": models, "unreadable": unreadable},
                         indent=1, default=_finite))
    else:
        _print_table(rows, models, unreadable, args.window)
    return 0


def _finite(x: object) -> object:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _observed(window: VariantWindow, verdict: Verdict) -> dict[str, Any]:
    ev = verdict.evidence
    observed = (None if ev.estimate is None or window.predicted_rps is None or not math.isfinite(ev.estimate)
                else ev.estimate * window.predicted_rps)
    return {"replicas_used": ev.replicas_used, "replicas_warming": ev.replicas_warming,
            "completions": ev.completions, "profile_rps": window.predicted_rps, "load": ev.load,
            "attainment": ev.attainment, "latency_ratio": _finite(ev.latency_ratio),
            "estimate": _finite(ev.estimate), "observed_rps": observed, "verdict": verdict.outcome.value,
            "would_set": verdict.after, "why": verdict.detail}


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _print_table(rows: list[dict[str, Any]], models: list[dict[str, Any]], unreadable: Mapping[str, str],
                 window: str) -> None:
    print(f"per variant, over the last {window} (capacities in req/s per replica at the observed mix)")
    head = ("variant", "replicas", "load", "profile", "observed", "estimate", "stored", "attain", "tail/lim",
            "verdict")
    lines = [head]
    for r in rows:
        if r["profile"] != "ok":
            lines.append((r["variant"], "-", "-", r["profile"], "-", "-", _fmt(r["stored_factor"]), "-", "-", "-"))
            continue
        lines.append((r["variant"], f"{r['replicas_used']}+{r['replicas_warming']}w", _fmt(r["load"]),
                      _fmt(r["profile_rps"]), _fmt(r["observed_rps"]), _fmt(r["estimate"]),
                      _fmt(r["stored_factor"]) + (" (frozen)" if r["frozen"] else ""), _fmt(r["attainment"], ".4f"),
                      _fmt(r["latency_ratio"]), r["verdict"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        for problem in r.get("problems", []):
            print(f"  {r['variant']}: {problem}")
    if models:
        print("\nper model: utilisation target (headroom)")
        for m in models:
            print(f"  {m['model']}: u={m['utilization']:.3f}{' (frozen)' if m['frozen'] else ''}, attainment "
                  f"{_fmt(m['observed_attainment'], '.4f')} over the window (target {m['target']}), "
                  f"{_fmt(m['stored_attainment'], '.4f')} in the service's last window")
    for key, problem in unreadable.items():
        print(f"unreadable stored entry {key}: {problem}")
