"""One control cycle, pure: what one cycle observed in, recommendations and the history to store out.

    run_cycle(models, history, now, settings, planner) -> CycleResult

`gpumix serve` (scaler/loop.py) and the replay (sim/policies.py, through the same Controller) both decide
here, so the replay measures what the service decides. The steps, per model:

1. **Demand verdict** (`demand_verdict`): is this cycle's data good enough to plan from? Only FRESH,
   PARTIAL and IDLE are planned; every other verdict keeps the variants' last recommendations (missing data
   never shrinks a fleet) and does not renew their decision time, so a long outage ends in UNAVAILABLE and
   KEDA's fallback rather than in a silent number.
2. **Estimate** (`optimizer.estimate`): completions + waiting / drain time over all variants, spread by the
   length histograms. The drain time grows by the cold start of replicas already on their way
   (`arrival_lead_s`): the queue waits for them, it is not ordered again every cycle while it grows.
   **Forecast** (`optimizer.forecast.trend_peak`): the served part of the estimate raised to the peak of
   `forecast_horizon_s` and to the linear trend of `forecast_trend_s` projected one cold start ahead
   (`forecast_lead_s`); the backlog term is added back as it is now.
3. **Decide** (`optimizer.decide`): plan every planned model together (shared pools), held capacity,
   hysteresis. `min_replicas` applies only while the model has no workload (AIBrix's meaning of
   `model.aibrix.ai/min_replicas`: "only affects the system when there is no workload"). Replicas on their
   way are a floor while the backlog they were ordered for waits (`arriving_floor`).
4. **Never lower on partial data**: a PARTIAL model (a variant whose replicas serve reports no series, NaN,
   stale samples or a rate window not yet covered) publishes no less than its last recommendation.
5. **History**: the published recommendation appended (pruned to what the HPA's window needs) for every
   variant that has one; `decided` says which were decided from data this cycle.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from optimizer.calibrate import (
    CalibrationSettings,
    CalibrationState,
    CalibrationStep,
    ModelWindow,
    VariantEvidence,
    apply,
    model_load,
    model_slo,
    served_histograms,
    update,
    variant_window,
)
from optimizer.decide import ModelState, Settings, VariantState, decide
from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S, KEDA_DEFAULT_MAX_REPLICAS
from optimizer.demand import Demand, zero_demand
from optimizer.estimate import Estimate, LengthFacts, estimate_demand
from optimizer.forecast import trend_peak
from optimizer.ids import ModelId, VariantId
from optimizer.profile import Profile, common_grid, resample
from optimizer.program import Plan, Planner
from optimizer.stabilize import prune

History = Mapping[VariantId, Sequence[tuple[float, int]]]

# Pod created → serving for a 7B model on one GPU: image pull, weights load, CUDA graphs (the bundled fleet's
# 150–180 s); used for a variant whose inventory gives none.
DEFAULT_COLD_START_S = 180.0


class Verdict(enum.Enum):
    FRESH = "fresh"  # every serving variant reported fresh, finite series
    PARTIAL = "partial"  # planned, but some serving variant's data is missing: never lower
    IDLE = "idle"  # no replicas and no (fresh) series: zero demand is the truth
    NO_PROFILE = "no_profile"  # no variant has a usable profile
    QUERY_FAILED = "query_failed"  # a required query failed (Prometheus down, timeout, 5xx, bad answer)
    MISSING = "missing"  # replicas may run, yet no series at all
    WARMING = "warming"  # series, but no completion rate yet (fewer than two samples in the window)
    STALE = "stale"  # the newest sample is older than max_sample_age

    @property
    def planned(self) -> bool:
        return self in (Verdict.FRESH, Verdict.PARTIAL, Verdict.IDLE)


@dataclass(frozen=True)
class VariantSeries:
    """What Prometheus reported for one variant (summed over its pods). None: no series."""

    completions_rps: float | None = None
    waiting: float | None = None
    running: float | None = None
    newest_sample: float | None = None  # unix time of its freshest sample
    invalid_samples: int = 0  # NaN / Inf / negative samples dropped from its series
    window_coverage: float | None = None  # share of the rate window its least-covered pod has samples for


@dataclass(frozen=True)
class ModelSeries:
    variants: Mapping[VariantId, VariantSeries] = field(default_factory=dict)
    lengths: LengthFacts = field(default_factory=LengthFacts)

    @property
    def newest_sample(self) -> float | None:
        times = [s.newest_sample for s in self.variants.values() if s.newest_sample is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class VariantInput:
    id: VariantId
    profile: Profile | None  # None: no usable profile (never scaled by gpumix)
    min_replicas: int = 0
    max_replicas: int = KEDA_DEFAULT_MAX_REPLICAS
    current_replicas: int | None = None  # pods that exist (starting included); None: unknown
    ready_replicas: int | None = None  # pods that serve; None: unknown
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    pool: str | None = None
    gpus_per_replica: int | None = None
    evidence: VariantEvidence | None = None  # latency and load over the calibration window; None: not this cycle
    cold_start_s: float | None = None  # pod created → serving; None: CycleSettings.cold_start_s


@dataclass(frozen=True)
class ModelInput:
    id: ModelId
    variants: tuple[VariantInput, ...]
    series: ModelSeries | None  # None: Prometheus answered nothing for this model
    query_errors: Mapping[str, str] = field(default_factory=dict)  # required query -> error kind


@dataclass(frozen=True)
class CycleSettings:
    decide: Settings = field(default_factory=Settings)
    drain_time_s: float = 60.0
    max_sample_age_s: float = 60.0
    min_window_coverage: float = 0.9  # below it a rate() under-counts (Prometheus restart, a missed scrape, new pod)
    forecast_horizon_s: float = 0.0  # > 0: plan for the peak of the estimates of this horizon (peak hold)
    calibration: CalibrationSettings | None = None  # None: profiles as they are, the configured utilisation
    forecast_trend_s: float = 0.0  # > 0: and for their linear trend over this look-back, one cold start ahead
    cold_start_s: float = DEFAULT_COLD_START_S  # a variant's cold start when its input does not give one
    # The share of a model's demand a variant may be unable to serve (where another variant can) and still
    # get load: the router is length-blind (see `length_blind_excluded`); 1.0: the rule is off.
    length_blind_share: float = 0.2
    interval_s: float = 15.0  # between cycles: a replacement ordered now is ordered at most this late


@dataclass(frozen=True)
class ModelOutcome:
    id: ModelId
    verdict: Verdict
    why: str
    demand: Demand | None
    data_age_s: float | None
    idle: bool  # nothing recommended and nothing running: waiting requests must wake the first responder
    first_responder: VariantId | None
    estimate: Estimate | None = None


@dataclass(frozen=True)
class CycleResult:
    recommendations: Mapping[VariantId, int]
    reasons: Mapping[VariantId, str]
    models: Mapping[ModelId, ModelOutcome]
    decided: frozenset[VariantId]  # recommendations decided from this cycle's data (the staleness clock)
    history: Mapping[VariantId, list[tuple[float, int]]]  # what to store for each variant with a recommendation
    plan: Plan | None
    held: Mapping[VariantId, int]
    recent: Mapping[ModelId, list[tuple[float, Demand]]] = field(default_factory=dict)  # estimates to keep
    calibration: CalibrationStep | None = None  # the calibration state to keep, and what moved it
    # variants given no load because a length-blind router would send them too much they cannot serve:
    # the share of the model's demand they claim nothing for (where another variant claims something)
    excluded: Mapping[VariantId, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ the rules


def _serving(v: VariantInput) -> int | None:
    return v.ready_replicas if v.ready_replicas is not None else v.current_replicas


def demand_verdict(model: ModelInput, now: float, settings: CycleSettings) -> tuple[Verdict, str, float | None]:
    """(verdict, why, data age) for one model's observations this cycle; the rules in order."""
    if not any(v.profile is not None for v in model.variants):
        return Verdict.NO_PROFILE, "no variant has a usable profile", None
    if model.query_errors:
        failed = ", ".join(f"{q}: {kind}" for q, kind in sorted(model.query_errors.items()))
        return Verdict.QUERY_FAILED, f"prometheus: {failed}", None
    idle = all(v.current_replicas == 0 for v in model.variants)
    series = model.series
    reported = [] if series is None else [
        s for s in series.variants.values() if s.completions_rps is not None or s.waiting is not None
    ]
    if not reported:
        # No series at all is legitimate only when the model runs no replicas (nothing to scrape).
        if idle:
            return Verdict.IDLE, "no replicas, no series", None
        return Verdict.MISSING, "no vLLM series for this model while it has (or may have) replicas", None
    assert series is not None
    if idle:
        return Verdict.IDLE, "no replicas: series left by pods that are gone", None
    if not any(s.completions_rps is not None for s in reported):
        # A running server exports its completion counter from the start; no rate yet means Prometheus has
        # fewer than two samples, and a zero here would shrink a busy fleet.
        return Verdict.WARMING, "no completion rate yet for a model with replicas", None
    newest = series.newest_sample
    age = None if newest is None else max(0.0, now - newest)
    if age is not None and age > settings.max_sample_age_s:
        limit = settings.max_sample_age_s
        return Verdict.STALE, f"newest sample is {age:.0f} s old (max_sample_age {limit:.0f} s)", age
    gaps = []
    for v in model.variants:
        serving = _serving(v)
        if not serving:
            continue  # no pod serves (or unknown): nothing it should have reported
        s = series.variants.get(v.id)
        if s is None or s.completions_rps is None:
            gaps.append(f"{v.id.name}: no completion rate while {serving} replicas serve")
        elif s.invalid_samples:
            gaps.append(f"{v.id.name}: {s.invalid_samples} NaN/Inf/negative samples")
        elif s.newest_sample is not None and now - s.newest_sample > settings.max_sample_age_s:
            gaps.append(f"{v.id.name}: newest sample {now - s.newest_sample:.0f} s old")
        elif s.window_coverage is not None and s.window_coverage < settings.min_window_coverage:
            gaps.append(f"{v.id.name}: rate window {s.window_coverage:.0%} covered (Prometheus restart or new pod)")
    if gaps:
        return Verdict.PARTIAL, "partial data, recommendations kept from falling: " + "; ".join(gaps), age
    return Verdict.FRESH, "fresh", age


