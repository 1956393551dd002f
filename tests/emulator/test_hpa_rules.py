"""The HPA's rules (optimizer/hpa.py) and the controller's memory (sim/hpa_emulator.HPA), one table per rule,
each row a case from the Kubernetes documentation or the controller's code paths
(pkg/controller/podautoscaler/horizontal.go, replica_calculator.go)."""

from __future__ import annotations

import pytest

from optimizer.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    ScalingPolicy,
    ScalingRules,
    desired_replicas,
    normalize,
    normalize_legacy,
    proposal,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    stabilize_legacy,
)
from sim.hpa_emulator import HPA
from sim.keda_emulator import Fallback, fallback_replicas, to_milli


@pytest.mark.parametrize(
    ("values", "targets", "current", "expected"),
    [
        ([10.0], [1.0], 4, 10),  # AverageValue: ceil(value / target), whatever the current count
        ([950.0], [100.0], 4, 10),
        ([10.5], [1.0], 10, 10),  # |10.5/10 − 1| ≤ 0.1 is inside the tolerance: no change
        ([12.0], [1.0], 10, 12),
        ([9.0], [1.0], 10, 10),  # −10 % also inside
        ([8.9], [1.0], 10, 9),
        ([0.0], [1.0], 3, 0),  # zero proposes zero (min/max apply later)
        ([3.0, 7.0], [1.0, 1.0], 4, 7),  # several metrics: the largest proposal wins
        ([None], [1.0], 4, None),  # the only metric is unavailable: no action
        ([None, 2.0], [1.0, 1.0], 4, None),  # one invalid and the rest would scale down: no action
        ([None, 6.0], [1.0, 1.0], 4, 6),  # one invalid but the rest scale up: go
    ],
)
def test_hpa_proposal(values: list[float | None], targets: list[float], current: int, expected: int | None) -> None:
    assert proposal(values, targets, current) == expected


@pytest.mark.parametrize(
    ("history", "now", "desired", "current", "up_w", "down_w", "expected"),
    [
        ([], 100.0, 5, 3, 0.0, 300.0, 5),  # nothing remembered: take it
        ([(0.0, 10), (50.0, 8)], 100.0, 4, 10, 0.0, 300.0, 10),  # down: highest in the down window
        ([(0.0, 10), (50.0, 8)], 301.0, 4, 10, 0.0, 300.0, 8),  # t=0 left the window (strictly newer counts)
        ([(0.0, 10)], 300.0, 4, 10, 0.0, 300.0, 4),  # exactly window old: no longer counts
        ([(40.0, 3), (50.0, 5)], 60.0, 8, 2, 60.0, 300.0, 3),  # up window 60 s: the lowest in it
        ([(40.0, 3), (50.0, 5)], 101.0, 8, 2, 60.0, 300.0, 5),  # t=40 left the up window, lowest is 5
        ([(90.0, 2)], 100.0, 6, 4, 0.0, 300.0, 6),  # up window 0: scale up at once
    ],
)
def test_stabilize(history: list[tuple[float, int]], now: float, desired: int, current: int,
                   up_w: float, down_w: float, expected: int) -> None:
    assert stabilize(history, now, desired, current, up_w, down_w) == expected


PODS4_PCT10_60 = ScalingRules(300.0, (ScalingPolicy("Pods", 4, 60.0), ScalingPolicy("Percent", 10, 60.0)))


@pytest.mark.parametrize(
    ("current", "up_events", "down_events", "rules", "now", "expected"),
    [
        (1, [], [], DEFAULT_SCALE_UP, 0.0, 5),  # defaults: max(+4 pods, +100 %)
        (10, [], [], DEFAULT_SCALE_UP, 0.0, 20),
        (3, [], [], DEFAULT_SCALE_UP, 0.0, 7),
        (10, [(10.0, 5)], [], DEFAULT_SCALE_UP, 20.0, 10),  # added 5 in the last 15 s: start was 5 → max(9, 10)
        (10, [(5.0, 5)], [], DEFAULT_SCALE_UP, 20.0, 20),  # event exactly period old: outside
        (1, [], [], ScalingRules(0.0, (ScalingPolicy("Percent", 10, 60.0),)), 0.0, 2),  # Percent rounds up
        (10, [], [], ScalingRules(0.0, DEFAULT_SCALE_UP.policies, "Min"), 0.0, 14),  # Min: smallest change
        (10, [], [], ScalingRules(0.0, DEFAULT_SCALE_UP.policies, "Disabled"), 0.0, 10),
    ],
)
def test_scale_up_limit(current: int, up_events: list[tuple[float, int]], down_events: list[tuple[float, int]],
                        rules: ScalingRules, now: float, expected: int) -> None:
    assert scale_up_limit(current, up_events, down_events, rules, now) == expected


