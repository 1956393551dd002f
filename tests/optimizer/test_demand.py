from __future__ import annotations

import math

import numpy as np
import pytest

from optimizer.demand import DemandError, from_buckets, from_histograms, from_trace, histogram_shares, parse_demand
from optimizer.profile import Grid

GRID = Grid(inputs=(128, 512, 2048), outputs=(16, 128))


@pytest.mark.parametrize(
    "input_tokens, output_tokens, cell",
    [(100, 10, (0, 0)), (128, 16, (0, 0)), (129, 16, (0, 1)), (5000, 500, (1, 2)), (1, 17, (1, 0))],
)
def test_requests_round_up_to_their_bucket(input_tokens: int, output_tokens: int, cell: tuple[int, int]) -> None:
    d = from_buckets("m", GRID, [(input_tokens, output_tokens, 2.0)])
    assert d.rates[cell] == 2.0 and d.total == 2.0


def test_trace_window_gives_rates() -> None:
    d = from_trace("m", GRID, [100, 100, 600, 3000], [10, 10, 100, 100], window_seconds=2.0)
    assert d.rates[0, 0] == 1.0 and d.rates[1, 2] == 1.0 and d.total == 2.0


@pytest.mark.parametrize(
    "hist, shares",
    [
        ([], [0, 0, 0]),
        ([(128, 10), (512, 10), (2048, 20), (math.inf, 20)], [0.5, 0, 0.5]),
        ([(256, 4), (math.inf, 8)], [0.25, 0.25, 0.5]),  # bin (0,256] spreads over ticks 128 and 512 by overlap
        ([(10000, 5), (math.inf, 5)], [128 / 10000, 384 / 10000, 1 - 512 / 10000]),  # past last tick → last
    ],
)
def test_histogram_shares(hist: list[tuple[float, float]], shares: list[float]) -> None:
    np.testing.assert_allclose(histogram_shares(hist, GRID.inputs), shares, atol=1e-12)


def test_from_histograms_is_the_outer_product_times_rate() -> None:
    d = from_histograms("m", GRID, [(128, 3), (512, 4), (math.inf, 4)], [(16, 1), (128, 4), (math.inf, 4)], 8.0)
    assert d.total == pytest.approx(8.0)
    assert d.rates[0, 0] == pytest.approx(8 * 0.75 * 0.25)


def test_no_histograms_puts_the_rate_in_the_most_conservative_bucket() -> None:
    d = from_histograms("m", GRID, [], [], 3.0)
    assert d.rates[1, 2] == 3.0 and d.total == 3.0


def test_parse_demand_file_and_its_errors() -> None:
    d = parse_demand({"model": "m", "buckets": [{"input_tokens": 100, "output_tokens": 10, "rps": 1.5}]}, GRID)
    assert d.model == "m" and d.total == 1.5
    with pytest.raises(DemandError) as err:
        parse_demand({"buckets": [{"input_tokens": -1, "output_tokens": 10, "rps": "x"}]}, GRID, "d.json")
    text = str(err.value)
    assert "d.json" in text and "model" in text and "buckets[0].input_tokens" in text and "buckets[0].rps" in text


def test_demand_rejects_nan() -> None:
    with pytest.raises(DemandError):
        from_histograms("m", GRID, [], [], float("nan"))


def test_regridding_moves_requests_up_never_down() -> None:
    d = from_buckets("m", GRID, [(128, 16, 1.0), (512, 128, 2.0)])
    coarse = Grid(inputs=(1024, 4096), outputs=(256,))
    r = d.on(coarse)
    assert r.total == 3.0 and r.rates[0, 0] == 3.0
