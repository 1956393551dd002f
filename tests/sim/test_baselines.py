"""The replay's yardsticks: the clairvoyant bound (cold starts paid ahead), static-peak's choice rule, the
GKE-style HPA's metric and load-tested target, the profile-claim knob, the synthetic traces and the cost
ratios the reports print."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from optimizer.demand import Demand
from optimizer.profile import SLO, Grid, Profile, resample
from sim.clairvoyant import Clairvoyant, solve
from sim.engine import Fleet, Request
from sim.fleet import FleetError, load_fleet, with_profile_claim
from sim.policies import (
    UTILIZATION,
    HpaGke,
    QueueScaler,
    Trace,
    demand_between,
    gke_batch_target,
    make_policies,
    static_peak_choice,
)
from sim.replay import Result, replay, with_cost_ratios
from sim.traces import AIBRIX_RAMP, TraceSpecError, aibrix_ramp, builtin, conversational, truncated


@pytest.fixture(scope="module")
def spec():
    return load_fleet()


def _one_variant(spec, cold_start_s: float):
    v = next(v for v in spec.variants if v.name.endswith("l40s"))
    return replace(spec, variants=(replace(v, cold_start_s=cold_start_s, min_replicas=0),))


def _step_trace(start: float = 300.0, end: float = 600.0, rate: float = 3.0) -> Trace:
    times = np.arange(start, end, 1.0 / rate)
    return Trace(times, np.full(times.size, 512, dtype=np.int64), np.full(times.size, 64, dtype=np.int64))


# ------------------------------------------------------------------------------------------ clairvoyant

@pytest.mark.parametrize(("cold_start", "first_alive"), [
    # demand first enters the criterion at the 255 s check (its minute [255, 315) holds the 300 s arrivals);
    # counts change once a minute, so the replica is ordered at the last minute m with 60·m + cold ≤ 255
    (0.0, 240.0),
    (60.0, 180.0),
    (150.0, 60.0),
])
def test_clairvoyant_orders_one_cold_start_ahead(spec, cold_start, first_alive):
    one = _one_variant(spec, cold_start)
    trace = _step_trace()
    schedule = solve(one, trace, time_limit_s=30)
    alive = schedule.replicas[0]
    first = int(np.flatnonzero(alive > 0)[0])
    assert first * schedule.slice_s == first_alive
    profile = one.profiles()[one.variants[0].name]
    full = demand_between(one.model, profile.grid, trace, 400.0, 460.0)
    mu = resample(profile, full.grid).capacity
    need = math.ceil(float(np.sum(full.rates[mu > 0] / mu[mu > 0])) / UTILIZATION - 1e-9)
    assert alive[int(400 // schedule.slice_s)] >= need
    assert schedule.gap <= 0.01 and schedule.unserved == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("rate", [3.0, 8.0])
def test_fewest_replicas_schedule_uses_the_largest_replicas(spec, rate):
    """`fewest`: the most replicas alive at once, minimised. One bucket of steady demand: the fewest is the
    largest replica type alone, ceil(load / (u · its capacity)), which the cost-optimal schedule never beats."""
    fleet = replace(spec, variants=tuple(replace(v, cold_start_s=60.0, min_replicas=0) for v in spec.variants))
    trace = _step_trace(300.0, 900.0, rate)
    least = solve(fleet, trace, time_limit_s=30, fewest=True)
    cheapest = solve(fleet, trace, time_limit_s=30)
    profiles = fleet.profiles()
    full = demand_between(fleet.model, next(iter(profiles.values())).grid, trace, 400.0, 460.0)
    bucket = np.unravel_index(int(np.argmax(full.rates)), full.rates.shape)
    best = max(float(resample(p, full.grid).capacity[bucket]) for p in profiles.values())
    expected = math.ceil(float(full.rates.sum()) / (UTILIZATION * best) - 1e-9)
    assert least.peak == int(least.replicas.sum(axis=0).max()) == expected
    assert cheapest.peak >= expected
    assert least.unserved == pytest.approx(0.0, abs=1e-6) and math.isnan(least.lower_bound)


def test_clairvoyant_replayed_meets_its_criterion_on_the_engine(spec):
    """Independent of the MILP's bookkeeping: the replicas the engine has ready at every cycle carry the
    next minute's demand at utilisation 0.8 by the profile."""
    one = _one_variant(spec, 150.0)
    trace = _step_trace(300.0, 900.0, 4.0)
    policy = Clairvoyant(one)
    result = replay(one, trace, policy)
    name = one.variants[0].name
    profile = one.profiles()[name]
    mu = resample(profile, profile.grid).capacity
    for t, ready in zip(result.series.times, result.series.ready[name], strict=True):
        lam = demand_between(one.model, profile.grid, trace, t, t + 60.0).rates
        assert float(np.sum(lam[mu > 0] / mu[mu > 0])) <= UTILIZATION * ready + 1e-9, t
    assert policy.schedule is not None
    # the engine bills what the schedule holds (plus draining tails), never less
    assert result.cost >= policy.schedule.cost * (trace.duration / (policy.schedule.replicas.shape[1] * 60.0)) - 1e-6
    assert "HiGHS gap" in result.notes


