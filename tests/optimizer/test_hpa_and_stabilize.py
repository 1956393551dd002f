"""The HPA's arithmetic (AverageValue external metric, tolerance 0.1) and its inverse."""

from __future__ import annotations

import pytest

from optimizer.hpa import desired_replicas, metric_value
from optimizer.stabilize import held_replicas, hysteresis, prune


@pytest.mark.parametrize(
    "value, target, current, want",
    [
        (500, 100, 5, 5),  # ratio 1
        (1100, 100, 10, 10),  # ratio 1.1 is inside the tolerance band: no change
        (1090, 100, 10, 10),
        (1101, 100, 10, 12),  # just outside: ceil(11.01)
        (900, 100, 10, 10),  # ratio 0.9: inside
        (899, 100, 10, 9),
        (300, 100, 0, 3),  # from zero there is no ratio
        (float("nan"), 100, 4, 0),  # NaN is 0 to the HPA
        (-5, 100, 4, 0),
    ],
)
def test_desired_replicas(value: float, target: float, current: int, want: int) -> None:
    assert desired_replicas(value, target, current) == want


@pytest.mark.parametrize(
    "desired, current, lands",
    [
        (5, 5, 5),
        (3, None, 3),
        (3, 0, 3),
        (20, 10, 20),
        (11, 10, 12),  # +10 % is inside the dead band: the nearest reachable count above
        (10, 11, 10),  # -1 at 11 is reachable: report 9.x·T
        (19, 20, 20),  # -1 at 20 is not: stay rather than shrink below the plan
        (1, 2, 1),
        (0, 3, 0),
    ],
)
def test_metric_value_lands_the_hpa_where_wanted(desired: int, current: int | None, lands: int) -> None:
    value, landed = metric_value(desired, current, 100.0)
    assert landed == lands
    assert desired_replicas(value, 100.0, current or 0) == lands


def test_metric_value_round_trips_for_every_small_pair() -> None:
    for current in range(0, 40):
        for desired in range(0, 60):
            value, landed = metric_value(desired, current, 1.0)
            assert value >= 0
            assert desired_replicas(value, 1.0, current) == landed
            if desired > current:
                assert landed >= desired  # never fewer than asked going up
            elif desired < current:
                assert desired <= landed <= current  # never below the plan going down


@pytest.mark.parametrize(
    "history, now, window, want",
    [
        ([], 100, 300, 0),
        ([(0, 5), (50, 2)], 100, 300, 5),
        ([(0, 5), (50, 2)], 400, 300, 2),  # the 5 aged out; the 2 is still in force
        ([(0, 5), (50, 2), (120, 1)], 400, 300, 2),
        ([(0, 5), (50, 2)], 400, 0, 0),
    ],
)
def test_held_replicas(history: list[tuple[float, int]], now: float, window: float, want: int) -> None:
    assert held_replicas(history, now, window) == want


@pytest.mark.parametrize(
    "planned, busy, previous, want",
    [
        ({"v": 3}, {"v": 2.0}, {"v": 2}, {"v": 3}),  # up: as planned
        ({"v": 1}, {"v": 0.5}, {"v": 2}, {"v": 1}),  # down, fits easily
        ({"v": 1}, {"v": 0.78}, {"v": 2}, {"v": 2}),  # down to 1 would run at 0.78 > 0.8·0.9: stay at 2
        ({"v": 2}, {"v": 2.0}, {"v": 5}, {"v": 3}),  # down, but only as far as fits with margin
        ({"v": 1}, {"v": 0.5}, {}, {"v": 1}),  # nothing published before
    ],
)
def test_hysteresis(planned: dict[str, int], busy: dict[str, float], previous: dict[str, int],
                    want: dict[str, int]) -> None:
    assert hysteresis(planned, busy, previous, utilization=0.8, margin=0.1) == want


@pytest.mark.parametrize(
    "history, now, keep, want",
    [
        ([], 100, 60, []),
        ([(0, 5), (30, 2), (70, 3)], 100, 60, [(30, 2), (70, 3)]),  # (30, 2) was in force at 40
        ([(0, 5), (10, 2)], 100, 60, [(10, 2)]),  # the last one stays: it is still in force
        ([(50, 1), (0, 5)], 100, 60, [(0, 5), (50, 1)]),  # order does not matter
    ],
)
def test_prune_keeps_what_held_replicas_needs(history: list[tuple[float, int]], now: float, keep: float,
                                              want: list[tuple[float, int]]) -> None:
    assert prune(history, now, keep) == want
    for window in (0, 20, 45, 60):
        assert held_replicas(prune(history, now, keep), now, window) == held_replicas(history, now, window)
