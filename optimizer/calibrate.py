"""Online calibration: each variant's profile corrected from what the variant did, and each model's headroom
(the planner's utilisation target u) adapted so the SLO is held at the least cost.

    step = update(state, variant_windows, model_windows, now, settings)   # once per cycle, pure
    corrected = apply(raw_profile, step.state.correction(variant, settings))
    u = step.state.utilization(model, settings)

## The capacity correction (per variant, and per prompt-length region where the data supports it)
A profile says one replica serves μ_b req/s of bucket b within the SLO at its percentile q (AIBrix's rule:
the highest rate whose q-th percentile latencies meet every limit). For a mix of shares s_b its capacity is
C = 1 / Σ_b s_b/μ_b, the same harmonic rule the planner's constraint Σ_b z_b/μ_b ≤ u·y uses. The correction
k scales the whole table: true capacity ≈ k·C. Per window (the rate window behind the cycle's queries):

- ρ = (completions per mature replica per second) / C: how loaded the variant was by the raw profile;
- the SLO misses, per limit, from the TTFT / TPOT / E2E histogram increases over the window, and
  h = max over limits of (q-quantile / limit): how far from the limit the tail was.

At capacity the q-quantile sits on the limit, so a window that misses the SLO (more than the 1 - q budget
allows, beyond counting noise) at load ρ says k ≤ ρ: the profile over-claims by ~1/ρ when ρ < 1. A window
comfortably inside the SLO at high ρ says k > ρ. The estimate is k̂ = ρ · h^(-β): β = 1 is exact when latency
grows in proportion to load (decode steps, TPOT = c + a·B with a small floor c); β → 0 is right when latency
is a queueing cliff (flat, then vertical). β = 1/2 sits between, and both errors are bounded by the rules:

- derate fast: a significant miss moves k straight to min(ρ, k̂) (at most halving per cycle, so a single
  odd window cannot zero a variant); the target is absolute, so overlapping windows repeating the same
  evidence do not compound;
- uprate slowly: only from windows loaded to at least `uprate_min_load` of the corrected capacity with the
  tail below `uprate_max_latency` of the limit, by at most `max_uprate` per cycle and never past k̂, nor past
  the load that fills the KV cache (ρ·`kv_knee`/peak usage): latency tells nothing of a cliff it has not
  reached, the cache's fill does;
- operator bounds [factor_min, factor_max] (default 0.25–2.0); freeze and reset.
- a variant whose mix lies mostly (> MAX_UNSERVABLE_SHARE) where its profile claims nothing has no predicted
  capacity, so no load; when it misses the SLO anyway, k moves to k × the share it served within the SLO. A
  length-blind router (a Kubernetes Service, least-request) sends every variant every length, so such a
  variant is worth less to the plan than its table says (replay, diurnal trace, profiles claiming 2×: the L4
  was never judged; with the rule 91.9 → 94.0 % SLO at 0.99× the cost).

Samples that would corrupt the estimate are not used:
- replicas within `warmup_s` (+ the window) of becoming ready: their first passes run slow while they take
  over a backlog, and a planner that learnt from them over-scaled (ai-dynamo/dynamo#12430: cold-start
  samples admitted unfiltered into the decode capacity regression made `engine_rps` swing; Dynamo's
  `--no-correction` knob exists because its correction factor over-compensates when cold start is long,
  ai-dynamo/dynamo#2511);
- windows with fewer than `min_completions` completions on mature replicas (a 1 % tail needs hundreds to
  show a window well inside the SLO), except that a miss the significance test passes is judged however few;
- saturated windows (the waiting queue grew): demand is unknown, latency is queueing, so neither h nor ρ as
  a load means anything. One fact survives: replicas at their limit complete at most their throughput, so a
  saturated window that also misses the SLO bounds k ≤ ρ (`saturation_ceiling`). That is what pulls a fleet
  planned on a 2× over-claiming profile out of overload without waiting for the queue to level.

Length regions: vLLM's latency histograms are not split by length, so a window is attributed to a prompt
region (bands of input tokens, `regions`) only when at least `region_min_share` of its requests fall in it;
a region's own factor replaces the variant's for its cells once it has `region_min_samples` updates.

Peers: NVIDIA Dynamo's SLA planner corrects its interpolated estimates by actual/expected TTFT and ITL
(docs.nvidia.com/dynamo, design-docs/planner-design, "Correction Factor Calculation"); llm-d's workload
variant autoscaler learns its queueing model's hardware parameters online with an extended Kalman filter
(llm-d-workload-variant-autoscaler, docs/developer-guide/slo-queuemodel.md). Neither keeps bounded
corrections of a measured profile table for a cost-optimal mix; the asymmetric rates here follow the
planner's own asymmetry (missing the SLO is worse than paying a little more).

## The headroom loop (per model)
The profile's capacity is for steady (benchmark) traffic; bursts need headroom, which is u. Attainment is
measured from the model's histograms over all its replicas (what users got): the share of requests within
every limit, bounded below by 1 - Σ misses (the histograms are marginal). A significant miss of the target
lowers u fast (× `headroom_down`); attainment with misses at most `headroom_margin` of the budget raises u
slowly (+ `headroom_up`), but only while the model was loaded to at least `headroom_min_load` of u — raising
u while nothing runs near it would wind it up unchecked. u stays within [utilization_min, utilization_max].

## Histograms and limits
Counts are known only at bucket bounds. `within` counts a request as meeting a limit only if its bucket's
upper bound is at or under the limit (`interpolation="bound"`, the default; set limits on bucket bounds —
vLLM's TTFT buckets include 0.1, 0.25, 0.5, 1, 2.5, 5 s, its TPOT buckets 0.05, 0.075, 0.1, 0.15, 0.2 s) or
spreads the straddled bucket uniformly ("linear"). Quantiles for h interpolate linearly inside their bucket
(as Prometheus' histogram_quantile does): h is a magnitude, the decision is taken on the counts. TPOT
histograms may be per token (`vllm:time_per_output_token_seconds`, `vllm:inter_token_latency_seconds`) or
per request (`vllm:request_time_per_output_token_seconds`, which matches a per-request SLO).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

import numpy as np

from optimizer.demand import Demand, from_histograms
from optimizer.errors import InputError
from optimizer.profile import SLO, Profile

Interpolation = Literal["bound", "linear"]
Gauge = tuple[str, dict[str, str], float]


class CalibrationError(InputError):
    """A calibration input or stored state that cannot be used."""


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class CalibrationSettings:
    # capacity correction
    factor_min: float = 0.25
    factor_max: float = 2.0
    warmup_s: float = 180.0  # a replica's samples count from warmup_s + window after it became ready
    min_completions: float = 50.0  # per window, on mature replicas
    saturation_growth: float = 1.0  # waiting requests gained per replica over the window: saturated
    saturation_ceiling: bool = True  # a saturated window that misses the SLO bounds k by its throughput
    max_derate: float = 0.5  # a cycle lowers k by at most this share
    max_uprate: float = 0.02  # a cycle raises k by at most this share
    uprate_min_load: float = 0.6  # uprate only from windows loaded ≥ this share of corrected capacity
    uprate_max_latency: float = 0.9  # ... whose worst tail is ≤ this share of its limit
    steepness: float = 0.5  # β in k̂ = ρ·h^-β
    kv_knee: float = 0.9  # KV-cache usage taken as full (see scaler/config.py calibration_kv_knee)
    significance: float = 2.0  # misses must exceed the budget by this many binomial standard deviations
    interpolation: Interpolation = "bound"
    regions: tuple[int, ...] = ()  # prompt-token band edges, e.g. (1024,) → "in<=1024", "in>1024"
    region_min_share: float = 0.8
    region_min_samples: int = 5
    # headroom
    attainment_target: float = 0.99
    utilization_initial: float = 0.8
    utilization_min: float = 0.5
    utilization_max: float = 0.95
    headroom_up: float = 0.005
    headroom_down: float = 0.95
    headroom_margin: float = 0.5
    headroom_min_load: float = 0.7
    min_requests: float = 100.0  # per window, for the model's attainment

    def problems(self) -> list[str]:
        p: list[str] = []
        if not 0 < self.factor_min <= 1 <= self.factor_max:
            p.append(f"factor_min/factor_max: need 0 < min ≤ 1 ≤ max, got {self.factor_min}, {self.factor_max}")
        for name in ("warmup_s", "min_completions", "saturation_growth", "significance", "min_requests"):
            if not getattr(self, name) >= 0:
                p.append(f"{name}: must be ≥ 0, got {getattr(self, name)}")
        for name in ("max_derate", "headroom_margin", "region_min_share", "kv_knee"):
            if not 0 < getattr(self, name) <= 1:
                p.append(f"{name}: must be in (0, 1], got {getattr(self, name)}")
        for name in ("max_uprate", "headroom_up", "steepness"):
            if not 0 <= getattr(self, name) <= 1:
                p.append(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.headroom_down < 1:
            p.append(f"headroom_down: must be in (0, 1), got {self.headroom_down}")
        if not 0 < self.attainment_target < 1:
            p.append(f"attainment_target: must be in (0, 1), got {self.attainment_target}")
        if not 0 < self.utilization_min <= self.utilization_initial <= self.utilization_max <= 1:
            p.append("utilization_min ≤ utilization_initial ≤ utilization_max must hold within (0, 1], got "
                     f"{self.utilization_min}, {self.utilization_initial}, {self.utilization_max}")
        if self.interpolation not in ("bound", "linear"):
            p.append(f"interpolation: must be 'bound' or 'linear', got {self.interpolation!r}")
        if any(b <= a for a, b in zip(self.regions, self.regions[1:], strict=False)) or any(
            r <= 0 for r in self.regions
        ):
            p.append(f"regions: must be increasing positive token counts, got {self.regions}")
        return p

    def checked(self) -> CalibrationSettings:
        problems = self.problems()
        if problems:
            raise CalibrationError("calibration settings", problems)
        return self


# ---------------------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class LatencyHistogram:
    """A Prometheus histogram's increase over a window: cumulative counts at finite upper bounds, and the
    total (the +Inf bucket)."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]  # one per bound
    total: float

    @staticmethod
    def from_buckets(pairs: Sequence[tuple[float, float]], source: str = "histogram") -> LatencyHistogram:
        """[(le, count), ...] as `increase(x_bucket[w])` answers, +Inf included. increase() extrapolates per
        series, so counts may dip between buckets: a running maximum restores monotonicity."""
        problems: list[str] = []
        finite: dict[float, float] = {}
        total: float | None = None
        for le, count in pairs:
            if not math.isfinite(count) or count < 0 or math.isnan(le) or le <= 0:
                problems.append(f"bucket le={le}: count must be finite and ≥ 0 and le > 0, got {count}")
            elif math.isinf(le):
                total = count
            else:
                finite[le] = finite.get(le, 0.0) + count
        if total is None:
            problems.append("no +Inf bucket: the total is unknown")
        if problems:
            raise CalibrationError(source, problems)
        assert total is not None
        bounds = tuple(sorted(finite))
        running, cumulative = 0.0, []
        for b in bounds:
            running = max(running, finite[b])
            cumulative.append(running)
        return LatencyHistogram(bounds, tuple(cumulative), max(total, running))

    @staticmethod
    def from_values(values: Sequence[float], bounds: Sequence[float]) -> LatencyHistogram:
        """Latencies seen one by one (the replay's requests) bucketed as a server would export them."""
        edges = np.asarray(sorted(bounds), dtype=np.float64)
        if edges.size == 0 or edges[0] <= 0 or not np.all(np.isfinite(edges)):
            raise CalibrationError("histogram", [f"bounds must be finite and > 0, got {tuple(bounds)}"])
        data = np.asarray(values, dtype=np.float64)
        data = data[np.isfinite(data)]
        counts = np.searchsorted(np.sort(data), edges, side="right").astype(np.float64)
        return LatencyHistogram(tuple(float(b) for b in edges), tuple(float(c) for c in counts), float(data.size))

    def straddles(self, limit: float) -> tuple[float, float] | None:
        """The bucket (lo, hi] a limit falls strictly inside, if it is not on a bound."""
        lo = 0.0
        for b in self.bounds:
            if b == limit:
                return None
            if b > limit:
                return (lo, b)
            lo = b
        return (lo, math.inf)

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        if other.bounds != self.bounds:
            raise CalibrationError("histogram", [f"bucket bounds differ: {self.bounds} vs {other.bounds}"])
        return LatencyHistogram(self.bounds, tuple(a + b for a, b in zip(self.cumulative, other.cumulative,
                                                                          strict=True)),
                                self.total + other.total)

    def within(self, limit: float, interpolation: Interpolation = "bound") -> float:
        """Observations at or under `limit`. "bound": only buckets whose upper bound is ≤ limit (a lower
        bound on the truth); "linear": the straddled bucket spread uniformly."""
        below, lo = 0.0, 0.0
        for b, c in zip(self.bounds, self.cumulative, strict=True):
            if b <= limit:
                below, lo = c, b
                continue
            if interpolation == "linear":
                return below + (c - below) * (limit - lo) / (b - lo)
            return below
        return below  # past the last finite bound nothing more is known to be within

    def quantile(self, q: float) -> float:
        """Linear inside the bucket holding the q-th observation; inf when it lies past the last bound."""
        if self.total <= 0:
            return math.nan
        rank = q * self.total
        lo, below = 0.0, 0.0
        for b, c in zip(self.bounds, self.cumulative, strict=True):
            if c >= rank:
                return lo + (b - lo) * ((rank - below) / (c - below) if c > below else 1.0)
            lo, below = b, c
        return math.inf


