"""Accelerated replay of a request trace through the simulated fleet under one scaling policy.

Time advances in CYCLE_S steps: the arrivals of the step are submitted at their own times, then the policy
acts at the step's end. Cost is what the replicas that existed cost until the last arrival (starting and
draining pods included); every request is followed to its end. A request meets the SLO when its TTFT and
its TPOT (and E2E, if the SLO has one) are within the fleet's limits; a dropped request does not.

Traces: Azure CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`) or Mooncake JSONL (`timestamp` in ms,
`input_length`, `output_length`).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.profile import resample
from sim.engine import DEFAULT_ROUTING, Completion, Fleet, Request
from sim.fleet import FleetSpec
from sim.policies import CYCLE_S, Policy, Trace, fleet_grid, without_cold_start

TAIL_S = 1800.0  # longest we follow requests after the last arrival


class TraceError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    # Azure's timestamps carry 7 fractional digits; datetime takes at most 6.
    if "." in text:
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        rest = frac[len(digits):]
        text = f"{head}.{digits[:6]}{rest}"
    return datetime.fromisoformat(text).timestamp()


def load_trace(path: str | Path, speedup: float = 1.0) -> Trace:
    """Times start at 0; `speedup` compresses time (×2 = the same requests in half the time)."""
    source = str(path)
    if not math.isfinite(speedup) or speedup <= 0:
        raise TraceError(source, [f"speedup: must be a positive number, got {speedup}"])
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TraceError(source, [f"cannot read: {exc}"]) from exc
    rows: list[tuple[float, int, int]] = []
    problems: list[str] = []
    stripped = text.lstrip()
    if stripped.startswith("{"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rows.append((float(obj["timestamp"]) / 1000.0, int(obj["input_length"]), int(obj["output_length"])))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"line {n}: needs timestamp (ms), input_length, output_length ({exc})")
    else:
        reader = csv.DictReader(text.splitlines())
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise TraceError(source, [f"header: expected {sorted(need)} (Azure format) or JSONL lines with "
                                      f"timestamp,input_length,output_length (Mooncake); got {reader.fieldnames}"])
        for n, row in enumerate(reader, start=2):
            try:
                rows.append((_timestamp(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
            except (ValueError, TypeError) as exc:
                problems.append(f"line {n}: {exc}")
    if len(problems) > 20:
        problems = [*problems[:20], f"... {len(problems) - 20} more"]
    if problems:
        raise TraceError(source, problems)
    if not rows:
        raise TraceError(source, ["no requests"])
    arr = np.array(rows, dtype=float)
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    times = (arr[:, 0] - arr[0, 0]) / speedup
    prompts = np.maximum(arr[:, 1], 0).astype(np.int64)
    outputs = np.maximum(arr[:, 2], 1).astype(np.int64)  # a request yields at least one token
    return Trace(times, prompts, outputs)


def synthetic_trace(seed: int, duration_s: float = 3600.0, mean_rps: float = 4.0, period_s: float = 3600.0,
                    amplitude: float = 0.6, prompt_median: float = 1000.0, output_median: float = 120.0) -> Trace:
    """A diurnal Poisson trace: rate mean·(1 + amplitude·sin) over `period_s` (a day compressed), starting at
    the trough; lengths log-normal around the medians (σ 1.0 prompts, 0.8 outputs), capped at 8000 / 1024
    tokens. Thinning of a homogeneous Poisson process at the peak rate, so arrivals are exact for the rate."""
    if not (0.0 <= amplitude < 1.0) or mean_rps <= 0 or duration_s <= 0 or period_s <= 0:
        raise TraceError("synthetic", [f"need mean_rps > 0, duration_s > 0, period_s > 0, 0 <= amplitude < 1; got "
                                       f"{mean_rps}, {duration_s}, {period_s}, {amplitude}"])
    rng = np.random.default_rng(seed)
    peak = mean_rps * (1.0 + amplitude)
    n = rng.poisson(peak * duration_s)
    times = np.sort(rng.uniform(0.0, duration_s, n))
    rate = mean_rps * (1.0 + amplitude * np.sin(2 * np.pi * times / period_s - np.pi / 2))
    times = times[rng.uniform(0.0, peak, n) < rate]
    prompts = np.minimum(rng.lognormal(np.log(prompt_median), 1.0, times.size), 8000).astype(np.int64) + 1
    outputs = np.minimum(rng.lognormal(np.log(output_median), 0.8, times.size), 1024).astype(np.int64) + 1
    return Trace(times - times[0], prompts, outputs)


@dataclass
class Series:
    times: list[float] = field(default_factory=list)
    arrivals_rps: list[float] = field(default_factory=list)
    replicas: dict[str, list[int]] = field(default_factory=dict)
    ready: dict[str, list[int]] = field(default_factory=dict)
    cost: list[float] = field(default_factory=list)  # cumulative $


@dataclass
class Result:
    policy: str
    requests: int
    cost: float
    attainment: float
    ttft_p50: float
    ttft_p99: float
    tpot_p50: float
    tpot_p99: float
    dropped: int
    scale_events: int
    gpu_hours: dict[str, float]
    cost_by_variant: dict[str, float]
    duration_s: float
    series: Series = field(repr=False, default_factory=Series)
    notes: str = ""
    completions: list[Completion] = field(repr=False, default_factory=list)  # for diagnosis
    causes: dict[str, int] = field(default_factory=dict)  # miss_causes: why requests missed the SLO
    cost_ratio: float | None = None  # cost ÷ the clairvoyant's in the same run (set by with_cost_ratios)

    def drops(self) -> dict[str, int]:
        """Dropped requests by the engine's reason (too long, drain or queue timeouts, gateway rejections)."""
        return dict(Counter(c.reason for c in self.completions if c.dropped))

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "requests": self.requests, "cost": round(self.cost, 4),
            "attainment": round(self.attainment, 5), "ttft_p50": self.ttft_p50, "ttft_p99": self.ttft_p99,
            "tpot_p50": self.tpot_p50, "tpot_p99": self.tpot_p99, "dropped": self.dropped,
            "scale_events": self.scale_events,
            "gpu_hours": {k: round(v, 4) for k, v in self.gpu_hours.items()},
            "cost_by_variant": {k: round(v, 4) for k, v in self.cost_by_variant.items()},
            "duration_s": self.duration_s, "notes": self.notes, "miss_causes": self.causes,
            "cost_vs_clairvoyant": None if self.cost_ratio is None else round(self.cost_ratio, 4),
        }


