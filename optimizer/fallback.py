"""The greedy plan, used when the solver fails or runs out of time.

It never buys less than the bounds and never more than bounds and pools allow, and it is deterministic:
1. Start every variant at its lower bound (min_replicas, or what the HPA holds anyway).
2. Take buckets from the largest demand to the smallest. For each, first pour its load into spare
   capacity already bought, cheapest per req/s first; then buy replicas of the variant that is cheapest
   per req/s for this bucket (cost / (u·μ)) while its max and its pool allow, then the next cheapest.
3. Whatever is left is unserved, and the plan's coverage says so.
Its cost is at least the program's, usually within a replica or two per variant.
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.program import ModelPlan, Plan, PlanRequest, make_model_plan, model_arrays


def greedy(request: PlanRequest) -> Plan:
    arrays = [model_arrays(mp, request.utilization) for mp in request.models]
    u = request.utilization
    pool_left = dict(request.pools)
    variants = [v for mp in request.models for v in mp.variants]
    for v in variants:
        if v.pool_name in pool_left:
            pool_left[v.pool_name] -= v.lower_bound * v.profile.gpus_per_replica

    models: dict[str, ModelPlan] = {}
    for mp, arr in zip(request.models, arrays, strict=True):
        n_var, n_buckets = arr.mu.shape
        replicas = arr.lo.astype(int).copy()
        spare = replicas * u  # replica-equivalents of work still free on each variant
        load = np.zeros((n_var, n_buckets))
        for b in np.argsort(-arr.lam, kind="stable"):
            left = float(arr.lam[b])
            if left <= 0:
                continue
            servable = [g for g in range(n_var) if arr.mu[g, b] > 0]
            by_price = sorted(servable, key=lambda g: (arr.cost[g] / arr.mu[g, b], g))
            for g in by_price:  # capacity already paid for
                take = min(left, spare[g] * arr.mu[g, b])
                load[g, b] += take
                spare[g] -= take / arr.mu[g, b]
                left -= take
            for g in by_price:  # buy more
                if left <= 1e-12:
                    break
                v = mp.variants[g]
                room = int(arr.hi[g]) - int(replicas[g])
                pool = v.pool_name
                if pool in pool_left:
                    room = min(room, int(pool_left[pool] // v.profile.gpus_per_replica))
                if room <= 0:
                    continue
                extra = min(room, math.ceil(left / (u * arr.mu[g, b]) - 1e-9))
                replicas[g] += extra
                if pool in pool_left:
                    pool_left[pool] -= extra * v.profile.gpus_per_replica
                spare[g] += extra * u
                take = min(left, spare[g] * arr.mu[g, b])
                load[g, b] += take
                spare[g] -= take / arr.mu[g, b]
                left -= take
        models[mp.demand.model] = make_model_plan(mp, arr, replicas, load)
    return Plan(models, "greedy", "greedy", 0.0)