def _merge_all(hists: Sequence[LatencyHistogram]) -> LatencyHistogram | None:
    if not hists:
        return None
    out = hists[0]
    for h in hists[1:]:
        out = out.merged(h)
    return out


def _quantile_level(slo: SLO) -> float:
    # "mean" has no quantile; the median stands in for it (documented in the module docstring).
    return 0.5 if slo.percentile in ("mean", "50") else int(slo.percentile) / 100.0


@dataclass(frozen=True)
class Attainment:
    requests: float  # how many observations the judgement rests on (fewest over the limits)
    miss_share: float  # Σ over limits of the share above the limit: 1 - attainment, from marginals
    latency_ratio: float  # max over limits of q-quantile / limit (h)
    judged: tuple[str, ...]  # the limits a histogram was given for

    @property
    def attainment(self) -> float:
        return max(0.0, 1.0 - self.miss_share)

    def misses(self, budget: float, significance: float) -> bool:
        """More misses than `budget` allows, beyond binomial noise on this many requests."""
        if self.requests <= 0:
            return False
        noise = significance * math.sqrt(budget * (1 - budget) / self.requests)
        return self.miss_share > budget + noise


def attainment(histograms: Mapping[str, LatencyHistogram], slo: SLO, q: float,
               interpolation: Interpolation = "bound") -> Attainment | None:
    """Attainment of `slo`'s limits from one histogram per limit ("ttft", "tpot", "e2e"); None when no limit
    has a histogram with observations."""
    miss, ratio, requests, judged = 0.0, 0.0, math.inf, []
    for metric, limit in slo.limits().items():
        hist = histograms.get(metric)
        if hist is None or hist.total <= 0:
            continue
        judged.append(metric)
        miss += (hist.total - hist.within(limit, interpolation)) / hist.total
        ratio = max(ratio, hist.quantile(q) / limit)
        requests = min(requests, hist.total)
    if not judged:
        return None
    return Attainment(requests, min(1.0, miss), ratio, tuple(judged))