def meets_slo(c: Completion, spec: FleetSpec) -> bool:
    if c.dropped or c.first_token is None:
        return False
    slo = spec.slo
    ttft, tpot = c.ttft, c.tpot
    return not (
        (slo.ttft is not None and ttft is not None and ttft > slo.ttft)
        or (slo.tpot is not None and tpot is not None and tpot > slo.tpot)
        or (slo.e2e is not None and c.e2e > slo.e2e)
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def replay(spec: FleetSpec, trace: Trace, policy: Policy, seed: int = 0, routing: str = DEFAULT_ROUTING,
           on_step: Callable[[float], None] | None = None) -> Result:
    run_spec = spec if policy.cold_start else without_cold_start(spec)
    initial = policy.initial(run_spec, trace)
    run_spec = replace(run_spec, variants=tuple(
        replace(v, initial_replicas=int(initial.get(v.name, 0))) for v in run_spec.variants))
    fleet = Fleet(run_spec, seed=seed, routing=routing)
    policy.attach(fleet, trace)
    series = Series(replicas={v.name: [] for v in spec.variants}, ready={v.name: [] for v in spec.variants})
    done: list[Completion] = []
    end = trace.duration
    times, prompts, outputs = trace.times, trace.prompts, trace.outputs
    i, n = 0, len(trace)
    t = 0.0
    while t < end:
        step_end = t + CYCLE_S
        first = i
        while i < n and times[i] < step_end:
            fleet.submit(Request(int(prompts[i]), int(outputs[i])), float(times[i]))
            i += 1
        finished = fleet.advance(step_end)
        done.extend(finished)
        policy.completed(finished)
        policy.step(step_end)
        if routing == "plan-weighted":
            _weights_from_policy(policy, fleet)
        snap = fleet.snapshot()
        series.times.append(step_end)
        series.arrivals_rps.append((i - first) / CYCLE_S)
        for v in spec.variants:
            series.replicas[v.name].append(snap.variants[v.name].replicas)
            series.ready[v.name].append(snap.variants[v.name].ready)
        series.cost.append(fleet.usage(step_end).total_cost)
        if on_step is not None:
            on_step(step_end)
        t = step_end
    cost_until = max(end, series.times[-1] if series.times else end)
    usage = fleet.usage(cost_until)
    horizon = cost_until
    while fleet.in_flight and horizon < cost_until + TAIL_S:
        horizon += 60.0
        done.extend(fleet.advance(horizon))
    ok = [c for c in done if not c.dropped]
    met = sum(1 for c in done if meets_slo(c, spec))
    ttfts = [c.ttft for c in ok if c.ttft is not None]
    tpots = [c.tpot for c in ok if c.tpot is not None]
    result = Result(
        policy=policy.name,
        requests=len(done),
        cost=usage.total_cost,
        attainment=met / max(1, n),
        ttft_p50=_pct(ttfts, 50), ttft_p99=_pct(ttfts, 99),
        tpot_p50=_pct(tpots, 50), tpot_p99=_pct(tpots, 99),
        dropped=len(done) - len(ok) + (n - len(done)),
        scale_events=sum(fleet.scale_events.values()),
        gpu_hours={k: v / 3600.0 * spec.variant(k).gpus for k, v in usage.replica_seconds.items()},
        cost_by_variant=dict(usage.cost),
        duration_s=cost_until,
        series=series,
        completions=done,
        notes=str(getattr(policy, "notes", "")),
    )
    result.causes = miss_causes(spec, policy, result)
    return result


BOUND = "clairvoyant"


def with_cost_ratios(results: list[Result], bound: str = BOUND) -> float | None:
    """Sets each result's cost ÷ the bound's cost (same run, same trace); returns the bound's cost, or None
    when the bound was not among the policies (then the ratios stay None)."""
    ref = next((r for r in results if r.policy == bound), None)
    if ref is None or ref.cost <= 0:
        return None
    for r in results:
        r.cost_ratio = r.cost / ref.cost
    return ref.cost


def _weights_from_policy(policy: Policy, fleet: Fleet) -> None:
    plan_loads = getattr(policy, "last_loads", None)
    if plan_loads:
        fleet.set_weights(plan_loads)


def worst_minute(spec: FleetSpec, result: Result) -> tuple[int, int, int] | None:
    """(minute, misses, requests) of the minute of arrivals with the most SLO misses; None without misses.
    A burst shorter than a cold start after a quiet spell is missed by every policy that cannot see ahead:
    this says how much of a trace's misses one such minute holds."""
    rows = [(row.minute, sum(row.missed.values()), row.arrivals) for row in minutes(spec, result)]
    worst = max(rows, key=lambda r: (r[1], -r[0]), default=None)
    return worst if worst is not None and worst[1] > 0 else None


@dataclass(frozen=True)
class Minute:
    """One minute of a replay, for tracing a run by hand: what ran and who served whom."""

    minute: int
    replicas: dict[str, tuple[int, int]]  # variant -> (replicas, ready) at the minute's start
    served: dict[str, int]  # requests arriving in the minute, by the variant that served them ("-": dropped)
    missed: dict[str, int]  # of those, the ones that missed the SLO

    @property
    def arrivals(self) -> int:
        return sum(self.served.values())


def minutes(spec: FleetSpec, result: Result) -> list[Minute]:
    """The run minute by minute (arrival minute). How this session's control bugs were found: a held
    variant released before its replacement served, an L4 ordered on a one-request mix."""
    served: dict[int, Counter[str]] = {}
    missed: dict[int, Counter[str]] = {}
    for c in result.completions:
        m, who = int(c.arrival // 60), c.variant or "-"
        served.setdefault(m, Counter())[who] += 1
        if not meets_slo(c, spec):
            missed.setdefault(m, Counter())[who] += 1
    times = result.series.times
    last = max([*served, int(times[-1] // 60) if times else 0])
    rows = []
    for m in range(last + 1):
        i = bisect.bisect_left(times, 60.0 * m)
        replicas = {} if i == len(times) else {
            v: (counts[i], result.series.ready[v][i]) for v, counts in result.series.replicas.items()
            if counts[i] or result.series.ready[v][i]}
        rows.append(Minute(m, replicas, dict(served.get(m, {})), dict(missed.get(m, {}))))
    return rows


def miss_causes(spec: FleetSpec, policy: Policy, result: Result) -> dict[str, int]:
    """Why each request that missed the SLO missed it, first matching cause: dropped; its bucket has no
    variant that meets the SLO (profiles); routed to a variant whose profile cannot serve its bucket; a pod
    of the fleet was still cold-starting when it arrived (capacity ordered, not yet ready); otherwise the
    ready capacity or its queueing (plan too small for the burst, or interference inside a replica)."""
    profiles = spec.profiles()
    grid = fleet_grid(profiles)
    mu = {name: resample(p, grid).capacity for name, p in profiles.items()}
    best = np.max(list(mu.values()), axis=0)
    pods = list(policy.fleet._gone) + list(policy.fleet._replicas)
    starting = sorted((p.created, p.ready_at if p.removed is None else min(p.ready_at, p.removed)) for p in pods
                      if p.ready_at > p.created)
    causes = {"dropped": 0, "unservable bucket": 0, "routing": 0, "cold start": 0, "capacity/queueing": 0}
    for c in result.completions:
        if meets_slo(c, spec):
            continue
        o, i = grid.index(c.prompt_tokens, c.output_tokens)
        if c.dropped:
            causes["dropped"] += 1
        elif best[o, i] <= 0:
            causes["unservable bucket"] += 1
        elif c.variant in mu and mu[c.variant][o, i] <= 0:
            causes["routing"] += 1
        elif any(a <= c.arrival < b for a, b in starting):
            causes["cold start"] += 1
        else:
            causes["capacity/queueing"] += 1
    return causes
