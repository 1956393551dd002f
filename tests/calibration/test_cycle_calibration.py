"""The calibration inside the one decision path (optimizer/cycle.py): what the planner sees, and when the
cycle learns. Tables read as the specification; `make mutation` removes each rule and expects a row to fail.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from optimizer.calibrate import (
    MAX_UNSERVABLE_SHARE,
    CalibrationSettings,
    CalibrationState,
    ModelHeadroom,
    ModelWindow,
    Outcome,
    PodEvidence,
    VariantCalibration,
    VariantEvidence,
    predicted_capacity,
    update,
)
from optimizer.cycle import CycleSettings, ModelInput, ModelSeries, VariantInput, VariantSeries, Verdict, run_cycle
from optimizer.decide import Settings
from optimizer.demand import from_buckets
from optimizer.estimate import LengthFacts
from optimizer.ids import ModelId, VariantId
from optimizer.program import Planner
from tests.optimizer.fixtures import BIG, CHEAP, GRID, LONG, SHORT

from .helpers import model_window

NOW = 1000.0
MID = ModelId("llm", "m")
A, B = VariantId("llm", "cheap"), VariantId("llm", "big")
# u = 1 in the program, so a headroom u_m reads directly as the share of capacity planned.
CAL = CalibrationSettings(utilization_initial=1.0, utilization_min=0.5, utilization_max=1.0, warmup_s=0.0)
ON = CycleSettings(decide=Settings(utilization=1.0, churn=0.0, hysteresis_margin=0.0), calibration=CAL)
OFF = CycleSettings(decide=ON.decide)
# Half the requests short, half long: big serves 1 / (0.5/40 + 0.5/10) = 16 req/s per replica.
HALF = LengthFacts(prompt_histogram=((128.0, 10.0), (math.inf, 20.0)),
                   generation_histogram=((64.0, 20.0), (math.inf, 20.0)))
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)  # vLLM's inter-token latency buckets (the first ones)


def pod(completed: float, tpot: float, age: float = 3600.0) -> PodEvidence:
    """A pod whose every request had inter-token latency `tpot` (big's profile limits TPOT to 0.05 s)."""
    buckets = [(b, completed if tpot <= b else 0.0) for b in TPOT_BOUNDS]
    return PodEvidence(age, completed, {"tpot": [*buckets, (math.inf, completed)]})


def evidence(completed: float, tpot: float) -> VariantEvidence:
    return VariantEvidence(60.0, {"big-0": pod(completed, tpot)}, 0.0, 0.0, HALF.prompt_histogram,
                           HALF.generation_histogram)


def big_model(rps: float, *, ev: VariantEvidence | None = None, cheap_serving_silently: bool = False) -> ModelInput:
    # `cheap` has no profile here, so big alone carries the demand and its count reads off its capacity.
    variants = (
        VariantInput(A, None, max_replicas=10, current_replicas=1 if cheap_serving_silently else 0,
                     ready_replicas=1 if cheap_serving_silently else 0),
        VariantInput(B, BIG, max_replicas=10, current_replicas=1, ready_replicas=1, evidence=ev),
    )
    s = VariantSeries(completions_rps=rps, waiting=0.0, running=0.0, newest_sample=NOW - 1, window_coverage=1.0)
    return ModelInput(MID, variants, ModelSeries({B: s}, HALF))


def learnt(factor: float = 1.0, u: float = 1.0) -> CalibrationState:
    return CalibrationState({str(B): VariantCalibration(factor)}, {str(MID): ModelHeadroom(u)})


# ---------------------------------------------------------------------------------- what the planner sees

PLANNED = [
    # (case, settings, learnt state, big's recommendation for 20 req/s of the half/half mix)
    ("calibration off: the profile as it is (20 / 16 → 2)", OFF, learnt(0.5), 2),
    ("nothing learnt yet: the profile as it is", ON, CalibrationState(), 2),
    ("derated to half: 20 / 8 → 3", ON, learnt(0.5), 3),
    ("uprated to double: 20 / 32 → 1", ON, learnt(2.0), 1),
    ("headroom u_m = 0.5: 20 / (16 · 0.5) → 3", ON, learnt(1.0, 0.5), 3),
]


@pytest.mark.parametrize("case, settings, state, replicas", PLANNED, ids=[r[0] for r in PLANNED])
def test_the_planner_sees_corrected_profiles(case: str, settings: CycleSettings, state: CalibrationState,
                                             replicas: int) -> None:
    result = run_cycle([big_model(20.0)], {}, NOW, settings, Planner(), calibration=state)
    assert result.recommendations[B] == replicas
    assert (result.calibration is None) == (settings.calibration is None)


# ---------------------------------------------------------------------------------- when the cycle learns

LEARNS = [
    # (case, model input, big's factor after the cycle)
    # 10 req/s completed against a claimed 16 (ρ = 0.625), every request missing its 0.05 s TPOT limit by 2×:
    # k̂ = 0.625 · 2^-½ = 0.44, a cycle at most halves: 0.5.
    ("fresh data with misses below the claimed capacity derate", big_model(10.0, ev=evidence(600.0, 0.1)), 0.5),
    ("no evidence this cycle: nothing learnt", big_model(10.0), 1.0),
    ("partial data: the same evidence is not used", big_model(10.0, ev=evidence(600.0, 0.1),
                                                              cheap_serving_silently=True), 1.0),
]


@pytest.mark.parametrize("case, given, factor", LEARNS, ids=[r[0] for r in LEARNS])
def test_the_cycle_learns_only_from_whole_windows(case: str, given: ModelInput, factor: float) -> None:
    result = run_cycle([given], {}, NOW, ON, Planner(), calibration=CalibrationState())
    assert result.calibration is not None
    assert result.calibration.state.correction(str(B), CAL).factor == pytest.approx(factor)
    if "partial" in case:
        assert result.models[MID].verdict is Verdict.PARTIAL


def test_a_derated_variant_is_planned_with_its_new_factor_in_the_same_cycle() -> None:
    # The window says big serves half what it claims: the cycle that learns it plans with it.
    result = run_cycle([big_model(20.0, ev=evidence(600.0, 0.1))], {}, NOW, ON, Planner(),
                       calibration=CalibrationState())
    assert result.recommendations[B] == 3  # 20 / (16 · 0.5)


# ---------------------------------------------------------------------------------- the headroom's pace

PACE = [
    # (case, seconds since u was last lowered (None: never), window, capacity arriving, outcome, u after)
    ("a miss lowers u", None, 120.0, False, Outcome.DERATED, 0.95 * 0.8),
    ("the window still holds the misses that lowered u: held", 60.0, 120.0, False, Outcome.HELD, 0.8),
    ("a whole window after the change: lowered again", 120.0, 120.0, False, Outcome.DERATED, 0.95 * 0.8),
    ("misses while replicas were starting are the cold start's: held", None, 120.0, True, Outcome.HELD, 0.8),
]


@pytest.mark.parametrize("case, since, window_s, arriving, outcome, after", PACE, ids=[r[0] for r in PACE])
def test_headroom_is_lowered_once_per_window_of_evidence(case: str, since: float | None, window_s: float,
                                                         arriving: bool, outcome: Outcome, after: float) -> None:
    settings = CalibrationSettings()
    lowered_at = None if since is None else NOW - since
    state = CalibrationState({}, {"llm/m": ModelHeadroom(0.8, lowered_at=lowered_at)})
    base = model_window(requests=2000, ratio=3.0, load=0.8)  # p99 at 3× the limit: a clear miss
    mw = ModelWindow(base.model, base.slo, base.histograms, base.load, window_s, arriving)
    step = update(state, [], [mw], NOW, settings)
    assert step.models["llm/m"].outcome is outcome
    assert step.state.models["llm/m"].utilization == pytest.approx(after)


# ---------------------------------------------------------------------------------- the profile at a mix

_AT_LIMIT = 10.0 * MAX_UNSERVABLE_SHARE / (1 - MAX_UNSERVABLE_SHARE)  # long req/s beside 10 short at the limit
MIXES = [
    # (case, short req/s, long req/s, cheap's capacity at the mix)
    ("all servable", 10.0, 0.0, 10.0),
    ("a small unservable share is left out of the mix", 10.0, 0.8 * _AT_LIMIT, 10.0),
    ("beyond MAX_UNSERVABLE_SHARE nothing is predicted", 10.0, 1.2 * _AT_LIMIT, None),
]


@pytest.mark.parametrize("case, short, long, capacity", MIXES, ids=[r[0] for r in MIXES])
def test_capacity_at_a_mix(case: str, short: float, long: float, capacity: float | None) -> None:
    mix = from_buckets("m", GRID, [(*SHORT, short), (*LONG, long)])
    got = predicted_capacity(CHEAP, mix)
    assert got == (None if capacity is None else pytest.approx(capacity))


ARRIVING = [
    # (case, big's current / ready replicas, its pod's age in s, capacity arriving)
    ("all ready and mature", (1, 1), 3600.0, False),
    ("a replica starting", (2, 1), 3600.0, True),
    ("a pod turned ready inside the window", (1, 1), 30.0, True),
]


@pytest.mark.parametrize("case, counts, age, arriving", ARRIVING, ids=[r[0] for r in ARRIVING])
def test_the_cycle_tells_the_headroom_when_capacity_was_arriving(case: str, counts: tuple[int, int], age: float,
                                                                 arriving: bool) -> None:
    ev = VariantEvidence(60.0, {"big-0": replace(pod(600.0, 0.1), age_s=age)}, 0.0, 0.0,
                         HALF.prompt_histogram, HALF.generation_histogram)
    given = big_model(10.0, ev=ev)
    big = replace(given.variants[1], current_replicas=counts[0], ready_replicas=counts[1])
    given = replace(given, variants=(given.variants[0], big))
    settings = replace(CAL, min_requests=0.0, significance=0.0)
    step = run_cycle([given], {}, NOW, replace(ON, calibration=settings), Planner(),
                     calibration=CalibrationState()).calibration
    assert step is not None
    verdict = step.models[str(MID)]
    assert (verdict.outcome is Outcome.HELD) == arriving, verdict