# -------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ReplicaWindow:
    """One ready replica over the window."""

    age_s: float  # seconds since it became ready, at the end of the window
    completed: float  # requests finished in the window
    histograms: Mapping[str, LatencyHistogram] = field(default_factory=dict)  # "ttft" | "tpot" | "e2e"
    kv_peak: float | None = None  # the KV cache's fullest sample in the window, 0..1


@dataclass(frozen=True)
class VariantWindow:
    variant: str  # the state key, e.g. "<namespace>/<deployment>"
    window_s: float
    replicas: tuple[ReplicaWindow, ...]
    predicted_rps: float | None  # the RAW profile's per-replica capacity at this window's mix
    slo: SLO  # the profile's: the limits its capacity table was derived under
    waiting_start: float = 0.0  # the variant's waiting requests at the window's start and end
    waiting_end: float = 0.0
    region_shares: Mapping[str, float] = field(default_factory=dict)  # request share per prompt region
    unservable_share: float | None = None  # of the mix, in cells the RAW profile claims nothing for


@dataclass(frozen=True)
class ModelWindow:
    model: str  # e.g. "<namespace>/<model>"
    slo: SLO
    histograms: Mapping[str, LatencyHistogram]  # over every replica of the model (what users got)
    load: float | None  # observed demand / (replicas × corrected capacity): the utilisation it ran at
    window_s: float = 0.0  # how far back the histograms reach: a lowered u waits this long for new evidence
    capacity_arriving: bool = False  # replicas were starting in the window: its misses are cold-start misses


Buckets = Sequence[tuple[float, float]]  # [(le, count)], as `increase(x_bucket[w])` answers, +Inf included


@dataclass(frozen=True)
class PodEvidence:
    """One pod over the calibration window, as Prometheus reports it (nothing judged yet)."""

    age_s: float | None  # since it became ready, at the window's end; None: unknown (counted as warming)
    completed: float  # requests finished in the window
    latency: Mapping[str, Buckets] = field(default_factory=dict)  # "ttft" | "tpot" | "e2e" -> bucket increases
    kv_peak: float | None = None  # the KV cache's fullest sample in the window, 0..1; None: not exported