def first_responder(variants: Sequence[VariantInput]) -> VariantId | None:
    """The variant with a usable profile that costs least per req/s of its mean servable capacity: the one
    woken when an idle model sees waiting requests (waking all of them starts the dear ones too)."""
    best: tuple[float, VariantId] | None = None
    for v in variants:
        p = v.profile
        if p is None or (mean := p.mean_servable_capacity) is None:
            continue
        price = p.cost_per_hour / mean
        if best is None or price < best[0]:
            best = (price, v.id)
    return None if best is None else best[1]


def floor_at_last(planned: int, last: int | None, verdict: Verdict) -> int:
    """Partial data may raise a recommendation, never lower it."""
    if verdict is Verdict.PARTIAL and last is not None:
        return max(planned, last)
    return planned


def min_replicas_in_force(min_replicas: int, demand: Demand) -> int:
    """AIBrix's `model.aibrix.ai/min_replicas` holds only while the model has no workload."""
    return min_replicas if demand.total <= 0 else 0


def calibrate(models: Sequence[ModelInput], verdicts: Mapping[ModelId, Verdict],
              observed: Mapping[ModelId, Demand | None], state: CalibrationState, now: float,
              settings: CalibrationSettings) -> CalibrationStep:
    """One calibration step from the cycle's evidence. Only FRESH models are judged: a window whose
    cycle data is partial, stale or missing says nothing reliable about capacity or attainment."""
    windows = []
    model_windows = []
    for m in models:
        evidence = [v.evidence for v in m.variants if v.evidence is not None]
        if verdicts[m.id] is not Verdict.FRESH or not evidence:
            continue
        fleet = []
        for v in m.variants:
            if v.profile is None:
                continue
            if v.evidence is not None:
                windows.append(variant_window(str(v.id), v.evidence, v.profile, settings)[0])
            fleet.append((apply(v.profile, state.correction(str(v.id), settings)), float(_serving(v) or 0)))
        demand = observed.get(m.id)
        load = None if demand is None else model_load(demand, fleet)
        slo = model_slo([p for p, _ in fleet])
        window_s = max(e.window_s for e in evidence)
        arriving = any(starting(v) for v in m.variants) or any(
            pod.age_s is not None and pod.age_s < window_s for e in evidence for pod in e.pods.values())
        model_windows.append(ModelWindow(str(m.id), slo, served_histograms(evidence), load, window_s, arriving))
    return update(state, windows, model_windows, now, settings)