@pytest.mark.parametrize(
    ("current", "down_events", "rules", "now", "expected"),
    [
        (10, [], DEFAULT_SCALE_DOWN, 0.0, 0),  # 100 % per 15 s
        # Kubernetes docs: Pods 4 and Percent 10 per 60 s, Max selects the biggest change; above 40
        # replicas the Percent policy wins.
        (80, [], PODS4_PCT10_60, 0.0, 72),
        (20, [], PODS4_PCT10_60, 0.0, 16),
        # Docs: "80 → 72; next period 10 % of 72 is 7.2, rounded up to 8" (the count rounds down to 64).
        (72, [], ScalingRules(0.0, (ScalingPolicy("Percent", 10, 60.0),)), 0.0, 64),
        # Inside the same period the earlier removal counts: start was 80, so 72 is already the limit.
        (72, [(30.0, 8)], ScalingRules(0.0, (ScalingPolicy("Percent", 10, 60.0),)), 60.0, 72),
        (20, [], ScalingRules(300.0, PODS4_PCT10_60.policies, "Min"), 0.0, 18),  # Min: smallest change
        (20, [], ScalingRules(300.0, PODS4_PCT10_60.policies, "Disabled"), 0.0, 20),
    ],
)
def test_scale_down_limit(current: int, down_events: list[tuple[float, int]], rules: ScalingRules,
                          now: float, expected: int) -> None:
    assert scale_down_limit(current, [], down_events, rules, now) == expected


@pytest.mark.parametrize(
    ("desired", "current", "lo", "hi", "expected"),
    [
        (50, 10, 1, 30, 20),  # rate limit (+100 %) binds before max
        (50, 20, 1, 30, 30),  # max binds
        (0, 10, 2, 30, 2),  # min binds going down
        (7, 7, 1, 30, 7),
    ],
)
def test_normalize(desired: int, current: int, lo: int, hi: int, expected: int) -> None:
    assert normalize(desired, current, lo, hi, [], [], Behavior(), 0.0) == expected


@pytest.mark.parametrize(
    ("behavior", "current", "expected"),
    [
        ("static", 7, 3),
        ("currentReplicas", 7, 7),
        ("currentReplicasIfHigher", 7, 7),
        ("currentReplicasIfHigher", 1, 3),
        ("currentReplicasIfLower", 7, 3),
        ("currentReplicasIfLower", 1, 1),
    ],
)
def test_fallback_replicas(behavior: str, current: int, expected: int) -> None:
    assert fallback_replicas(Fallback(3, 3, behavior), current) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "version", "milli"),
    [
        (float("nan"), (2, 20), 0), (float("inf"), (2, 20), 0), (-3.0, (2, 20), 0), (2.5, (2, 20), 2500),
        # scaler.go GenerateMetricInMili: v2.20 rounds to thousandths, earlier releases truncate.
        (0.0029996, (2, 20), 3), (0.0029996, (2, 19), 2),
    ],
)
def test_to_milli(raw: float, version: tuple[int, int], milli: int) -> None:
    assert to_milli(raw, version) == milli


@pytest.mark.parametrize(
    ("value", "current", "up", "down", "expected"),
    [
        # replica_calculator.go Tolerances.isWithin: 1 − down ≤ ratio ≤ 1 + up keeps the count.
        (11.0, 10, 0.1, 0.1, 10),  # 10 → 11 is inside the default dead band: never lands
        (11.0, 10, 0.0, 0.1, 11),  # up tolerance 0: lands
        (9.0, 10, 0.0, 0.1, 10),  # the down direction keeps its own band
        (9.0, 10, 0.1, 0.0, 9),
        (10.0, 10, 0.0, 0.0, 10),  # exactly on target: no change even with no dead band
        (10.001, 10, 0.0, 0.0, 11),  # ceil of anything above the target
    ],
)
def test_per_direction_tolerance(value: float, current: int, up: float, down: float, expected: int) -> None:
    assert desired_replicas(value, 1.0, current, up, tolerance_down=down) == expected