@dataclass(frozen=True)
class VariantEvidence:
    """One variant over the calibration window: what the service's evidence queries returned for it."""

    window_s: float
    pods: Mapping[str, PodEvidence] = field(default_factory=dict)
    waiting_start: float = 0.0
    waiting_end: float = 0.0
    prompt_histogram: Buckets | None = None  # the variant's own length mix (its profile's capacity depends on it)
    generation_histogram: Buckets | None = None

    @functools.cached_property
    def parsed(self) -> tuple[Mapping[str, Mapping[str, LatencyHistogram]], tuple[str, ...]]:
        """Each pod's latency histograms, and what could not be parsed. Parsed once: the variant's window and
        its model's served histograms both read them (at 1,000 models that was 8,000 parses a window)."""
        pods: dict[str, dict[str, LatencyHistogram]] = {}
        problems: list[str] = []
        for pod, ev in sorted(self.pods.items()):
            hists = pods[pod] = {}
            for metric, pairs in ev.latency.items():
                try:
                    hists[metric] = LatencyHistogram.from_buckets(pairs, f"{pod} {metric}")
                except CalibrationError as exc:
                    problems.append(str(exc))
        return pods, tuple(problems)


def variant_window(key: str, evidence: VariantEvidence, profile: Profile,
                   settings: CalibrationSettings) -> tuple[VariantWindow, list[str]]:
    """The calibration's input for one variant from its evidence and RAW profile, and what had to be left out
    (a pod's unusable histogram, a limit the histograms cannot judge)."""
    parsed, parse_problems = evidence.parsed
    problems = list(parse_problems)
    replicas = [ReplicaWindow(0.0 if ev.age_s is None else ev.age_s, ev.completed, parsed[pod], ev.kv_peak)
                for pod, ev in sorted(evidence.pods.items())]
    for metric, limit in profile.slo.limits().items():
        hist = next((r.histograms[metric] for r in replicas if metric in r.histograms), None)
        inside = None if hist is None else hist.straddles(limit)
        if hist is None:
            problems.append(f"no {metric} histogram: the {metric} limit is not judged")
        elif inside is not None and settings.interpolation == "bound":
            problems.append(f"{metric} limit {limit:g} s is inside bucket ({inside[0]:g}, {inside[1]:g}]: "
                            "requests there count as missed; a limit on a bucket bound is exact")
    predicted, shares, outside = None, {}, None
    if evidence.prompt_histogram and evidence.generation_histogram:
        mix = from_histograms(profile.model, profile.grid, evidence.prompt_histogram,
                              evidence.generation_histogram, 1.0)
        predicted = predicted_capacity(profile, mix)
        shares = region_shares(profile, mix, settings)
        outside = unservable_share(profile, mix)
    else:
        problems.append("no length histograms for this variant: the profile's capacity at its mix is unknown")
    return VariantWindow(key, evidence.window_s, tuple(replicas), predicted, profile.slo, evidence.waiting_start,
                         evidence.waiting_end, shares, outside), problems


def served_histograms(evidence: Sequence[VariantEvidence]) -> dict[str, LatencyHistogram]:
    """What users of a model got over the window: every pod of every variant, warming ones too. A pod whose
    histogram is unusable is left out (its variant's window reports it)."""
    merged: dict[str, LatencyHistogram] = {}
    for ev in evidence:
        by_pod, _ = ev.parsed
        for hists in by_pod.values():
            for metric, hist in hists.items():
                merged[metric] = merged[metric].merged(hist) if metric in merged else hist
    return merged


def region_names(edges: Sequence[int]) -> tuple[str, ...]:
    if not edges:
        return ()
    return (*(f"in<={e}" for e in edges), f"in>{edges[-1]}")


def region_of(input_tokens: float, edges: Sequence[int]) -> str | None:
    names = region_names(edges)
    if not names:
        return None
    return next((n for e, n in zip(edges, names, strict=False) if input_tokens <= e), names[-1])


@functools.lru_cache(maxsize=256)
def column_regions(ticks: tuple[int, ...], edges: tuple[int, ...]) -> tuple[str | None, ...]:
    """The region of each prompt tick: a grid and the region edges change rarely, the lookup runs per variant
    and cycle."""
    return tuple(region_of(t, edges) for t in ticks)


def model_slo(profiles: Sequence[Profile]) -> SLO:
    """One SLO for a model whose variants' profiles may state it differently: the strictest of each limit
    at the highest percentile (users of any variant are promised at least that)."""
    limits: dict[str, float] = {}
    for p in profiles:
        for metric, limit in p.slo.limits().items():
            limits[metric] = min(limit, limits.get(metric, math.inf))
    levels = [p.slo.percentile for p in profiles]
    percentile = max(levels, key=lambda x: -1 if x == "mean" else int(x), default="99")
    return SLO(percentile=percentile, **limits)


def model_load(demand: Demand, fleet: Sequence[tuple[Profile, float]]) -> float | None:
    """The utilisation a model ran at: its demand over the capacity of the replicas it ran, (corrected
    profile, replicas) per variant, each at the model's mix. The headroom loop's anti-windup input."""
    capacity = 0.0
    for profile, replicas in fleet:
        rps = predicted_capacity(profile, demand)
        capacity += 0.0 if rps is None else rps * replicas
    return demand.total / capacity if capacity > 0 else None


MAX_UNSERVABLE_SHARE = 0.5


def unservable_share(profile: Profile, demand: Demand) -> float | None:
    """The share of the mix in cells the profile claims nothing for; None for an empty mix."""
    rates = demand.on(profile.grid).rates
    total = float(rates.sum())
    return float(rates[~(profile.capacity > 0)].sum()) / total if total > 0 else None