def planning_profile(variant: VariantInput, model: ModelId, state: CalibrationState,
                     calibration: CalibrationSettings, utilization: float) -> Profile | None:
    """The profile the planner sees: capacity corrected by the variant's factor, and scaled by the model's
    headroom u_m against the program's utilisation u (Σ z/(μ·k·u_m/u) ≤ u·y is Σ z/(μ·k) ≤ u_m·y), so one
    program plans models that hold different targets."""
    if variant.profile is None:
        return None
    corrected = apply(variant.profile, state.correction(str(variant.id), calibration))
    scale = state.utilization(str(model), calibration) / utilization
    return corrected if scale == 1.0 else corrected.with_capacity(corrected.grid, corrected.capacity * scale)


MIX_PRIOR = 1.0  # requests at the most demanding servable length counted into every measured mix


def _most_demanding(servable: npt.NDArray[np.bool_]) -> tuple[int, int] | None:
    """The (output, input) index of the longest prompt some variant serves, at its longest output (ticks
    increase along both axes)."""
    columns = np.flatnonzero(servable.any(axis=0))
    if columns.size == 0:
        return None
    i = int(columns[-1])
    return int(np.flatnonzero(servable[:, i])[-1]), i


def length_blind_excluded(variants: Sequence[VariantInput], demand: Demand | None, share: float,
                          requests: float | None = None) -> dict[VariantId, float]:
    """The variants to give no load, with the share of the demand each cannot serve.

    The plan's bucket-by-bucket placement assumes a router that sends each length where the plan put it; the
    routers gpumix scales for do not (a Kubernetes Service, least-request or least-outstanding, AIBrix's and
    GKE's gateways pick a pod by load, not by prompt length). Under them every replica receives the whole
    mix, so a variant whose profile claims nothing for part of it misses the SLO on that part however many
    replicas it has. It keeps its floor (min_replicas, held, arriving) but gets no load in the plan when
    more than `share` of the demand lies in cells it claims nothing for while another variant claims them
    (cells no variant serves are unservable anyway). The variants that cannot serve the least are never all
    excluded. Measured in replay (BENCHMARKS.md): the routing misses, the largest cause after cold starts,
    vanish on every trace; the share's plateau spans 0.1–0.3.

    `requests`: how many requests the mix was measured on (None: not from histograms). A mix of a few says
    little about what comes next, so MIX_PRIOR more requests at the most demanding length some variant
    serves are counted in: one 1.5k prompt after a quiet spell on the code trace ordered an L4, which served
    the burst that followed with 42 misses."""
    profiled = [v for v in variants if v.profile is not None]
    if demand is None or demand.total <= 0 or share >= 1.0 or len(profiled) < 2:
        return {}
    grid = common_grid(v.profile.grid for v in profiled if v.profile is not None)
    rates = demand.on(grid).rates
    serves = {v.id: resample(v.profile, grid).capacity > 0 for v in profiled if v.profile is not None}
    worst = _most_demanding(np.logical_or.reduce(list(serves.values())))
    outside: dict[VariantId, float] = {}
    for vid, mask in serves.items():
        others = np.logical_or.reduce([m for o, m in serves.items() if o != vid])
        outside[vid] = float(rates[~mask & others].sum()) / float(rates.sum())
        if requests is not None and worst is not None:
            prior = float(not mask[worst] and others[worst])
            outside[vid] = (outside[vid] * requests + prior * MIX_PRIOR) / (requests + MIX_PRIOR)
    least = min(outside.values())
    return {vid: s for vid, s in outside.items() if s > share and s > least}