def test_clairvoyant_on_the_default_fleet_is_registered(spec):
    (p,) = make_policies(spec, "clairvoyant")
    assert p.name == "clairvoyant"
    (q,) = make_policies(spec, "clairvoyant:5")
    assert q.time_limit_s == 5.0
    with pytest.raises(ValueError, match="clairvoyant:<MILP time limit seconds>"):
        make_policies(spec, "clairvoyant:soon")
    with pytest.raises(ValueError, match="multiple of check_s"):
        solve(spec, _step_trace(), decision_s=50.0)


# ------------------------------------------------------------------------------------------ static-peak

GRID3 = Grid(inputs=(128, 1024, 8192), outputs=(64,))


def _profile(name: str, cost: float, caps: tuple[float, float, float]) -> Profile:
    return Profile(model="deepseek-coder-7b", variant=name, accelerator=name, cost_per_hour=cost,
                   slo=SLO("99", tpot=0.05), grid=GRID3, capacity=np.array([caps], dtype=float))


CHEAP = _profile("cheap", 1.0, (10.0, 0.0, 0.0))  # short prompts only
MID = _profile("mid", 1.5, (0.0, 5.0, 0.0))  # long prompts only
BIG = _profile("big", 2.5, (40.0, 10.0, 0.0))  # short and long; nobody serves 8k prompts


@pytest.mark.parametrize(("profiles", "rates", "expected"), [
    # an 8k bucket no type serves made every type partial and the cheap one that serves least won
    ((CHEAP, BIG), (5.0, 1.0, 0.5), ("big", 1)),
    ((CHEAP, BIG), (5.0, 1.0, 0.0), ("big", 1)),
    # both cover everything: the cheaper fleet
    ((CHEAP, BIG), (5.0, 0.0, 0.0), ("cheap", 1)),
    ((CHEAP, BIG), (20.0, 0.0, 0.0), ("big", 1)),  # 3 cheap ($3) vs 1 big ($2.5)
    # no type covers all: the greatest coverage of the peak, sized for what it serves
    ((CHEAP, MID), (5.0, 1.0, 0.0), ("cheap", 1)),
    ((CHEAP, MID), (1.0, 5.0, 0.0), ("mid", 2)),
    # nothing servable has demand: one replica of the cheapest
    ((MID, CHEAP), (0.0, 0.0, 3.0), ("cheap", 1)),
])
def test_static_peak_choice(spec, profiles, rates, expected):
    v0 = spec.variants[0]
    fleet = replace(spec, variants=tuple(replace(v0, name=p.variant) for p in profiles))
    peak = Demand("deepseek-coder-7b", GRID3, np.array([rates], dtype=float))
    assert static_peak_choice(fleet, {p.variant: p for p in profiles}, peak) == expected


def test_static_peak_without_profiles(spec):
    assert static_peak_choice(spec, {}, Demand("m", GRID3, np.zeros((1, 3)))) is None


def test_static_peak_on_the_code_trace_serves_its_long_prompts(spec):
    (p,) = make_policies(spec, "static-peak")
    p.initial(spec, builtin("code"))
    assert p.choice is not None and not p.choice[0].endswith(("l4", "a10g"))


# ------------------------------------------------------------------------------------------ hpa-gke

def test_queue_scaler_counts_running_only_for_the_queue_plus_batch_metric(spec):
    name = spec.variants[2].name
    one = replace(spec, variants=(replace(spec.variants[2], initial_replicas=1),))
    fleet = Fleet(one)
    for k in range(40):
        fleet.submit(Request(2000, 200), k * 0.01)
    fleet.advance(1.0)
    v = fleet.snapshot().variants[name]
    assert v.running > 0
    queue_only = QueueScaler(fleet, name, 3.0)._waiting()
    both = QueueScaler(fleet, name, 3.0, running=True)._waiting()
    assert queue_only == v.waiting and both == v.waiting + v.running


def test_gke_target_is_a_load_test_and_follows_request_length(spec):
    name = spec.variants[2].name

    def trace(out: int) -> Trace:
        times = np.arange(0.0, 600.0, 0.5)
        return Trace(times, np.full(times.size, 512, dtype=np.int64), np.full(times.size, out, dtype=np.int64))

    short, long = gke_batch_target(spec, name, trace(16)), gke_batch_target(spec, name, trace(256))
    assert 1.0 <= short < long  # longer answers: more requests in flight at the same utilisation
    policy = HpaGke(spec, name)
    policy.initial(spec, trace(256))
    assert policy.target == long


# ------------------------------------------------------------------------------------------ profile claim

