"""The calibration rules, one table row each: removing a rule from optimizer/calibrate.py fails its row."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from optimizer.calibrate import (
    CalibrationError,
    CalibrationSettings,
    CalibrationState,
    Control,
    Correction,
    LatencyHistogram,
    ModelHeadroom,
    Outcome,
    ReplicaWindow,
    Track,
    VariantCalibration,
    apply,
    apply_control,
    attainment,
    gauges,
    judge,
    model_load,
    model_slo,
    parse_state,
    predicted_capacity,
    region_shares,
    update,
)
from optimizer.demand import from_buckets
from optimizer.profile import SLO, Grid, Profile
from tests.calibration.helpers import MATURE, histogram, model_window, ttft, window

S = CalibrationSettings()
WARM = S.warmup_s + 60.0  # old enough for a 60 s window

# ------------------------------------------------------------------------------- the capacity rules


def _outside(*, ratio: float, unservable: float, completed: float = 30.0) -> dict:
    """A window with no predicted capacity: `unservable` of its mix where the profile claims nothing."""
    return dict(load=0.2, ratio=ratio, predicted=None, completed=completed, unservable=unservable)


# (rule, factor before, window, settings overrides, outcome, factor after ("estimate": k̂ itself;
# "attainment": k × the share served within the SLO), bounded)
FACTOR_ROWS = [
    ("derate fast: one significant miss moves k to the estimate",
     0.6, dict(load=0.5, ratio=1.5), {}, Outcome.DERATED, "estimate", False),
    ("derate fast, but at most halving per cycle",
     1.0, dict(load=0.2, ratio=3.0), {}, Outcome.DERATED, 0.5, False),
    ("derate target is never above the load that missed",
     1.0, dict(load=0.7, ratio=1.5), dict(steepness=0.0), Outcome.DERATED, 0.7, False),
    ("a miss above the claimed capacity is consistent: no change",
     0.5, dict(load=0.8, ratio=1.5), {}, Outcome.HELD, 0.5, False),
    ("uprate slowly: +max_uprate per cycle however good the evidence",
     1.0, dict(load=0.9, ratio=0.25), {}, Outcome.UPRATED, 1.02, False),
    ("uprate never past the estimate",
     1.0, dict(load=0.82, ratio=0.6), dict(max_uprate=0.5), Outcome.UPRATED, "estimate", False),
    ("KV cache: no uprate past the load that fills it, however low the tail",
     1.0, dict(load=0.9, ratio=0.25, kv_peak=0.92), {}, Outcome.HELD, 1.0, False),
    ("KV cache: uprate up to the load that fills it (the default knee: 0.9 of the cache)",
     1.0, dict(load=0.9, ratio=0.25, kv_peak=0.78), dict(max_uprate=0.5), Outcome.UPRATED, 0.9 * 0.9 / 0.78, False),
    ("KV cache: the knee is the operator's",
     1.0, dict(load=0.9, ratio=0.25, kv_peak=0.78), dict(kv_knee=0.8), Outcome.HELD, 1.0, False),
    ("KV cache: a miss still derates to the latency estimate",
     0.6, dict(load=0.5, ratio=1.5, kv_peak=0.3), {}, Outcome.DERATED, "estimate", False),
    ("no uprate from low load",
     1.0, dict(load=0.45, ratio=0.05), {}, Outcome.HELD, 1.0, False),
    ("no uprate without latency margin",
     0.8, dict(load=0.75, ratio=0.95), {}, Outcome.HELD, 0.8, False),
    ("lower bound: never below factor_min",
     0.3, dict(load=0.05, ratio=3.0), {}, Outcome.DERATED, 0.25, True),
    ("upper bound: never above factor_max",
     1.99, dict(load=1.9, ratio=0.25), {}, Outcome.UPRATED, 2.0, True),
    ("operator bounds are the operator's",
     1.0, dict(load=0.2, ratio=3.0), dict(factor_min=0.9), Outcome.DERATED, 0.9, True),
    ("warm-up: replicas younger than warm-up + window are ignored",
     1.0, dict(load=0.2, ratio=3.0, ages=[S.warmup_s + 30.0] * 4), {}, Outcome.SKIPPED_WARMUP, 1.0, False),
    ("warm-up is the operator's",
     1.0, dict(load=0.2, ratio=3.0, ages=[S.warmup_s + 30.0] * 4), dict(warmup_s=0.0), Outcome.DERATED, 0.5,
     False),
    ("idle: too few completions to show a window well inside the SLO",
     1.0, dict(load=0.9, ratio=0.25, completed=10.0), {}, Outcome.SKIPPED_IDLE, 1.0, False),
    ("few completions, but a significant miss: judged",
     1.0, dict(load=0.2, ratio=3.0, completed=10.0), {}, Outcome.DERATED, 0.5, False),
    ("few completions and a miss within counting noise: idle",
     1.0, dict(load=0.2, ratio=1.2, completed=2.0), {}, Outcome.SKIPPED_IDLE, 1.0, False),
    ("saturated: no uprate from a window whose queue grew",
     1.0, dict(load=0.9, ratio=0.25, waiting_growth=5.0), {}, Outcome.SKIPPED_SATURATED, 1.0, False),
    ("saturated: a miss at load above the claim says nothing",
     0.5, dict(load=0.8, ratio=3.0, waiting_growth=5.0), {}, Outcome.SKIPPED_SATURATED, 0.5, False),
    ("saturated and missing below the claim: k bounded by the throughput seen, not by latency",
     1.0, dict(load=0.7, ratio=3.0, waiting_growth=5.0), {}, Outcome.DERATED, 0.7, False),
    ("saturation ceiling can be turned off",
     1.0, dict(load=0.7, ratio=3.0, waiting_growth=5.0), dict(saturation_ceiling=False),
     Outcome.SKIPPED_SATURATED, 1.0, False),
    ("a tiny queue growth is not saturation",
     1.0, dict(load=0.9, ratio=0.25, waiting_growth=0.5), {}, Outcome.UPRATED, 1.02, False),
    ("no prediction for this mix: skipped",
     1.0, dict(load=0.2, ratio=3.0, predicted=None), {}, Outcome.SKIPPED_NO_PREDICTION, 1.0, False),
    ("a mix mostly outside the profile, missing: derated to the share served within the SLO",
     1.0, _outside(ratio=3.0, unservable=0.7), {}, Outcome.DERATED, "attainment", False),
    ("a mix mostly outside the profile: at most halving per cycle too",
     1.0, _outside(ratio=20.0, unservable=0.9), {}, Outcome.DERATED, 0.5, False),
    ("a mix mostly outside the profile, within the SLO: nothing to learn",
     1.0, _outside(ratio=0.5, unservable=0.9), {}, Outcome.SKIPPED_NO_PREDICTION, 1.0, False),
    ("a mix mostly outside the profile, a miss within counting noise: skipped",
     1.0, _outside(ratio=1.2, unservable=0.9, completed=2.0), {}, Outcome.SKIPPED_NO_PREDICTION, 1.0, False),
    ("a mix half inside the profile is not this rule",
     1.0, _outside(ratio=3.0, unservable=0.5), {}, Outcome.SKIPPED_NO_PREDICTION, 1.0, False),
]


@pytest.mark.parametrize(("rule", "k", "kw", "overrides", "outcome", "after", "bounded"), FACTOR_ROWS,
                         ids=[r[0] for r in FACTOR_ROWS])
def test_factor_rules(rule: str, k: float, kw: dict, overrides: dict, outcome: Outcome, after: float | str,
                      bounded: bool) -> None:
    verdict = judge(k, window(**kw), replace(S, **overrides))
    assert verdict.outcome is outcome, verdict
    expected = after
    if after == "estimate":
        expected = verdict.evidence.estimate
    elif after == "attainment":
        expected = None if verdict.evidence.attainment is None else k * verdict.evidence.attainment
    assert expected is not None and 0.0 < expected < k * 1.5
    assert verdict.after == pytest.approx(expected, rel=1e-9), verdict
    assert verdict.bounded is bounded


def test_young_replicas_samples_never_reach_the_estimate() -> None:
    """Two mature replicas well inside the SLO, two just-ready ones draining a backlog (dynamo#12430): only
    the mature ones are judged, so the factor rises instead of collapsing."""
    base = window(load=0.9, ratio=0.25, replicas=2)
    young = tuple(ReplicaWindow(age_s=30.0, completed=500.0, histograms=ttft(500, 4.0)) for _ in range(2))
    verdict = judge(1.0, replace(base, replicas=base.replicas + young), S)
    assert verdict.outcome is Outcome.UPRATED
    assert (verdict.evidence.replicas_used, verdict.evidence.replicas_warming) == (2, 2)
    assert verdict.evidence.load == pytest.approx(0.9)


@pytest.mark.parametrize(("requests", "miss_ratio", "outcome"), [
    (100, 1.2, Outcome.HELD),  # 2.1 % misses of 100: within counting noise of the 1 % budget
    (5000, 1.2, Outcome.DERATED),  # the same share of 5000 is significant
])
def test_misses_must_be_significant(requests: int, miss_ratio: float, outcome: Outcome) -> None:
    w = window(load=0.5, ratio=miss_ratio, replicas=1, completed=float(requests), predicted=requests / 30.0)
    assert judge(1.0, w, S).outcome is outcome


def test_repeated_evidence_does_not_compound_a_derate() -> None:
    """Cycles every 15 s over a 1 min window see the same bad minute four times; the derate target is
    absolute, so k lands on it once."""
    state = CalibrationState({"llm/v": VariantCalibration(0.7)})
    for t in range(4):
        state = update(state, [window(load=0.6, ratio=1.5)], [], float(t), S).state
    once = judge(0.7, window(load=0.6, ratio=1.5), S)
    assert once.outcome is Outcome.DERATED
    assert state.variants["llm/v"].factor == pytest.approx(once.after)


# ------------------------------------------------------------------------------- freeze, reset, state


def test_freeze_keeps_the_factor_and_reset_restores_the_default() -> None:
    state = update(CalibrationState(), [window(load=0.2, ratio=3.0)], [], 1.0, S).state
    assert state.variants["llm/v"].factor == 0.5
    frozen = apply_control(state, {"variant:llm/v": Control(frozen=True)}, S)
    step = update(frozen, [window(load=0.1, ratio=3.0)], [], 2.0, S)
    assert step.variants["llm/v"].outcome is Outcome.FROZEN
    assert step.state.variants["llm/v"].factor == 0.5
    reset = apply_control(step.state, {"variant:llm/v": Control(reset_at=3.0)}, S)
    assert reset.variants["llm/v"] == VariantCalibration(reset_seen=3.0)
    # The same reset seen again (the control stays in Redis) does not wipe what was learnt since.
    learnt = update(reset, [window(load=0.2, ratio=3.0)], [], 4.0, S).state
    again = apply_control(learnt, {"variant:llm/v": Control(reset_at=3.0)}, S)
    assert again.variants["llm/v"].factor == 0.5


def test_headroom_freeze_and_reset() -> None:
    state = CalibrationState(models={"llm/m": ModelHeadroom(0.6)})
    frozen = apply_control(state, {"model:llm/m": Control(frozen=True)}, S)
    step = update(frozen, [], [model_window(requests=5000, ratio=3.0, load=0.6)], 1.0, S)
    assert step.models["llm/m"].outcome is Outcome.FROZEN
    assert step.state.utilization("llm/m", S) == 0.6
    reset = apply_control(step.state, {"model:llm/m": Control(reset_at=2.0)}, S)
    assert reset.utilization("llm/m", S) == S.utilization_initial


GOOD_V = VariantCalibration(0.7, False, 3, 10.0, None, {"in<=1024": Track(0.6, 5)})


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("variant:llm/b", {"factor": "high", "updates": 1}, "factor"),
    ("variant:llm/b", {"factor": math.nan, "updates": 1}, "factor"),
    ("variant:llm/b", {"factor": -1.0, "updates": 1}, "factor"),
    ("variant:llm/b", {"factor": 1.0}, "updates"),
    ("variant:llm/b", {"factor": 1.0, "updates": 1, "frozen": "yes"}, "frozen"),
    ("variant:llm/b", {"factor": 1.0, "updates": 1, "regions": {"in<=1": {"factor": None}}}, "regions.in<=1"),
    ("variant:llm/b", [1, 2], "JSON object"),
    ("model:llm/b", {"utilization": 1.5}, "utilization"),
    ("model:llm/b", {"utilization": 0.8, "attainment": "x"}, "attainment"),
    ("junk", {"factor": 1.0}, "unknown entry"),
])
def test_malformed_entries_are_reported_and_cost_only_themselves(key: str, value: object, problem: str) -> None:
    fields = {"variant:llm/a": GOOD_V.to_json(), "model:llm/m": ModelHeadroom(0.85).to_json(), key: value}
    state, problems = parse_state(fields, S)
    assert state.variants == {"llm/a": GOOD_V}
    assert state.models == {"llm/m": ModelHeadroom(0.85)}
    assert list(problems) == [key]
    assert problem in problems[key]


def test_state_round_trips_and_is_clamped_to_todays_bounds() -> None:
    state = CalibrationState({"llm/a": GOOD_V, "llm/z": VariantCalibration(1.9, True, 1)},
                             {"llm/m": ModelHeadroom(0.92, attainment=0.995)})
    parsed, problems = parse_state(state.to_fields(), S)
    assert problems == {} and parsed == state
    tighter, _ = parse_state(state.to_fields(), replace(S, factor_max=1.5, utilization_max=0.9))
    assert tighter.variants["llm/z"].factor == 1.5
    assert tighter.models["llm/m"].utilization == 0.9


# ------------------------------------------------------------------------------ histograms and attainment

H = LatencyHistogram((0.1, 0.25, 0.5, 1.0), (10.0, 40.0, 80.0, 90.0), 100.0)


@pytest.mark.parametrize(("limit", "mode", "within"), [
    (0.25, "bound", 40.0),  # a limit on a bound is exact
    (0.4, "bound", 40.0),  # the straddled bucket counts as missed
    (0.4, "linear", 40.0 + 40.0 * 0.15 / 0.25),  # or spread uniformly
    (0.05, "bound", 0.0),
    (0.05, "linear", 5.0),  # the first bucket starts at 0
    (2.0, "bound", 90.0),  # past the last bound only the counted ones are known within
    (2.0, "linear", 90.0),
])
def test_within(limit: float, mode: str, within: float) -> None:
    assert H.within(limit, mode) == pytest.approx(within)  # type: ignore[arg-type]


@pytest.mark.parametrize(("q", "value"), [(0.1, 0.1), (0.25, 0.175), (0.85, 0.75), (0.95, math.inf)])
def test_quantile_interpolates_inside_its_bucket(q: float, value: float) -> None:
    assert H.quantile(q) == pytest.approx(value)


def test_from_buckets_repairs_increase_extrapolation_and_rejects_nonsense() -> None:
    h = LatencyHistogram.from_buckets([(0.1, 5.0), (0.25, 4.5), (math.inf, 10.0), (0.5, 9.0)])
    assert h.bounds == (0.1, 0.25, 0.5) and h.cumulative == (5.0, 5.0, 9.0) and h.total == 10.0
    with pytest.raises(CalibrationError, match=r"\+Inf"):
        LatencyHistogram.from_buckets([(0.1, 5.0)])
    with pytest.raises(CalibrationError, match=r"le=0\.1"):
        LatencyHistogram.from_buckets([(0.1, math.nan), (math.inf, 1.0)])
    with pytest.raises(CalibrationError, match="bounds differ"):
        h.merged(H)


def test_attainment_from_two_marginal_histograms_is_a_lower_bound() -> None:
    slo = SLO(percentile="99", ttft=0.25, tpot=0.5)
    att = attainment({"ttft": H, "tpot": H, "e2e": H}, slo, 0.99)
    assert att is not None
    assert att.judged == ("ttft", "tpot")  # no e2e limit: its histogram is not judged
    assert att.miss_share == pytest.approx(0.6 + 0.2)
    assert att.attainment == pytest.approx(0.2)
    assert att.latency_ratio == math.inf  # the 99th percentile is past the last bound
    assert attainment({"e2e": H}, slo, 0.99) is None


# ------------------------------------------------------------------------------ the headroom loop

# (rule, u before, model window, settings overrides, outcome, u after)
HEADROOM_ROWS = [
    ("decrease fast on a significant miss", 0.8, dict(requests=5000, ratio=1.5, load=0.8), {},
     Outcome.DERATED, 0.76),
    ("never below utilization_min", 0.51, dict(requests=5000, ratio=1.5, load=0.5), {}, Outcome.DERATED, 0.5),
    ("increase slowly when well within target and loaded", 0.8, dict(requests=5000, ratio=0.5, load=0.75), {},
     Outcome.UPRATED, 0.805),
    ("never above utilization_max", 0.948, dict(requests=5000, ratio=0.5, load=0.9), {}, Outcome.UPRATED, 0.95),
    ("operator limits", 0.8, dict(requests=5000, ratio=0.5, load=0.8), dict(utilization_max=0.8), Outcome.HELD,
     0.8),
    ("no increase while the fleet runs far below u (anti-windup)", 0.8,
     dict(requests=5000, ratio=0.5, load=0.3), {}, Outcome.HELD, 0.8),
    ("no increase near the target", 0.8, dict(requests=5000, ratio=1.0, load=0.8), {}, Outcome.HELD, 0.8),
    ("idle: too few requests", 0.8, dict(requests=50, ratio=3.0, load=0.8), {}, Outcome.SKIPPED_IDLE, 0.8),
]


@pytest.mark.parametrize(("rule", "u", "kw", "overrides", "outcome", "after"), HEADROOM_ROWS,
                         ids=[r[0] for r in HEADROOM_ROWS])
def test_headroom_rules(rule: str, u: float, kw: dict, overrides: dict, outcome: Outcome, after: float) -> None:
    state = CalibrationState(models={"llm/m": ModelHeadroom(u)})
    step = update(state, [], [model_window(**kw)], 1.0, replace(S, **overrides))
    assert step.models["llm/m"].outcome is outcome
    assert step.state.utilization("llm/m", S) == pytest.approx(after)


# ------------------------------------------------------------------------------ profiles and regions

GRID = Grid((256, 2048), (64, 256))
PROFILE = Profile("m", "v", "L4", 1.0, SLO(ttft=1.0), GRID, np.array([[4.0, 1.0], [2.0, 0.0]]))


def test_predicted_capacity_is_harmonic_over_the_mix() -> None:
    demand = from_buckets("m", GRID, [(200, 50, 3.0), (1500, 60, 1.0)])
    assert predicted_capacity(PROFILE, demand) == pytest.approx(1 / (0.75 / 4.0 + 0.25 / 1.0))
    assert predicted_capacity(PROFILE, from_buckets("m", GRID, [(1500, 200, 1.0)])) is None  # μ = 0 there
    assert predicted_capacity(PROFILE, from_buckets("m", GRID, [])) is None


def test_apply_scales_the_table_and_regions_only_where_supported() -> None:
    assert np.allclose(apply(PROFILE, Correction(0.5)).capacity, PROFILE.capacity * 0.5)
    corrected = apply(PROFILE, Correction(0.5, {"in>1024": 2.0}, (1024,)))
    assert np.allclose(corrected.capacity, [[2.0, 2.0], [1.0, 0.0]])
    settings = replace(S, regions=(1024,))
    state = CalibrationState({"llm/v": VariantCalibration(0.5, regions={"in>1024": Track(2.0, 4)})})
    assert state.correction("llm/v", settings).regions == {}  # 4 < region_min_samples
    state = CalibrationState({"llm/v": VariantCalibration(0.5, regions={"in>1024": Track(2.0, 5)})})
    assert state.correction("llm/v", settings).regions == {"in>1024": 2.0}


def test_a_window_counts_for_a_region_only_when_its_requests_are_there() -> None:
    settings = replace(S, regions=(1024,))
    demand = from_buckets("m", GRID, [(200, 50, 9.0), (1500, 60, 1.0)])
    shares = region_shares(PROFILE, demand, settings)
    assert shares == pytest.approx({"in<=1024": 0.9, "in>1024": 0.1})
    step = update(CalibrationState(), [window(load=0.2, ratio=3.0, regions=shares)], [], 1.0, settings)
    assert set(step.state.variants["llm/v"].regions) == {"in<=1024"}
    assert step.state.variants["llm/v"].regions["in<=1024"] == Track(0.5, 1)


def test_gauges() -> None:
    state = CalibrationState({"llm/v": VariantCalibration(0.5, True, regions={"in>1024": Track(2.0, 5)})},
                             {"llm/m": ModelHeadroom(0.85, attainment=0.991)})
    assert gauges(state) == [
        ("gpumix_calibration_factor", {"namespace": "llm", "variant": "v"}, 0.5),
        ("gpumix_calibration_frozen", {"namespace": "llm", "variant": "v"}, 1.0),
        ("gpumix_calibration_region_factor", {"namespace": "llm", "variant": "v", "region": "in>1024"}, 2.0),
        ("gpumix_headroom_utilization", {"namespace": "llm", "model": "m"}, 0.85),
        ("gpumix_headroom_frozen", {"namespace": "llm", "model": "m"}, 0.0),
        ("gpumix_slo_attainment", {"namespace": "llm", "model": "m"}, 0.991),
    ]


@pytest.mark.parametrize(("overrides", "field"), [
    (dict(factor_min=1.5), "factor_min"),
    (dict(max_derate=0.0), "max_derate"),
    (dict(kv_knee=0.0), "kv_knee"),
    (dict(kv_knee=1.5), "kv_knee"),
    (dict(utilization_min=0.9, utilization_initial=0.8), "utilization_min"),
    (dict(regions=(2048, 1024)), "regions"),
    (dict(interpolation="cubic"), "interpolation"),
])
def test_settings_are_validated(overrides: dict, field: str) -> None:
    with pytest.raises(CalibrationError, match=field):
        replace(S, **overrides).checked()


def test_histograms_with_different_bounds_skip_only_that_window() -> None:
    w = window(load=0.5, ratio=1.5, replicas=1)
    odd = ReplicaWindow(MATURE, 30.0, {"ttft": histogram([0.1] * 30, bounds=(0.1, 1.0))})
    verdict = judge(1.0, replace(w, replicas=(*w.replicas, odd)), S)
    assert verdict.outcome is Outcome.SKIPPED_BAD_INPUT and "bounds differ" in verdict.detail


def test_histogram_from_values_and_where_a_limit_falls() -> None:
    h = LatencyHistogram.from_values([0.05, 0.1, 0.3, 2.0, math.nan], (0.1, 0.25, 0.5))
    assert (h.bounds, h.cumulative, h.total) == ((0.1, 0.25, 0.5), (2.0, 2.0, 3.0), 4.0)
    assert h.straddles(0.25) is None
    assert h.straddles(0.3) == (0.25, 0.5)
    assert h.straddles(0.9) == (0.5, math.inf)
    with pytest.raises(CalibrationError, match="bounds"):
        LatencyHistogram.from_values([1.0], ())


def test_model_load_is_demand_over_the_capacity_it_ran() -> None:
    demand = from_buckets("m", GRID, [(200, 50, 6.0)])
    assert model_load(demand, [(PROFILE, 2.0), (PROFILE, 1.0)]) == pytest.approx(6.0 / (3 * 4.0))
    assert model_load(demand, [(PROFILE, 0.0)]) is None


def test_a_models_slo_is_the_strictest_of_its_profiles() -> None:
    loose = replace(PROFILE, slo=SLO(percentile="90", ttft=2.0, tpot=0.1))
    strict = replace(PROFILE, slo=SLO(percentile="99", ttft=1.0, e2e=30.0))
    assert model_slo([loose, strict]) == SLO(percentile="99", ttft=1.0, tpot=0.1, e2e=30.0)