def cold_start_of(v: VariantInput, settings: CycleSettings) -> float:
    return settings.cold_start_s if v.cold_start_s is None else v.cold_start_s


def starting(v: VariantInput) -> int:
    """Replicas ordered and not yet ready (0 when either count is unknown)."""
    if v.current_replicas is None or v.ready_replicas is None:
        return 0
    return max(0, v.current_replicas - v.ready_replicas)


def arrival_lead_s(variants: Sequence[VariantInput], settings: CycleSettings) -> float:
    """How long until the capacity already ordered serves: at most the longest cold start among the
    variants with replicas starting; 0 when nothing is on its way."""
    return max((cold_start_of(v, settings) for v in variants if starting(v) > 0), default=0.0)


def forecast_lead_s(variants: Sequence[VariantInput], settings: CycleSettings) -> float:
    """How far ahead the forecast looks: the longest cold start of the variants gpumix may order."""
    return max((cold_start_of(v, settings) for v in variants if v.profile is not None), default=0.0)


def hold_lead_s(variants: Sequence[VariantInput], settings: CycleSettings) -> float:
    """How long before the HPA's hold on a variant ends the plan stops counting it: long enough for the
    slowest replacement the plan may order instead to be ready by then (its cold start, and the cycle that
    notices). A fixed 120 s lead dropped four ready L40S a minute before the A100 ordered to replace them
    served (cold start 180 s; replay, diurnal trace seed 3, profiles claiming 2×: 164 misses in two minutes)."""
    return forecast_lead_s(variants, settings) + settings.interval_s