def predicted_capacity(profile: Profile, demand: Demand) -> float | None:
    """Per-replica req/s the profile claims for this mix (harmonic: Σ s_b/μ_b is the busy time per
    request); None when the mix is empty or more than MAX_UNSERVABLE_SHARE of it falls where the profile
    claims nothing. Below that the mix is taken over the cells it claims: a mix rebuilt from marginal length
    histograms (as independent) puts some share on (long prompt, long output) cells no request had, and the
    requests a variant did complete there were servable after all."""
    outside = unservable_share(profile, demand)
    if outside is None or outside > MAX_UNSERVABLE_SHARE:
        return None
    servable = profile.capacity > 0
    shares = np.where(servable, demand.on(profile.grid).rates, 0.0)
    shares /= float(shares.sum())
    busy = float(np.sum(np.divide(shares, profile.capacity, out=np.zeros_like(shares), where=servable)))
    return 1.0 / busy if busy > 0 else None


def region_shares(profile: Profile, demand: Demand, settings: CalibrationSettings) -> dict[str, float]:
    rates = demand.on(profile.grid).rates
    total = float(rates.sum())
    out: dict[str, float] = {}
    if total <= 0 or not settings.regions:
        return out
    columns = rates.sum(axis=0) / total
    for j, name in enumerate(column_regions(tuple(profile.grid.inputs), tuple(settings.regions))):
        assert name is not None
        out[name] = out.get(name, 0.0) + float(columns[j])
    return out


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Track:
    factor: float = 1.0
    updates: int = 0  # windows that moved or confirmed it


@dataclass(frozen=True)
class VariantCalibration:
    factor: float = 1.0
    frozen: bool = False
    updates: int = 0
    updated_at: float | None = None
    reset_seen: float | None = None  # the operator reset already applied (see Control)
    regions: Mapping[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"factor": self.factor, "frozen": self.frozen, "updates": self.updates,
                "updated_at": self.updated_at, "reset_seen": self.reset_seen,
                "regions": {k: {"factor": t.factor, "updates": t.updates} for k, t in sorted(self.regions.items())}}


@dataclass(frozen=True)
class ModelHeadroom:
    utilization: float
    frozen: bool = False
    updated_at: float | None = None
    reset_seen: float | None = None
    attainment: float | None = None  # the last window's, for the dashboard
    lowered_at: float | None = None  # when u was last lowered (see `update`)

    def to_json(self) -> dict[str, Any]:
        return {"utilization": self.utilization, "frozen": self.frozen, "updated_at": self.updated_at,
                "reset_seen": self.reset_seen, "attainment": self.attainment, "lowered_at": self.lowered_at}


@dataclass(frozen=True)
class Correction:
    """What `apply` needs: the variant's factor and the factors of regions with enough evidence."""

    factor: float = 1.0
    regions: Mapping[str, float] = field(default_factory=dict)
    edges: tuple[int, ...] = ()


@dataclass(frozen=True)
class Control:
    """An operator's instruction, kept apart from the learnt state so the service never overwrites it."""

    frozen: bool = False
    reset_at: float | None = None  # a reset newer than the entry's reset_seen replaces it by the default


@dataclass(frozen=True)
class CalibrationState:
    variants: Mapping[str, VariantCalibration] = field(default_factory=dict)
    models: Mapping[str, ModelHeadroom] = field(default_factory=dict)

    def correction(self, variant: str, settings: CalibrationSettings) -> Correction:
        entry = self.variants.get(variant)
        if entry is None:
            return Correction(edges=settings.regions)
        supported = {name: t.factor for name, t in entry.regions.items()
                     if t.updates >= settings.region_min_samples and name in region_names(settings.regions)}
        return Correction(entry.factor, supported, settings.regions)

    def utilization(self, model: str, settings: CalibrationSettings) -> float:
        entry = self.models.get(model)
        return settings.utilization_initial if entry is None else entry.utilization

    def changed_since(self, before: CalibrationState) -> list[str]:
        """The `to_fields` keys of the entries that differ from `before`'s (what a save must write)."""
        return [f"variant:{k}" for k, v in self.variants.items() if before.variants.get(k) != v] + [
            f"model:{k}" for k, m in self.models.items() if before.models.get(k) != m]

    def to_fields(self) -> dict[str, dict[str, Any]]:
        """One JSON object per entry, keyed `variant:<key>` / `model:<key>` (a Redis hash's fields)."""
        out = {f"variant:{k}": v.to_json() for k, v in self.variants.items()}
        out.update({f"model:{k}": m.to_json() for k, m in self.models.items()})
        return out


def _number(data: Mapping[str, Any], key: str, problems: list[str], *, optional: bool = False,
            low: float = 0.0) -> float | None:
    val = data.get(key)
    if val is None and optional:
        return None
    if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(float(val)) or val < low:
        problems.append(f"{key}: must be a finite number ≥ {low}, got {val!r}")
        return None
    return float(val)


def _flag(data: Mapping[str, Any], key: str, problems: list[str]) -> bool:
    val = data.get(key, False)
    if not isinstance(val, bool):
        problems.append(f"{key}: must be true or false, got {val!r}")
        return False
    return val


def parse_variant(data: Any, source: str, settings: CalibrationSettings) -> VariantCalibration:
    """A stored variant entry; a factor outside today's bounds is clamped (the operator moved them), not
    rejected."""
    if not isinstance(data, Mapping):
        raise CalibrationError(source, ["must be a JSON object"])
    problems: list[str] = []
    factor = _number(data, "factor", problems, low=1e-9)
    updates = _number(data, "updates", problems)
    updated_at = _number(data, "updated_at", problems, optional=True)
    reset_seen = _number(data, "reset_seen", problems, optional=True)
    frozen = _flag(data, "frozen", problems)
    regions: dict[str, Track] = {}
    raw_regions = data.get("regions", {})
    if not isinstance(raw_regions, Mapping):
        problems.append("regions: must be an object of {factor, updates}")
        raw_regions = {}
    for name, raw in raw_regions.items():
        sub: list[str] = []
        if not isinstance(raw, Mapping):
            problems.append(f"regions.{name}: must be an object")
            continue
        rf, ru = _number(raw, "factor", sub, low=1e-9), _number(raw, "updates", sub)
        problems += [f"regions.{name}.{s}" for s in sub]
        if rf is not None and ru is not None:
            regions[str(name)] = Track(_clamp(rf, settings), int(ru))
    if problems:
        raise CalibrationError(source, problems)
    assert factor is not None and updates is not None
    return VariantCalibration(_clamp(factor, settings), frozen, int(updates), updated_at, reset_seen, regions)


