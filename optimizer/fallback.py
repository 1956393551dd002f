"""The numeric inputs every planner path shares, and the greedy plan used when the solver fails or runs
out of time.

The greedy plan never buys less than the bounds and never more than bounds and pools allow, and it is
deterministic:
1. Start every variant at its lower bound (min_replicas, or what the HPA holds anyway).
2. Take buckets from the largest demand to the smallest. For each, first pour its load into spare
   capacity already bought, cheapest per req/s first; then buy replicas of the variant that is cheapest
   per req/s for this bucket (cost / (u·μ)) while its max and its pool allow, then the next cheapest.
3. Whatever is left is unserved, and the plan's coverage says so.
Its cost is at least the program's, usually within a replica or two per variant.

This module sits below `optimizer.program` (which imports it, never the other way round): it knows
arrays, not requests or plans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.profile import FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ModelArrays:
    """Numeric inputs of one model, on its planning grid, flattened bucket-wise."""

    names: tuple[str, ...]
    lam: FloatArray  # (B,)
    mu: FloatArray  # (V, B)
    inv_mu: FloatArray  # (V, B): 1/μ where servable, 0 where not (replica-equivalents per req/s)
    cost: FloatArray  # (V,) $/h
    lo: FloatArray
    hi: FloatArray
    prev: FloatArray
    gpus: FloatArray
    pools: tuple[str, ...]  # accelerator pool of each variant

    def busy(self, load: FloatArray) -> FloatArray:
        """Replica-equivalents of work per variant for a load split (V, B): Σ_b z/μ."""
        return np.asarray((load * self.inv_mu).sum(axis=1), dtype=np.float64)


def greedy(arrays: Sequence[ModelArrays], pools: Mapping[str, float], utilization: float
           ) -> list[tuple[IntArray, FloatArray]]:
    """Replica counts (V,) and load split (V, B) per model, in the order given."""
    u = utilization
    pool_left = dict(pools)
    for arr in arrays:
        for g, pool in enumerate(arr.pools):
            if pool in pool_left:
                pool_left[pool] -= float(arr.lo[g] * arr.gpus[g])

    out: list[tuple[IntArray, FloatArray]] = []
    for arr in arrays:
        n_var, n_buckets = arr.mu.shape
        replicas = [int(r) for r in arr.lo]
        spare = [r * u for r in replicas]  # replica-equivalents of work still free on each variant
        load = [[0.0] * n_buckets for _ in range(n_var)]
        # Python floats and lists, not numpy scalars: at 1,000 models this loop is the fallback's whole cost.
        cost, hi, gpus = arr.cost.tolist(), [int(h) for h in arr.hi], arr.gpus.tolist()
        order = np.argsort(-arr.lam, kind="stable")
        order = order[arr.lam[order] > 0]
        mu_t = arr.mu[:, order].T.tolist()
        for b, left, mu_b in zip(order.tolist(), arr.lam[order].tolist(), mu_t, strict=True):
            by_price = sorted((g for g in range(n_var) if mu_b[g] > 0), key=lambda g: (cost[g] / mu_b[g], g))
            for g in by_price:  # capacity already paid for
                take = min(left, spare[g] * mu_b[g])
                load[g][b] += take
                spare[g] -= take / mu_b[g]
                left -= take
            for g in by_price:  # buy more
                if left <= 1e-12:
                    break
                room = hi[g] - replicas[g]
                pool = arr.pools[g]
                if pool in pool_left:
                    room = min(room, int(pool_left[pool] // gpus[g]))
                if room <= 0:
                    continue
                extra = min(room, math.ceil(left / (u * mu_b[g]) - 1e-9))
                replicas[g] += extra
                if pool in pool_left:
                    pool_left[pool] -= extra * gpus[g]
                spare[g] += extra * u
                take = min(left, spare[g] * mu_b[g])
                load[g][b] += take
                spare[g] -= take / mu_b[g]
                left -= take
        out.append((np.array(replicas, dtype=np.int64), np.array(load, dtype=np.float64)))
    return out