def arriving_floor(v: VariantInput, backlog: float) -> int:
    """Replicas on their way are kept while the backlog they were ordered for is there: they serve within
    their cold start, and releasing them to order again later restarts the wait."""
    if backlog > 0 and starting(v) > 0 and v.current_replicas is not None:
        return v.current_replicas
    return 0


# ------------------------------------------------------------------------------------------ the cycle


def _demand(model: ModelInput, verdict: Verdict, settings: CycleSettings,
            apart: Collection[VariantId] = ()) -> tuple[Demand | None, Estimate | None]:
    if not verdict.planned:
        return None, None
    grid = common_grid(v.profile.grid for v in model.variants if v.profile is not None)
    if verdict is Verdict.IDLE:
        return zero_demand(str(model.id), grid), None
    assert model.series is not None
    rates = list(model.series.variants.values())
    completions = sum(s.completions_rps or 0.0 for s in rates)
    est = estimate_demand(str(model.id), completions, _backlog(model, apart), model.series.lengths, grid,
                          _drain_time(model, settings))
    return est.demand, est


def _backlog(model: ModelInput, apart: Collection[VariantId] = ()) -> float:
    """Requests waiting in the queues of the variants the plan counts as capacity. vLLM keeps a queued
    request on its replica (no replica takes another's queue), so a queue is work for the replicas holding
    it: counted as demand it is planned against their capacity. A variant `apart` from the plan (given no
    load: length-blind, see `length_blind_excluded`) drains its own queue, and no capacity ordered
    elsewhere can take it (`make demo`: the L4's stuck queue of 10–24 ordered a fifth and sixth L40S)."""
    if model.series is None:
        return 0.0
    return sum(s.waiting or 0.0 for vid, s in model.series.variants.items() if vid not in apart)


def _drain_time(model: ModelInput, settings: CycleSettings) -> float:
    # The queue is drained by capacity that serves: what is starting serves only after its cold start, so a
    # backlog that grows meanwhile is spread over that lead plus the drain time instead of being ordered
    # again, cycle after cycle, for the same requests.
    return settings.drain_time_s + arrival_lead_s(model.variants, settings)


def _forecast(model: ModelInput, demand: Demand, now: float, settings: CycleSettings,
              recent: Sequence[tuple[float, Demand]], apart: Collection[VariantId] = ()
              ) -> tuple[Demand, list[tuple[float, Demand]]]:
    """The demand to plan for and the look-back to keep. What is forecast is the served part of the estimate;
    the backlog term is added back as it is now: a queue is drained once, it is neither a peak to hold nor
    a trend to project (a queue growing while capacity is on its way would otherwise be extrapolated)."""
    horizon = max(settings.forecast_horizon_s, settings.forecast_trend_s)
    backlog_rps = _backlog(model, apart) / _drain_time(model, settings)
    share = min(1.0, backlog_rps / demand.total) if demand.total > 0 else 0.0
    served = Demand(demand.model, demand.grid, demand.rates * (1.0 - share))
    kept = [*((t, d) for t, d in recent if now - horizon <= t < now and d.grid == demand.grid), (now, served)]
    ahead = trend_peak(kept, now, settings.forecast_horizon_s, settings.forecast_trend_s,
                       forecast_lead_s(model.variants, settings))
    assert ahead is not None  # the latest estimate is inside every horizon
    return Demand(demand.model, demand.grid, ahead.rates + demand.rates * share), kept


def _planned(m: ModelInput, demand: Demand | None, now: float, settings: CycleSettings,
             recent: Mapping[ModelId, Sequence[tuple[float, Demand]]] | None,
             kept: dict[ModelId, list[tuple[float, Demand]]], apart: Collection[VariantId] = ()) -> Demand | None:
    """The demand to plan for: the estimate, forecast when a forecast is on (its look-back into `kept`)."""
    if demand is None or (settings.forecast_horizon_s <= 0 and settings.forecast_trend_s <= 0):
        return demand
    planned, kept[m.id] = _forecast(m, demand, now, settings, (recent or {}).get(m.id, ()), apart)
    return planned