@pytest.mark.parametrize("claim", [0.5, 1.0, 2.0])
def test_profile_claim_scales_what_policies_see_not_the_replicas(spec, claim):
    claimed = with_profile_claim(spec, claim)
    for name, p in claimed.profiles().items():
        np.testing.assert_allclose(p.capacity, spec.profiles()[name].capacity * claim)
    assert [v.perf for v in claimed.variants] == [v.perf for v in spec.variants]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True])
def test_profile_claim_refuses_nonsense(spec, bad):
    with pytest.raises(FleetError, match="profile claim"):
        with_profile_claim(spec, bad)


# ------------------------------------------------------------------------------------------ traces

def test_aibrix_ramp_is_seeded_and_follows_its_anchors():
    a, b = aibrix_ramp(3), aibrix_ramp(3)
    assert np.array_equal(a.times, b.times) and np.array_equal(a.prompts, b.prompts)
    assert not np.array_equal(a.times, aibrix_ramp(4).times)
    for (t0, r0), (t1, r1) in itertools.pairwise(AIBRIX_RAMP):
        n = np.sum((a.times >= t0) & (a.times < t1))
        mean = (r0 + r1) / 2 * (t1 - t0)
        assert abs(n - mean) < 4 * math.sqrt(mean) + 1, (t0, t1, n, mean)
    assert a.duration <= AIBRIX_RAMP[-1][0]
    assert np.sum(aibrix_ramp(3, scale=2.0).times < 500) > 1.7 * np.sum(a.times < 500)


def test_conversational_is_smooth_poisson_with_chat_lengths():
    t = conversational(1, duration_s=1200.0, mean_rps=5.0, swell=0.2, period_s=1200.0)
    per_min = np.histogram(t.times, bins=np.arange(0, 1201, 60))[0] / 60.0
    assert per_min.min() > 3.0 and per_min.max() < 7.5
    assert 400 < np.median(t.prompts) < 900 and 150 < np.median(t.outputs) < 350


@pytest.mark.parametrize("call", [
    lambda: aibrix_ramp(0, scale=0.0),
    lambda: aibrix_ramp(0, anchors=((0.0, 1.0),)),
    lambda: aibrix_ramp(0, anchors=((0.0, 1.0), (0.0, 2.0))),
    lambda: conversational(0, swell=1.0),
    lambda: conversational(0, mean_rps=0.0),
    lambda: builtin("aibrix-ramp:x"),
])
def test_trace_parameters_are_checked(call):
    with pytest.raises(TraceSpecError):
        call()


def test_builtin_names_and_truncation():
    assert builtin("not-a-trace.csv") is None
    code = builtin("code")
    assert code is not None and len(code) == 8819
    short = truncated(code, 600.0)
    assert short.duration < 600.0 and np.array_equal(short.times, code.times[: len(short)])


# ------------------------------------------------------------------------------------------ reporting

def _result(policy: str, cost: float) -> Result:
    return Result(policy, 1, cost, 1.0, 0, 0, 0, 0, 0, 0, {}, {}, 1.0)


@pytest.mark.parametrize(("costs", "expected"), [
    ({"clairvoyant": 10.0, "gpumix": 11.0, "oracle": 5.0}, {"clairvoyant": 1.0, "gpumix": 1.1, "oracle": 0.5}),
    ({"gpumix": 11.0}, {"gpumix": None}),  # no bound in the run: no ratio
])
def test_cost_ratios_against_the_clairvoyant(costs, expected):
    results = [_result(p, c) for p, c in costs.items()]
    with_cost_ratios(results)
    got = {r.policy: (None if r.cost_ratio is None else round(r.cost_ratio, 6)) for r in results}
    assert got == expected


# ------------------------------------------------------------------------------------------ the command

def test_replay_command_on_a_builtin_trace_with_a_profile_claim(tmp_path, capsys):
    from scaler.cli import main

    out = tmp_path / "out"
    code = main(["replay", "aibrix-ramp:2", "--policy", "static-peak,clairvoyant:20", "--profile-claim", "2",
                 "--speedup", "4", "--json", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["profile_claim"] == 2.0
    by = {r["policy"]: r for r in doc["results"]}
    assert by["clairvoyant"]["cost_vs_clairvoyant"] == 1.0
    static, bound = by["static-peak"], by["clairvoyant"]
    assert static["cost_vs_clairvoyant"] == pytest.approx(static["cost"] / bound["cost"], rel=1e-3)
    assert set(by["static-peak"]["miss_causes"]) == {"dropped", "unservable bucket", "routing", "cold start",
                                                     "capacity/queueing"}


@pytest.mark.parametrize(("argv", "message"), [
    (["replay", "aibrix-ramp", "--profile-claim", "0"], "profile claim"),
    (["replay", "aibrix-ramp", "--policy", ","], "at least one policy"),
    (["replay", "aibrix-ramp", "--speedup", "-1"], "speedup"),
])
def test_replay_command_names_bad_input(tmp_path, capsys, argv, message):
    from scaler.cli import main

    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