def parse_model(data: Any, source: str, settings: CalibrationSettings) -> ModelHeadroom:
    if not isinstance(data, Mapping):
        raise CalibrationError(source, ["must be a JSON object"])
    problems: list[str] = []
    u = _number(data, "utilization", problems, low=1e-9)
    if u is not None and u > 1:
        problems.append(f"utilization: must be ≤ 1, got {u}")
    frozen = _flag(data, "frozen", problems)
    updated_at = _number(data, "updated_at", problems, optional=True)
    reset_seen = _number(data, "reset_seen", problems, optional=True)
    seen = _number(data, "attainment", problems, optional=True)
    lowered_at = _number(data, "lowered_at", problems, optional=True)
    if problems:
        raise CalibrationError(source, problems)
    assert u is not None
    u = min(settings.utilization_max, max(settings.utilization_min, u))
    return ModelHeadroom(u, frozen, updated_at, reset_seen, seen, lowered_at)


def parse_state(fields: Mapping[str, Any], settings: CalibrationSettings) -> tuple[CalibrationState, dict[str, str]]:
    """Entries decoded from JSON, keyed as `to_fields` writes them. Each malformed entry is left out and
    reported (key → problem); it never costs the others."""
    variants: dict[str, VariantCalibration] = {}
    models: dict[str, ModelHeadroom] = {}
    problems: dict[str, str] = {}
    for key, data in fields.items():
        kind, _, name = key.partition(":")
        try:
            if kind == "variant" and name:
                variants[name] = parse_variant(data, key, settings)
            elif kind == "model" and name:
                models[name] = parse_model(data, key, settings)
            else:
                problems[key] = f"{key}: unknown entry (expected variant:<key> or model:<key>)"
        except CalibrationError as exc:
            problems[key] = str(exc)
    return CalibrationState(variants, models), problems


def apply_control(state: CalibrationState, controls: Mapping[str, Control], settings: CalibrationSettings,
                  ) -> CalibrationState:
    """Operator controls keyed like `to_fields` (`variant:<key>`, `model:<key>`): freeze flags mirrored, and
    resets newer than the one an entry has seen replace it by the default (remembering the reset)."""
    variants = dict(state.variants)
    models = dict(state.models)
    for key, ctl in controls.items():
        kind, _, name = key.partition(":")
        if kind == "variant":
            v = variants.get(name, VariantCalibration())
            if ctl.reset_at is not None and (v.reset_seen is None or ctl.reset_at > v.reset_seen):
                v = VariantCalibration(reset_seen=ctl.reset_at)
            variants[name] = replace(v, frozen=ctl.frozen)
        elif kind == "model":
            m = models.get(name, ModelHeadroom(settings.utilization_initial))
            if ctl.reset_at is not None and (m.reset_seen is None or ctl.reset_at > m.reset_seen):
                m = ModelHeadroom(settings.utilization_initial, reset_seen=ctl.reset_at)
            models[name] = replace(m, frozen=ctl.frozen)
    return CalibrationState(variants, models)


# ---------------------------------------------------------------------------------------------- update


class Outcome(Enum):
    DERATED = "derated"
    UPRATED = "uprated"
    HELD = "held"  # evidence consistent with the current factor
    FROZEN = "frozen"
    SKIPPED_WARMUP = "skipped_warmup"  # no replica old enough
    SKIPPED_IDLE = "skipped_idle"  # too few completions to judge
    SKIPPED_SATURATED = "skipped_saturated"  # the waiting queue grew: demand unknown
    SKIPPED_NO_PREDICTION = "skipped_no_prediction"  # no profile capacity for this mix
    SKIPPED_NO_LATENCY = "skipped_no_latency"  # no histogram for any SLO limit
    SKIPPED_BAD_INPUT = "skipped_bad_input"


@dataclass(frozen=True)
class Evidence:
    """What a verdict rests on (logged with each change)."""

    replicas_used: int = 0
    replicas_warming: int = 0
    completions: float = 0.0
    load: float | None = None  # ρ against the raw profile
    latency_ratio: float | None = None  # h
    attainment: float | None = None
    requests: float | None = None
    estimate: float | None = None  # k̂


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    before: float
    after: float
    evidence: Evidence = Evidence()
    detail: str = ""
    bounded: bool = False  # the rule wanted to go past an operator bound

    @property
    def changed(self) -> bool:
        return self.after != self.before


@dataclass(frozen=True)
class CalibrationStep:
    state: CalibrationState
    variants: dict[str, Verdict]
    models: dict[str, Verdict]  # before/after are utilisation targets

    def changes(self) -> list[tuple[str, Verdict]]:
        """The verdicts that moved something: one log line each."""
        return [(f"variant:{k}", v) for k, v in self.variants.items() if v.changed] + [
            (f"model:{k}", v) for k, v in self.models.items() if v.changed]


def _clamp(k: float, settings: CalibrationSettings) -> float:
    return min(settings.factor_max, max(settings.factor_min, k))


def _move(k: float, target: float, settings: CalibrationSettings) -> tuple[float, bool]:
    """k towards target at the asymmetric rates, then into the bounds."""
    new = max(k * (1 - settings.max_derate), target) if target < k else min(k * (1 + settings.max_uprate), target)
    clamped = _clamp(new, settings)
    return clamped, clamped != new