def run_cycle(models: Sequence[ModelInput], history: History, now: float, settings: CycleSettings,
              planner: Planner, recent: Mapping[ModelId, Sequence[tuple[float, Demand]]] | None = None,
              calibration: CalibrationState | None = None) -> CycleResult:
    """`recent`: the served part of the model's estimates of earlier cycles (what the forecast looks back on);
    `calibration`: the corrections learnt so far (with `settings.calibration` set)."""
    by_name: dict[str, VariantId] = {}
    kept: dict[ModelId, list[tuple[float, Demand]]] = {}
    excluded: dict[VariantId, float] = {}
    states: list[ModelState] = []
    verdicts: dict[ModelId, tuple[Verdict, str, float | None, Demand | None, Estimate | None]] = {}
    for m in models:
        verdict, why, age = demand_verdict(m, now, settings)
        demand, est = _demand(m, verdict, settings)
        verdicts[m.id] = (verdict, why, age, demand, est)

    # Calibration learns from the demand observed (not the forecast) and corrects the profiles planned next.
    step = None
    if settings.calibration is not None:
        step = calibrate(models, {k: v[0] for k, v in verdicts.items()}, {k: v[3] for k, v in verdicts.items()},
                         calibration or CalibrationState(), now, settings.calibration)

    for m in models:
        verdict, why, age, demand, est = verdicts[m.id]
        planned = _planned(m, demand, now, settings, recent, kept)
        blind = length_blind_excluded(m.variants, planned, settings.length_blind_share,
                                      None if est is None else est.requests)
        backlog = _backlog(m, blind)
        if backlog != _backlog(m):
            # the queues of the variants given no load are theirs (see `_backlog`): estimated again without
            # them (which variants get no load depends on the mix alone, which the backlog does not change)
            demand, est = _demand(m, verdict, settings, blind)
            planned = _planned(m, demand, now, settings, recent, kept, blind)
        demand = planned
        verdicts[m.id] = (verdict, why, age, demand, est)
        variant_states = []
        excluded.update(blind)
        for v in m.variants:
            by_name[str(v.id)] = v.id
            floor = 0 if demand is None else max(min_replicas_in_force(v.min_replicas, demand),
                                                 arriving_floor(v, backlog))
            profile = v.profile if step is None or settings.calibration is None else planning_profile(
                v, m.id, step.state, settings.calibration, settings.decide.utilization)
            if profile is not None and v.id in blind:
                profile = profile.with_capacity(profile.grid, np.zeros_like(profile.capacity))
            variant_states.append(VariantState(
                name=str(v.id), profile=profile, min_replicas=floor, max_replicas=v.max_replicas,
                current_replicas=v.current_replicas, scale_down_window_s=v.scale_down_window_s, pool=v.pool,
                gpus_per_replica=v.gpus_per_replica,
            ))
        states.append(ModelState(str(m.id), demand, tuple(variant_states), hold_lead_s(m.variants, settings)))

    named_history = {str(k): v for k, v in history.items()}
    decision = decide(states, named_history, now, settings.decide, planner)

    recommendations: dict[VariantId, int] = {}
    reasons: dict[VariantId, str] = {by_name[n]: r for n, r in decision.reasons.items() if n in by_name}
    decided: set[VariantId] = set()
    new_history: dict[VariantId, list[tuple[float, int]]] = {}
    outcomes: dict[ModelId, ModelOutcome] = {}
    for m in models:
        verdict, why, age, demand, est = verdicts[m.id]
        for v in m.variants:
            n = decision.recommendations.get(str(v.id))
            if n is None:
                continue
            past = history.get(v.id, ())
            last = past[-1][1] if past else None
            final = floor_at_last(n, last, verdict)
            if final != n:
                reasons[v.id] = f"planned {n}; kept {final}: {why}"
            recommendations[v.id] = final
            if verdict.planned:
                decided.add(v.id)
            new_history[v.id] = [*prune(past, now, v.scale_down_window_s), (now, final)]
        idle = all(recommendations.get(v.id, 0) == 0 and not v.current_replicas for v in m.variants)
        outcomes[m.id] = ModelOutcome(m.id, verdict, why, demand, age, idle, first_responder(m.variants), est)
    for vid, share in excluded.items():
        if vid in recommendations:
            said = reasons.get(vid)
            reasons[vid] = (f"no load: a length-blind router would send it {share:.0%} of the demand, lengths its "
                            f"profile claims nothing for" + (f"; {said}" if said else ""))
    held = {by_name[n]: h for n, h in decision.held.items() if n in by_name}
    return CycleResult(recommendations, reasons, outcomes, frozenset(decided), new_history, decision.plan, held, kept,
                       step, excluded)
