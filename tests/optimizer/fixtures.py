"""Small hand-made profiles whose optimal plans can be worked out on paper."""

from __future__ import annotations

import numpy as np

from optimizer.demand import Demand, from_buckets
from optimizer.profile import SLO, Grid, Profile

GRID = Grid(inputs=(128, 1024), outputs=(64,))
SHORT, LONG = (128, 64), (1024, 64)  # (input, output) tokens


def profile(variant: str, cost: float, short: float, long: float, accelerator: str | None = None,
            gpus: int = 1, model: str = "m") -> Profile:
    return Profile(
        model=model, variant=variant, accelerator=accelerator or variant, cost_per_hour=cost,
        slo=SLO("99", tpot=0.05), grid=GRID, capacity=np.array([[short, long]], dtype=float),
        gpus_per_replica=gpus,
    )


# cheap: 1 $/h, 10 req/s of short requests, cannot serve long ones in SLO.
# big:   2.5 $/h, 40 req/s short, 10 req/s long.
CHEAP = profile("cheap", 1.0, 10.0, 0.0)
BIG = profile("big", 2.5, 40.0, 10.0)


def demand(short: float = 0.0, long: float = 0.0, model: str = "m") -> Demand:
    return from_buckets(model, GRID, [(*SHORT, short), (*LONG, long)])