def judge(k: float, window: VariantWindow, settings: CalibrationSettings) -> Verdict:
    """One window's verdict on a factor k (pure; `update` applies it)."""
    mature = [r for r in window.replicas if r.age_s >= settings.warmup_s + window.window_s]
    warming = len(window.replicas) - len(mature)
    completions = sum(r.completed for r in mature)
    ev = Evidence(len(mature), warming, completions)

    def skip(outcome: Outcome, detail: str, evidence: Evidence = ev) -> Verdict:
        return Verdict(outcome, k, k, evidence, detail)

    if window.window_s <= 0 or any(r.completed < 0 or not math.isfinite(r.completed) for r in window.replicas):
        return skip(Outcome.SKIPPED_BAD_INPUT, "window_s must be > 0 and completions finite, ≥ 0")
    if not mature:
        return skip(Outcome.SKIPPED_WARMUP, f"{warming} replica(s) within warm-up" if warming else "no replicas")
    try:
        hists = {m: merged for m in ("ttft", "tpot", "e2e")
                 if (merged := _merge_all([r.histograms[m] for r in mature if m in r.histograms])) is not None}
    except CalibrationError as exc:
        return skip(Outcome.SKIPPED_BAD_INPUT, str(exc))
    att = attainment(hists, window.slo, _quantile_level(window.slo), settings.interpolation)
    if att is not None:
        ev = replace(ev, latency_ratio=att.latency_ratio, attainment=att.attainment, requests=att.requests)
    budget = 1 - _quantile_level(window.slo)
    missed = att is not None and att.misses(budget, settings.significance)
    if window.predicted_rps is None or window.predicted_rps <= 0:
        outside = window.unservable_share
        if missed and att is not None and outside is not None and outside > MAX_UNSERVABLE_SHARE:
            # A length-blind router (a Service, least-request) sends every variant every length: one that
            # mostly gets what its profile cannot serve, and misses, is worth less to the plan than its
            # table says; derating is the one lever that moves traffic off it. With no load to measure, what it
            # is worth is the share it served within the SLO (at most halved per window, as every derate).
            new, bounded = _move(k, k * att.attainment, settings)
            return Verdict(Outcome.DERATED, k, new, ev,
                           f"missed the SLO with {outside:.0%} of its requests where its profile claims nothing "
                           "(the router sends it lengths the plan does not)", bounded)
        return skip(Outcome.SKIPPED_NO_PREDICTION, "the profile claims no capacity for this mix", ev)
    rho = completions / window.window_s / len(mature) / window.predicted_rps
    ev = replace(ev, load=rho)
    growth = (window.waiting_end - window.waiting_start) / max(1, len(window.replicas))
    if growth > settings.saturation_growth:
        if settings.saturation_ceiling and missed and rho < k and completions >= settings.min_completions:
            new, bounded = _move(k, rho, settings)
            return Verdict(Outcome.DERATED, k, new, replace(ev, estimate=rho),
                           "saturated and missing the SLO: capacity is at most the throughput seen", bounded)
        return skip(Outcome.SKIPPED_SATURATED, f"waiting grew by {growth:.1f} per replica: demand unknown", ev)
    # Few completions cannot show a window comfortably inside the SLO (a 1 % tail needs hundreds), but a miss
    # the significance test passes is a miss however few: judged (replay, diurnal trace: 99.32 → 99.46 % SLO
    # at 0.99× the cost; profiles claiming 2×: 94.0 → 95.3 % at 0.97×).
    if completions < settings.min_completions and not missed:
        return skip(Outcome.SKIPPED_IDLE, f"{completions:.0f} completions < {settings.min_completions:.0f}", ev)
    if att is None:
        return skip(Outcome.SKIPPED_NO_LATENCY, "no histogram for any SLO limit", ev)
    h = att.latency_ratio
    estimate = rho * h ** (-settings.steepness) if h > 0 else math.inf
    # vLLM's latency stays flat until its KV cache is full and admission stops, so a low tail does not say
    # how far the load can rise; how full the cache got does. Concurrency, and with it the cache, grows at
    # least in proportion to load (Little: L = λ·W, W not falling with load), so the load that fills it is
    # at most ρ·knee/peak: the estimate never goes past it.
    peaks = [r.kv_peak for r in mature if r.kv_peak is not None and r.kv_peak > 0]
    if peaks:
        estimate = min(estimate, rho * settings.kv_knee / (math.fsum(peaks) / len(peaks)))
    ev = replace(ev, estimate=estimate)
    if missed:
        target = min(rho, estimate)
        if target >= k:
            return Verdict(Outcome.HELD, k, k, ev, "missed the SLO above the claimed capacity: consistent")
        new, bounded = _move(k, target, settings)
        return Verdict(Outcome.DERATED, k, new, ev, "missed the SLO below the claimed capacity", bounded)
    if rho >= settings.uprate_min_load * k and h <= settings.uprate_max_latency and estimate > k:
        new, bounded = _move(k, estimate, settings)
        if new <= k:
            return Verdict(Outcome.HELD, k, k, ev, "at the upper bound", bounded)
        return Verdict(Outcome.UPRATED, k, new, ev, "well within the SLO at high load", bounded)
    return Verdict(Outcome.HELD, k, k, ev, "within the SLO; not enough load or margin to uprate")


def _judge_headroom(u: float, window: ModelWindow, settings: CalibrationSettings) -> Verdict:
    att = attainment(window.histograms, window.slo, settings.attainment_target, settings.interpolation)
    if att is None or att.requests < settings.min_requests:
        n = 0.0 if att is None else att.requests
        return Verdict(Outcome.SKIPPED_IDLE, u, u, Evidence(requests=n),
                       f"{n:.0f} requests < {settings.min_requests:.0f}")
    ev = Evidence(load=window.load, latency_ratio=att.latency_ratio, attainment=att.attainment, requests=att.requests)
    budget = 1 - settings.attainment_target
    if att.misses(budget, settings.significance):
        if window.capacity_arriving:
            # Capacity was already on its way: the misses are the cold start's (the forecast's business, and
            # counted as arriving capacity by the cycle), and standing headroom bought for them idles after.
            return Verdict(Outcome.HELD, u, u, ev, "missed while capacity was starting: not for headroom")
        new = max(settings.utilization_min, u * settings.headroom_down)
        return Verdict(Outcome.DERATED, u, new, ev, "attainment below target", new == settings.utilization_min)
    loaded = window.load is not None and window.load >= settings.headroom_min_load * u
    if att.miss_share <= settings.headroom_margin * budget and loaded:
        new = min(settings.utilization_max, u + settings.headroom_up)
        return Verdict(Outcome.UPRATED if new > u else Outcome.HELD, u, new, ev, "attainment above target",
                       u + settings.headroom_up > settings.utilization_max)
    return Verdict(Outcome.HELD, u, u, ev, "attainment near target" if loaded else "fleet not loaded near u")