@pytest.mark.parametrize(
    ("history", "now", "desired", "window", "expected"),
    [
        ([(0.0, 9)], 300.0, 3, 300.0, 9),  # stabilizeRecommendation: a sample exactly at the cutoff counts
        ([(0.0, 9)], 300.5, 3, 300.0, 3),
        ([(100.0, 2)], 300.0, 5, 300.0, 5),  # no up window on the legacy path
    ],
)
def test_stabilize_legacy(history: list[tuple[float, int]], now: float, desired: int, window: float,
                          expected: int) -> None:
    assert stabilize_legacy(history, now, desired, window) == expected


@pytest.mark.parametrize(
    ("desired", "current", "lo", "hi", "expected"),
    [(50, 1, 1, 100, 4), (50, 10, 1, 100, 20), (50, 10, 1, 15, 15), (0, 10, 2, 100, 2)],
)
def test_normalize_legacy(desired: int, current: int, lo: int, hi: int, expected: int) -> None:
    # convertDesiredReplicasWithRules: at most max(2·current, 4) going up, then min/max.
    assert normalize_legacy(desired, current, lo, hi) == expected


def test_hpa_default_behaviour_over_time() -> None:
    """Up at once (doubling per sync), down only after the 300 s window of lower recommendations."""
    hpa = HPA(1, 50, Behavior())
    current = 2
    trace = []
    for k in range(30):
        now = 15.0 * k
        value = 20.0 if now < 60 else 3.0
        r = hpa.sync(now, current, [to_milli(value)], [1000])
        current = r.desired
        trace.append((now, current))
    assert trace[0] == (0.0, 6)  # 2 → max(2+4, 4) = 6
    assert trace[1] == (15.0, 12)
    assert trace[2] == (30.0, 20)
    # Load drops at t=60; the last 20 was recommended at t=45 and counts while strictly newer than
    # now − 300 s, so 20 holds until t=345 and then drops in one step (100 % per 15 s allowed).
    assert all(n == 20 for t, n in trace if 60 <= t < 345)
    assert dict(trace)[345.0] == 3


def test_hpa_disabled_at_zero_and_clamps() -> None:
    hpa = HPA(2, 5, Behavior())
    assert hpa.sync(0.0, 0, [10_000], [1000]).desired == 0  # KEDA, not the HPA, scales from zero
    assert hpa.sync(15.0, 1, [1000], [1000]).desired == 2  # below min → min
    assert hpa.sync(30.0, 9, [9000], [1000]).desired == 5  # above max → max


def test_hpa_unavailable_metric_does_not_scale_or_remember() -> None:
    hpa = HPA(1, 10, Behavior())
    r = hpa.sync(0.0, 4, [None], [1000])
    assert (r.proposal, r.desired) == (None, 4)
    # recordInitialRecommendation: only the count found at the first reconcile is remembered.
    assert hpa.recommendations == [(0.0, 4)]


def test_first_reconcile_remembers_the_current_count() -> None:
    """horizontal.go recordInitialRecommendation: an HPA created over 6 running replicas holds 6 for its
    scale-down window even when the first metric asks for 2."""
    hpa = HPA(1, 10, Behavior())
    assert hpa.sync(0.0, 6, [2000], [1000]).desired == 6
    assert hpa.sync(301.0, 6, [2000], [1000]).desired == 2


def test_default_rules_are_the_documented_ones() -> None:
    assert DEFAULT_SCALE_UP.stabilization_window_s == 0
    assert {(p.type, p.value, p.period_s) for p in DEFAULT_SCALE_UP.policies} == {("Percent", 100, 15), ("Pods", 4, 15)}
    assert DEFAULT_SCALE_DOWN.stabilization_window_s == 300
    assert [(p.type, p.value, p.period_s) for p in DEFAULT_SCALE_DOWN.policies] == [("Percent", 100, 15)]
