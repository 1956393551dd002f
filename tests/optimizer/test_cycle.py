"""The cycle core's safety rules, one table each: what a cycle may plan from, and what it may publish.

These read as the specification of optimizer/cycle.py; `make mutation` removes each rule in turn and
expects a row here to fail."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from optimizer.cycle import (
    CycleSettings,
    ModelInput,
    ModelSeries,
    VariantInput,
    VariantSeries,
    Verdict,
    arrival_lead_s,
    arriving_floor,
    demand_verdict,
    first_responder,
    floor_at_last,
    length_blind_excluded,
    min_replicas_in_force,
    run_cycle,
)
from optimizer.decide import Settings
from optimizer.demand import from_buckets
from optimizer.estimate import LengthFacts
from optimizer.ids import ModelId, VariantId
from optimizer.profile import SLO, Grid, Profile
from optimizer.program import Planner

from .fixtures import BIG, CHEAP, GRID, demand, profile

NOW = 1000.0
MID = ModelId("llm", "m")
A, B = VariantId("llm", "cheap"), VariantId("llm", "big")
SETTINGS = CycleSettings(decide=Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0, hold_lead_s=15.0),
                         drain_time_s=60.0, max_sample_age_s=60.0, min_window_coverage=0.75)
HIST = LengthFacts(prompt_histogram=((128.0, 10.0), (math.inf, 10.0)), generation_histogram=((64.0, 10.0),
                                                                                             (math.inf, 10.0)))


def series(rps: float | None = 1.0, *, waiting: float | None = 0.0, age: float = 5.0, invalid: int = 0,
           coverage: float | None = 1.0, now: float = NOW) -> VariantSeries:
    return VariantSeries(completions_rps=rps, waiting=waiting, running=0.0, newest_sample=now - age,
                         invalid_samples=invalid, window_coverage=coverage)


def model(a: VariantSeries | None, b: VariantSeries | None = None, *, current: tuple[int | None, int | None] = (1, 0),
          ready: tuple[int | None, int | None] | None = None, errors: dict[str, str] | None = None,
          profiles: bool = True, min_replicas: int = 0) -> ModelInput:
    ready = ready if ready is not None else current
    variants = (
        VariantInput(A, CHEAP if profiles else None, min_replicas=min_replicas, max_replicas=10,
                     current_replicas=current[0], ready_replicas=ready[0], scale_down_window_s=60),
        VariantInput(B, BIG if profiles else None, max_replicas=10, current_replicas=current[1],
                     ready_replicas=ready[1], scale_down_window_s=60),
    )
    reported = {vid: s for vid, s in ((A, a), (B, b)) if s is not None}
    return ModelInput(MID, variants, ModelSeries(reported, HIST) if reported else None, errors or {})


# ------------------------------------------------------------------------------------------ demand verdict

VERDICTS = [
    # (case, model input, verdict)
    ("fresh data from every serving variant", model(series()), Verdict.FRESH),
    ("no profile anywhere", model(series(), profiles=False), Verdict.NO_PROFILE),
    ("a required query failed", model(series(), errors={"completions": "timeout"}), Verdict.QUERY_FAILED),
    ("no replicas and no series: truly idle", model(None, current=(0, 0)), Verdict.IDLE),
    ("no replicas, series of pods that are gone", model(series(age=600), current=(0, 0)), Verdict.IDLE),
    ("replicas but no series at all", model(None, current=(2, 0)), Verdict.MISSING),
    ("replica count unknown and no series", model(None, current=(None, None)), Verdict.MISSING),
    ("series but no completion rate yet", model(series(rps=None)), Verdict.WARMING),
    ("newest sample too old", model(series(age=61)), Verdict.STALE),
    ("one serving variant has no series", model(series(), None, current=(1, 2)), Verdict.PARTIAL),
    ("one serving variant reports NaN", model(series(), series(invalid=1), current=(1, 2)), Verdict.PARTIAL),
    ("one serving variant is stale", model(series(), series(age=90), current=(1, 2)), Verdict.PARTIAL),
    ("rate window not yet covered (Prometheus restart)", model(series(coverage=0.5)), Verdict.PARTIAL),
    ("a variant still starting has no series yet", model(series(), None, current=(1, 2), ready=(1, 0)),
     Verdict.FRESH),
    ("coverage unknown is not a gap", model(series(coverage=None)), Verdict.FRESH),
]


@pytest.mark.parametrize("case, given, verdict", VERDICTS, ids=[c for c, _, _ in VERDICTS])
def test_demand_verdict(case: str, given: ModelInput, verdict: Verdict) -> None:
    assert demand_verdict(given, NOW, SETTINGS)[0] is verdict


@pytest.mark.parametrize("verdict, planned", [
    (Verdict.FRESH, True), (Verdict.PARTIAL, True), (Verdict.IDLE, True), (Verdict.NO_PROFILE, False),
    (Verdict.QUERY_FAILED, False), (Verdict.MISSING, False), (Verdict.WARMING, False), (Verdict.STALE, False),
])
def test_only_usable_verdicts_are_planned(verdict: Verdict, planned: bool) -> None:
    assert verdict.planned is planned


# ------------------------------------------------------------------------------------------ publication rules


@pytest.mark.parametrize("planned, last, verdict, published", [
    (2, 4, Verdict.PARTIAL, 4),  # partial data never lowers
    (6, 4, Verdict.PARTIAL, 6),  # ... but may raise
    (2, None, Verdict.PARTIAL, 2),  # nothing published yet: the plan
    (2, 4, Verdict.FRESH, 2),  # fresh data may lower
])
def test_floor_at_last(planned: int, last: int | None, verdict: Verdict, published: int) -> None:
    assert floor_at_last(planned, last, verdict) == published


@pytest.mark.parametrize("min_replicas, rps, floor", [
    (2, 0.0, 2),  # no workload: AIBrix's min_replicas holds
    (2, 0.5, 0),  # workload: ignored (AIBrix: "only affects the system when there is no workload")
    (0, 0.0, 0),
])
def test_min_replicas_only_without_workload(min_replicas: int, rps: float, floor: int) -> None:
    assert min_replicas_in_force(min_replicas, demand(rps)) == floor


def test_first_responder_is_the_cheapest_per_request() -> None:
    variants = model(series()).variants
    assert first_responder(variants) == A  # 1 $/h for 5 req/s mean beats 2.5 $/h for 25
    assert first_responder((variants[1],)) == B
    assert first_responder(model(series(), profiles=False).variants) is None


# ------------------------------------------------------------------------------------------ whole cycles


def _cycle(given: ModelInput, history: dict[VariantId, list[tuple[float, int]]]):  # type: ignore[no-untyped-def]
    return run_cycle([given], history, NOW, SETTINGS, Planner())


@pytest.mark.parametrize("case, given", [
    ("Prometheus down", model(series(), errors={"waiting": "unreachable"})),
    ("series vanished", model(None, current=(4, 1))),
    ("stale", model(series(age=300))),
])
def test_unknown_demand_keeps_recommendations_without_renewing_them(case: str, given: ModelInput) -> None:
    result = _cycle(given, {A: [(NOW - 15, 4)], B: [(NOW - 15, 1)]})
    assert result.recommendations == {A: 4, B: 1}
    assert result.decided == frozenset()  # the staleness clock keeps running towards UNAVAILABLE


def test_partial_data_never_lowers_a_recommendation() -> None:
    # A serves 1 req/s (one cheap replica would do) while big's 3 replicas report nothing.
    given = model(series(rps=1.0), None, current=(1, 3))
    result = _cycle(given, {A: [(NOW - 15, 4)], B: [(NOW - 15, 3)]})
    assert result.models[MID].verdict is Verdict.PARTIAL
    assert result.recommendations[A] >= 4 and result.recommendations[B] >= 3
    assert A in result.decided  # planned (it may go up), so its recommendation stays fresh


def test_fresh_data_may_lower_and_history_is_appended() -> None:
    result = _cycle(model(series(rps=1.0)), {A: [(NOW - 15, 4)], B: [(NOW - 15, 0)]})
    assert result.recommendations == {A: 1, B: 0}
    assert result.history[A] == [(NOW - 15, 4), (NOW, 1)]
    assert result.decided == frozenset({A, B})


def test_idle_model_keeps_min_replicas_and_reports_idleness() -> None:
    result = _cycle(model(None, current=(0, 0), min_replicas=1), {})
    assert result.recommendations[A] == 1
    assert not result.models[MID].idle  # a replica is recommended: nothing to wake
    result = _cycle(model(None, current=(0, 0)), {})
    assert result.models[MID].idle and result.models[MID].first_responder == A


def test_demand_counts_completions_and_the_queue_of_every_variant() -> None:
    given = model(series(rps=2.0, waiting=30.0), series(rps=1.0, waiting=30.0), current=(1, 1))
    result = _cycle(given, {})
    outcome = result.models[MID]
    assert outcome.demand is not None and outcome.demand.grid == GRID
    assert outcome.demand.total == pytest.approx(3.0 + 60.0 / 60.0)


def test_forecast_holds_the_recent_peak() -> None:
    settings = CycleSettings(decide=SETTINGS.decide, forecast_horizon_s=120.0)
    past = {MID: [(NOW - 60, demand(30.0))]}
    result = run_cycle([model(series(rps=1.0))], {}, NOW, settings, Planner(), past)
    assert result.models[MID].demand is not None and result.models[MID].demand.total == pytest.approx(30.0)
    later = run_cycle([model(series(rps=1.0, now=NOW + 200))], {}, NOW + 200, settings, Planner(), result.recent)
    assert later.models[MID].demand is not None and later.models[MID].demand.total == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ what is coming

def variant(current: int | None, ready: int | None, cold_start: float | None = None) -> VariantInput:
    return VariantInput(A, CHEAP, current_replicas=current, ready_replicas=ready, cold_start_s=cold_start)


@pytest.mark.parametrize("case, variants, lead", [
    ("nothing starting", [variant(2, 2, 150.0)], 0.0),
    ("counts unknown: nothing known to be on its way", [variant(None, None, 150.0), variant(2, None, 150.0)], 0.0),
    ("one variant starting: its cold start", [variant(3, 1, 150.0), variant(2, 2, 400.0)], 150.0),
    ("the longest cold start among those starting", [variant(3, 1, 150.0), variant(1, 0, 180.0)], 180.0),
    ("no cold start given: the settings' default", [variant(1, 0)], SETTINGS.cold_start_s),
])
def test_arrival_lead(case: str, variants: list[VariantInput], lead: float) -> None:
    assert arrival_lead_s(variants, SETTINGS) == lead


@pytest.mark.parametrize("case, given, backlog, floor", [
    ("starting replicas are kept while there is a backlog", variant(4, 1), 30.0, 4),
    ("no backlog: nothing forces them", variant(4, 1), 0.0, 0),
    ("all ready: the plan decides", variant(4, 4), 30.0, 0),
    ("counts unknown: no floor", variant(None, None), 30.0, 0),
])
def test_arriving_floor(case: str, given: VariantInput, backlog: float, floor: int) -> None:
    assert arriving_floor(given, backlog) == floor


def test_backlog_is_drained_over_the_lead_of_what_is_coming() -> None:
    # 1 req/s served and 120 waiting. Nothing on its way: drained within drain_time (60 s), 1 + 2 req/s.
    # Big replicas starting (cold start 180 s): the same queue over 60 + 180 s, 1 + 0.5 req/s.
    idle = _cycle(model(series(rps=1.0, waiting=120.0), current=(1, 0)), {})
    assert idle.models[MID].demand is not None and idle.models[MID].demand.total == pytest.approx(3.0)
    coming = model(series(rps=1.0, waiting=120.0), current=(1, 3), ready=(1, 0))
    coming = ModelInput(coming.id, (coming.variants[0], replace(coming.variants[1], cold_start_s=180.0)),
                        coming.series)
    result = _cycle(coming, {B: [(NOW - 15, 3)]})
    assert result.models[MID].demand is not None and result.models[MID].demand.total == pytest.approx(1.5)
    # ... and the three big replicas on their way are not released while that backlog waits
    assert result.recommendations[B] == 3


# ------------------------------------------------------------------------------------------ length-blind routing

LONG_ONLY = profile("long-only", 2.0, 0.0, 10.0)
C = VariantId("llm", "long-only")


def _variants(*profiles: tuple[VariantId, object]) -> tuple[VariantInput, ...]:
    return tuple(VariantInput(vid, p, max_replicas=10) for vid, p in profiles)  # type: ignore[arg-type]


LENGTH_BLIND = [
    # (case, variants, demand (short, long req/s), share allowed, excluded with the share it cannot serve)
    ("cheap cannot serve 30 % that big serves: no load", _variants((A, CHEAP), (B, BIG)), (7.0, 3.0), 0.2,
     {A: 0.3}),
    ("10 % it cannot serve: within the share, kept", _variants((A, CHEAP), (B, BIG)), (9.0, 1.0), 0.2, {}),
    ("each cannot serve a part: the one that misses least is kept", _variants((A, CHEAP), (C, LONG_ONLY)),
     (7.0, 3.0), 0.2, {C: 0.7}),
    ("share 1.0: a router that routes by length, off", _variants((A, CHEAP), (B, BIG)), (7.0, 3.0), 1.0, {}),
    ("no demand: nothing to judge", _variants((A, CHEAP), (B, BIG)), (0.0, 0.0), 0.2, {}),
    ("a single profiled variant: nothing to compare", _variants((A, CHEAP), (B, None)), (7.0, 3.0), 0.2, {}),
]


@pytest.mark.parametrize("case, variants, rates, share, excluded", LENGTH_BLIND, ids=[r[0] for r in LENGTH_BLIND])
def test_a_length_blind_router_sends_every_variant_every_length(
        case: str, variants: tuple[VariantInput, ...], rates: tuple[float, float], share: float,
        excluded: dict[VariantId, float]) -> None:
    got = length_blind_excluded(variants, demand(*rates), share)
    assert got == pytest.approx(excluded)


MIX_PRIOR_ROWS = [
    # (case, requests the mix was measured on, excluded with its share): short requests only, which both
    # serve; the long cell only big serves is the most demanding servable length
    ("one request cheap can serve says little: one long one is counted in, cheap gets no load", 1.0, {A: 0.5}),
    ("no request measured: the prior alone", 0.0, {A: 1.0}),
    ("a hundred such requests are evidence: cheap keeps its load", 100.0, {}),
    ("a mix not measured on requests (token rates): as it is", None, {}),
]


@pytest.mark.parametrize("case, requests, excluded", MIX_PRIOR_ROWS, ids=[r[0] for r in MIX_PRIOR_ROWS])
def test_a_mix_of_a_few_requests_is_not_trusted(case: str, requests: float | None,
                                                 excluded: dict[VariantId, float]) -> None:
    got = length_blind_excluded(_variants((A, CHEAP), (B, BIG)), demand(1.0, 0.0), 0.2, requests)
    assert got == pytest.approx(excluded)


def test_lengths_no_variant_serves_do_not_count() -> None:
    """8k prompts no variant serves are unservable whatever the router does: the short-only variant misses
    only the 1k prompts the other serves (10 %), within the share, and keeps its load."""
    grid = Grid(inputs=(128, 1024, 8192), outputs=(64,))
    wide, short = (Profile(model="m", variant=name, accelerator=name, cost_per_hour=cost, slo=SLO("99", tpot=0.05),
                           grid=grid, capacity=np.array([capacity])) for name, cost, capacity in
                   (("wide", 2.0, [20.0, 10.0, 0.0]), ("short", 1.0, [10.0, 0.0, 0.0])))
    mix = from_buckets("m", grid, [(128, 64, 6.0), (1024, 64, 1.0), (8192, 64, 3.0)])
    assert length_blind_excluded(_variants((A, short), (B, wide)), mix, 0.2) == {}
    assert length_blind_excluded(_variants((A, short), (B, wide)), mix, 0.05) == {A: pytest.approx(0.1)}


def test_an_excluded_variant_gets_no_load_and_is_told_why() -> None:
    """30 % of the prompts are long: the cheap variant would receive them and miss; the plan gives it none
    and the reason says why. With the rule off the cheap variant takes the short requests."""
    lengths = LengthFacts(prompt_histogram=((128.0, 7.0), (1024.0, 10.0), (math.inf, 10.0)),
                          generation_histogram=((64.0, 10.0), (math.inf, 10.0)))
    for share, cheap in ((0.2, 0), (1.0, None)):
        given = model(series(rps=25.0), series(rps=0.0), current=(1, 1))
        given = ModelInput(given.id, given.variants, ModelSeries(given.series.variants, lengths))  # type: ignore[union-attr]
        result = run_cycle([given], {}, NOW, replace(SETTINGS, length_blind_share=share), Planner())
        if cheap is None:  # off: the cheap variant takes the short requests
            assert result.recommendations[A] >= 1 and result.excluded == {}
            continue
        assert result.excluded == {A: pytest.approx((0.3 * 10 + 1) / 11)}  # 10 requests measured, one long prior
        assert result.recommendations[A] == cheap
        assert "length-blind router" in result.reasons[A]
        assert result.recommendations[B] * 10.0 >= 7.5  # big carries the long 7.5 req/s itself


QUEUES_APART = [
    # (case, waiting on A (cheap), waiting on B (big), length_blind_share, demand planned req/s)
    ("a queue on a variant given no load is its own: not demand for others", 120.0, 0.0, 0.2, 25.0),
    ("a queue on a planned variant is drained against its capacity", 0.0, 120.0, 0.2, 27.0),
    ("with the rule off the cheap variant is capacity: its queue counts", 120.0, 0.0, 1.0, 27.0),
    ("both: only the planned variant's queue counts", 120.0, 60.0, 0.2, 26.0),
]


@pytest.mark.parametrize("case, on_a, on_b, share, planned", QUEUES_APART, ids=[r[0] for r in QUEUES_APART])
def test_vllm_keeps_a_queue_on_its_replica(case: str, on_a: float, on_b: float, share: float,
                                            planned: float) -> None:
    """25 req/s arriving, 30 % of them long; the drain time is 60 s and nothing is on its way."""
    lengths = LengthFacts(prompt_histogram=((128.0, 7.0), (1024.0, 10.0), (math.inf, 10.0)),
                          generation_histogram=((64.0, 10.0), (math.inf, 10.0)))
    given = model(series(rps=25.0, waiting=on_a), series(rps=0.0, waiting=on_b), current=(1, 1))
    given = ModelInput(given.id, given.variants, ModelSeries(given.series.variants, lengths))  # type: ignore[union-attr]
    result = run_cycle([given], {}, NOW, replace(SETTINGS, length_blind_share=share), Planner())
    outcome = result.models[given.id]
    assert outcome.demand is not None and outcome.demand.total == pytest.approx(planned)


HOLD_LEADS = [
    # (case, cold start of both variants s, seconds since big was published at 1, cheap replicas recommended)
    ("a hold with more than a replacement's cold start and a cycle left serves: nothing bought", 180.0, 100.0, 0),
    ("less than that left: not relied on, the replacement is ordered now", 180.0, 125.0, 1),
    ("a faster replacement is ordered later: the same hold still serves", 60.0, 200.0, 0),
    ("... until its own cold start and a cycle are left", 60.0, 250.0, 1),
]


@pytest.mark.parametrize("case, cold, since, cheap", HOLD_LEADS, ids=[r[0] for r in HOLD_LEADS])
def test_a_hold_is_counted_until_its_replacement_must_be_ordered(case: str, cold: float, since: float,
                                                                  cheap: int) -> None:
    """8 req/s of short requests: one cheap replica is the steady plan. The HPA still holds the one big
    replica published `since` seconds ago and replaced by its steady 0 a cycle later (300-s window, so the
    hold ends 315 s after it was published); its capacity serves while a replacement ordered later would
    still be ready before the hold ends (cycles 15 s apart)."""
    short = LengthFacts(prompt_histogram=((128.0, 10.0), (math.inf, 10.0)),
                        generation_histogram=((64.0, 10.0), (math.inf, 10.0)))
    variants = (
        VariantInput(A, CHEAP, max_replicas=10, current_replicas=0, ready_replicas=0, scale_down_window_s=300,
                     cold_start_s=cold),
        VariantInput(B, BIG, max_replicas=10, current_replicas=1, ready_replicas=1, scale_down_window_s=300,
                     cold_start_s=cold),
    )
    given = ModelInput(MID, variants, ModelSeries({A: series(rps=0.0), B: series(rps=8.0)}, short))
    history = {A: [(NOW - since, 0)], B: [(NOW - since, 1), (NOW - since + 15.0, 0)]}
    result = run_cycle([given], history, NOW, replace(SETTINGS, interval_s=15.0), Planner())
    assert result.recommendations[A] == cheap
    assert result.recommendations[B] == 0  # the held variant publishes its steady count either way


def test_a_mix_from_token_rates_is_not_weighed_as_measured_on_no_requests() -> None:
    """The histograms are there but empty (no completion in the window) and token rates give the lengths: the
    mix was not measured on requests, so the prior does not apply and the cheap variant keeps its load."""
    lengths = LengthFacts(prompt_histogram=((128.0, 0.0), (math.inf, 0.0)),
                          generation_histogram=((64.0, 0.0), (math.inf, 0.0)),
                          prompt_tokens_rps=100.0, generation_tokens_rps=50.0)
    given = model(series(rps=1.0), series(rps=0.0), current=(1, 1))
    given = ModelInput(given.id, given.variants, ModelSeries(given.series.variants, lengths))  # type: ignore[union-attr]
    result = run_cycle([given], {}, NOW, SETTINGS, Planner())
    assert result.models[given.id].estimate.source == "token_rates"  # type: ignore[union-attr]
    assert result.excluded == {}