def update(state: CalibrationState, variants: Sequence[VariantWindow], models: Sequence[ModelWindow],
           now: float, settings: CalibrationSettings) -> CalibrationStep:
    """One cycle: every window judged against the state, the state moved by the verdicts."""
    new_variants = dict(state.variants)
    new_models = dict(state.models)
    v_out: dict[str, Verdict] = {}
    m_out: dict[str, Verdict] = {}
    for w in variants:
        entry = new_variants.get(w.variant, VariantCalibration())
        if entry.frozen:
            v_out[w.variant] = Verdict(Outcome.FROZEN, entry.factor, entry.factor, detail="frozen by an operator")
            continue
        verdict = judge(entry.factor, w, settings)
        v_out[w.variant] = verdict
        if verdict.outcome in (Outcome.DERATED, Outcome.UPRATED, Outcome.HELD):
            regions = dict(entry.regions)
            for name, share in w.region_shares.items():
                if share >= settings.region_min_share:
                    track = regions.get(name, Track(entry.factor))
                    rv = judge(track.factor, w, settings)
                    regions[name] = Track(rv.after, track.updates + 1)
            entry = VariantCalibration(verdict.after, False, entry.updates + 1,
                                       now if verdict.changed else entry.updated_at, entry.reset_seen, regions)
            new_variants[w.variant] = entry
    for mw in models:
        m = new_models.get(mw.model, ModelHeadroom(settings.utilization_initial))
        if m.frozen:
            m_out[mw.model] = Verdict(Outcome.FROZEN, m.utilization, m.utilization, detail="frozen by an operator")
            continue
        verdict = _judge_headroom(m.utilization, mw, settings)
        if verdict.outcome is Outcome.DERATED and m.lowered_at is not None and now - m.lowered_at < mw.window_s:
            # The window still holds the misses that lowered u last time: lowering again on them would
            # compound one burst into the floor. Wait until the window holds only what followed the change.
            verdict = Verdict(Outcome.HELD, m.utilization, m.utilization, verdict.evidence,
                              f"lowered {now - m.lowered_at:.0f} s ago: waiting for a window of new evidence")
        m_out[mw.model] = verdict
        if verdict.outcome is not Outcome.SKIPPED_IDLE:
            lowered = verdict.outcome is Outcome.DERATED and verdict.changed
            new_models[mw.model] = replace(m, utilization=verdict.after, attainment=verdict.evidence.attainment,
                                           updated_at=now if verdict.changed else m.updated_at,
                                           lowered_at=now if lowered else m.lowered_at)
    return CalibrationStep(CalibrationState(new_variants, new_models), v_out, m_out)


# ----------------------------------------------------------------------------------------------- apply


def apply(profile: Profile, correction: Correction) -> Profile:
    """The profile the planner should use: capacity columns (prompt ticks) scaled by their region's factor
    where one is supported, by the variant's otherwise. Raw rows are kept as measured."""
    factors = np.array([correction.factor if name is None else correction.regions.get(name, correction.factor)
                        for name in column_regions(tuple(profile.grid.inputs), tuple(correction.edges))])
    if (factors == 1.0).all():  # nothing learnt: the profile as it is (no copy per variant and cycle)
        return profile
    return profile.with_capacity(profile.grid, profile.capacity * factors[None, :])


# ------------------------------------------------------------------------------------------ exposition


GAUGE_HELP = {
    "gpumix_calibration_factor": "capacity correction applied to the variant's profile (1 = as profiled)",
    "gpumix_calibration_frozen": "1 while an operator froze the variant's correction",
    "gpumix_calibration_region_factor": "capacity correction of one prompt-length region, where supported",
    "gpumix_headroom_utilization": "the planner's utilisation target for the model, adapted to the SLO",
    "gpumix_headroom_frozen": "1 while an operator froze the model's utilisation target",
    "gpumix_slo_attainment": "share of requests within every SLO limit over the last window (lower bound)",
}


def gauges(state: CalibrationState, model_of: Mapping[str, str] | None = None) -> list[Gauge]:
    """(name, labels, value) for /metrics: per variant its factor (and supported regions'), frozen flag;
    per model its utilisation target and last attainment. Keys are split at the first '/' into
    namespace and name; `model_of` (variant key → model name) adds the variant's model label, as gpumix's
    other per-variant gauges carry it."""
    out: list[Gauge] = []
    for key, v in sorted(state.variants.items()):
        ns, _, name = key.partition("/")
        model = (model_of or {}).get(key)
        labels = {"namespace": ns, "variant": name} if model is None else {"namespace": ns, "model": model,
                                                                           "variant": name}
        out.append(("gpumix_calibration_factor", labels, v.factor))
        out.append(("gpumix_calibration_frozen", labels, 1.0 if v.frozen else 0.0))
        for region, t in sorted(v.regions.items()):
            out.append(("gpumix_calibration_region_factor", {**labels, "region": region}, t.factor))
    for key, m in sorted(state.models.items()):
        ns, _, name = key.partition("/")
        labels = {"namespace": ns, "model": name}
        out.append(("gpumix_headroom_utilization", labels, m.utilization))
        out.append(("gpumix_headroom_frozen", labels, 1.0 if m.frozen else 0.0))
        if m.attainment is not None:
            out.append(("gpumix_slo_attainment", labels, m.attainment))
    return out
