"""The cost-optimal mix: a mixed-integer program over replicas per variant and load per bucket.

For each model m, variant g, bucket b:
    minimise   Σ cost_g·y_g  +  Σ churn_g·|y_g − prev_g|  +  Σ penalty_b·s_b  +  ε·Σ cost_g·z_gb/μ_gb
    subject to Σ_g z_gb + s_b = λ_b                 every bucket served, or counted unserved in s_b
               Σ_b z_gb / μ_gb ≤ u·y_g              capacity at target utilisation u (headroom)
               0 ≤ z_gb ≤ λ_b·[μ_gb > 0]            a variant takes no load it cannot serve in SLO
               lo_g ≤ y_g ≤ hi_g, y_g ∈ ℕ
               Σ_{g in pool p} gpus_g·y_g ≤ cap_p    shared by every model planned together
The unserved penalty dwarfs any cost, so s is non-zero only when demand exceeds what the bounds and pools
allow (or no variant can serve a bucket); then the plan serves the most it can at the least cost and its
coverage says how much that was. Costs are normalised to the most expensive variant so the penalty's
scale does not depend on the currency.

Every input that changes between cycles is a cvxpy Parameter, so a problem of a given shape is compiled
once and re-solved (DPP). HiGHS solves it under a time limit; if it fails or runs out of time, the greedy
plan of `optimizer.fallback` is returned with a status that says so.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from optimizer.demand import Demand
from optimizer.profile import FloatArray, Profile, resample

# Penalty per req/s left unserved, in units of the most expensive replica-hour. Leaving 0.001 req/s
# unserved must cost more than any replica, hence 1e4.
UNSERVED_PENALTY = 1e4
# Load goes to the capacity that is cheapest per request when replicas are otherwise equal (e.g. replicas
# the HPA still holds): a tie-break worth far less than any replica, so it never changes what is bought.
PLACEMENT_WEIGHT = 1e-3
# Ceiling on replicas per variant when no maximum is given and demand is huge: keeps the integer
# program bounded (AIBrix's missing bound gave 5e8 replicas for an unservable bucket).
DEFAULT_MAX_REPLICAS = 1000


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    """One Deployment of a model on one accelerator type, as the planner sees it."""

    name: str
    profile: Profile
    min_replicas: int = 0
    max_replicas: int = DEFAULT_MAX_REPLICAS
    held_replicas: int = 0  # what the HPA keeps anyway inside its scale-down window
    previous_replicas: int | None = None
    pool: str | None = None  # accelerator pool; defaults to the profile's accelerator

    @property
    def pool_name(self) -> str:
        return self.pool or self.profile.accelerator

    @property
    def lower_bound(self) -> int:
        return min(max(self.min_replicas, self.held_replicas), self.max_replicas)


@dataclass(frozen=True)
class ModelProblem:
    demand: Demand
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class PlanRequest:
    models: tuple[ModelProblem, ...]
    pools: Mapping[str, float] = field(default_factory=dict)  # GPUs the plan may use per pool
    utilization: float = 0.8
    churn: float = 0.0  # cost of changing one replica, as a share of that replica's hourly cost
    time_limit_s: float = 2.0
    mip_gap: float = 1e-4
    integer: bool = True  # False: the LP relaxation, a lower bound on any plan's cost


@dataclass(frozen=True)
class ModelPlan:
    model: str
    replicas: dict[str, int]
    load: dict[str, FloatArray]  # req/s per bucket taken by each variant
    busy: dict[str, float]  # replica-equivalents of work per variant (Σ_b z/μ)
    cost_per_hour: float
    demand_rps: float
    served_rps: float
    unservable_rps: float  # demand in buckets no variant can serve under the SLO
    floors: dict[str, int] = field(default_factory=dict)  # min_replicas per variant

    @property
    def coverage(self) -> float:
        return 1.0 if self.demand_rps <= 0 else min(1.0, self.served_rps / self.demand_rps)


@dataclass(frozen=True)
class Plan:
    models: dict[str, ModelPlan]
    status: str  # "optimal", or "fallback: <why>"
    solver: str  # "highs" or "greedy"
    solve_ms: float

    @property
    def cost_per_hour(self) -> float:
        return sum(m.cost_per_hour for m in self.models.values())

    @property
    def coverage(self) -> float:
        demand = sum(m.demand_rps for m in self.models.values())
        served = sum(m.served_rps for m in self.models.values())
        return 1.0 if demand <= 0 else min(1.0, served / demand)

    def replicas(self) -> dict[str, int]:
        return {v: n for m in self.models.values() for v, n in m.replicas.items()}


# ------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelArrays:
    """Numeric inputs of one model, on its demand's grid, flattened bucket-wise (shared with the greedy
    fallback)."""

    names: tuple[str, ...]
    lam: FloatArray  # (B,)
    mu: FloatArray  # (V, B)
    inv_mu: FloatArray  # (V, B): 1/μ where servable, 0 where not (replica-equivalents per req/s)
    cost: FloatArray  # (V,) $/h
    lo: FloatArray
    hi: FloatArray
    prev: FloatArray
    gpus: FloatArray

    def busy(self, load: FloatArray) -> FloatArray:
        """Replica-equivalents of work per variant for a load split (V, B): Σ_b z/μ."""
        return np.asarray((load * self.inv_mu).sum(axis=1), dtype=np.float64)


def model_arrays(problem: ModelProblem, utilization: float) -> ModelArrays:
    grid = problem.demand.grid
    lam = problem.demand.rates.ravel()
    mu = np.vstack([resample(v.profile, grid).capacity.ravel() for v in problem.variants])
    inv_mu = np.where(mu > 0, 1.0 / np.where(mu > 0, mu, 1.0), 0.0)
    lo = np.array([float(v.lower_bound) for v in problem.variants])
    need = np.ceil(inv_mu @ lam / utilization)  # replicas that carry every servable bucket
    hi = np.maximum(lo, np.minimum([float(v.max_replicas) for v in problem.variants], need))
    return ModelArrays(
        names=tuple(v.name for v in problem.variants),
        lam=lam,
        mu=mu,
        inv_mu=inv_mu,
        cost=np.array([v.profile.cost_per_hour for v in problem.variants]),
        lo=lo,
        hi=hi,
        prev=np.array([float(v.previous_replicas if v.previous_replicas is not None else v.lower_bound)
                       for v in problem.variants]),
        gpus=np.array([float(v.profile.gpus_per_replica) for v in problem.variants]),
    )


def validate(request: PlanRequest) -> None:
    problems: list[str] = []
    if not 0 < request.utilization <= 1:
        problems.append(f"utilization: must be in (0, 1], got {request.utilization}")
    if request.churn < 0:
        problems.append(f"churn: must be >= 0, got {request.churn}")
    seen: set[str] = set()
    for mp in request.models:
        if not mp.variants:
            problems.append(f"model {mp.demand.model}: has no variants")
        for v in mp.variants:
            if v.name in seen:
                problems.append(f"variant {v.name}: appears twice")
            seen.add(v.name)
            if v.min_replicas < 0 or v.max_replicas < 0 or v.held_replicas < 0:
                problems.append(f"variant {v.name}: replica bounds must be >= 0")
            if v.min_replicas > v.max_replicas:
                problems.append(f"variant {v.name}: min_replicas {v.min_replicas} > max_replicas {v.max_replicas}")
    for pool, cap in request.pools.items():
        if not math.isfinite(cap) or cap < 0:
            problems.append(f"pool {pool}: capacity must be finite and >= 0, got {cap}")
    if problems:
        raise PlanError("; ".join(problems))


# ---------------------------------------------------------------------------------------- the program


class _Compiled:
    """One parameterised problem for a given shape: compiled on first solve, re-solved after."""

    def __init__(self, shapes: Sequence[tuple[int, int]], n_pools: int, integer: bool) -> None:
        self.y: list[cp.Variable] = []
        self.z: list[cp.Variable] = []
        self.s: list[cp.Variable] = []
        self.params: list[dict[str, cp.Parameter]] = []
        self.u = cp.Parameter(nonneg=True, name="utilization")
        constraints: list[cp.Constraint] = []
        objective: list[cp.Expression] = []
        for n_var, n_buckets in shapes:
            p = {
                "lam": cp.Parameter(n_buckets, nonneg=True),
                "inv_mu": cp.Parameter((n_var, n_buckets), nonneg=True),
                "zcap": cp.Parameter((n_var, n_buckets), nonneg=True),
                "cost": cp.Parameter(n_var, nonneg=True),
                "churn": cp.Parameter(n_var, nonneg=True),
                "prev": cp.Parameter(n_var, nonneg=True),
                "lo": cp.Parameter(n_var, nonneg=True),
                "hi": cp.Parameter(n_var, nonneg=True),
                "penalty": cp.Parameter(n_buckets, nonneg=True),
                "placement": cp.Parameter((n_var, n_buckets), nonneg=True),
            }
            y = cp.Variable(n_var, integer=integer)
            z = cp.Variable((n_var, n_buckets), nonneg=True)
            s = cp.Variable(n_buckets, nonneg=True)
            d = cp.Variable(n_var, nonneg=True)  # |y − prev|
            constraints += [
                cp.sum(z, axis=0) + s == p["lam"],
                z <= p["zcap"],
                cp.sum(cp.multiply(p["inv_mu"], z), axis=1) <= self.u * y,
                y >= p["lo"],
                y <= p["hi"],
                d >= y - p["prev"],
                d >= p["prev"] - y,
            ]
            objective += [
                p["cost"] @ y,
                p["churn"] @ d,
                p["penalty"] @ s,
                cp.sum(cp.multiply(p["placement"], z)),
            ]
            self.y.append(y)
            self.z.append(z)
            self.s.append(s)
            self.params.append(p)
        self.pool_gpus: cp.Parameter | None = None
        self.pool_cap: cp.Parameter | None = None
        if n_pools:
            total_var = sum(v for v, _ in shapes)
            self.pool_gpus = cp.Parameter((n_pools, total_var), nonneg=True)
            self.pool_cap = cp.Parameter(n_pools, nonneg=True)
            constraints.append(self.pool_gpus @ cp.hstack(self.y) <= self.pool_cap)
        self.problem = cp.Problem(cp.Minimize(cp.sum(cp.hstack(objective))), constraints)


class Planner:
    """Keeps one compiled problem per shape, so each model's cycle only re-solves."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[tuple[tuple[int, int], ...], int, bool], _Compiled] = {}

    def plan(self, request: PlanRequest) -> Plan:
        validate(request)
        started = time.perf_counter()
        arrays = [model_arrays(mp, request.utilization) for mp in request.models]
        pools = _pool_matrix(request, arrays)
        try:
            outcome = self._solve(request, arrays, pools)
        except cp.error.SolverError as exc:
            outcome = f"solver error: {exc}"
        if isinstance(outcome, str):
            from optimizer.fallback import greedy  # fallback builds on this module's types

            plan = greedy(request)
            return Plan(plan.models, f"fallback: {outcome}", "greedy", (time.perf_counter() - started) * 1e3)
        values = outcome
        models = {
            mp.demand.model: _model_plan(mp, arr, y, z)
            for mp, arr, (y, z) in zip(request.models, arrays, values, strict=True)
        }
        return Plan(models, "optimal", "highs", (time.perf_counter() - started) * 1e3)

    def _solve(
        self,
        request: PlanRequest,
        arrays: Sequence[ModelArrays],
        pools: tuple[FloatArray, FloatArray] | None,
    ) -> list[tuple[FloatArray, FloatArray]] | str:
        """The solution per model, or why there is none."""
        shapes = tuple((len(a.names), a.lam.size) for a in arrays)
        n_pools = 0 if pools is None else pools[0].shape[0]
        key = (shapes, n_pools, request.integer)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(shapes, n_pools, request.integer)
        scale = max(float(max(a.cost.max() for a in arrays)), 1e-9)
        compiled.u.value = request.utilization
        for a, p in zip(arrays, compiled.params, strict=True):
            servable = a.mu > 0
            p["lam"].value = a.lam
            p["inv_mu"].value = a.inv_mu
            p["zcap"].value = np.where(servable, a.lam[None, :], 0.0)
            p["cost"].value = a.cost / scale
            p["churn"].value = request.churn * a.cost / scale
            p["prev"].value = a.prev
            p["lo"].value = a.lo
            p["hi"].value = a.hi
            p["penalty"].value = np.full(a.lam.size, UNSERVED_PENALTY)
            p["placement"].value = PLACEMENT_WEIGHT * (a.cost / scale)[:, None] * a.inv_mu
        if pools is not None:
            assert compiled.pool_gpus is not None and compiled.pool_cap is not None
            compiled.pool_gpus.value, compiled.pool_cap.value = pools
        with warnings.catch_warnings():  # a time-out warns; the status below says it and the fallback runs
            warnings.simplefilter("ignore", UserWarning)
            compiled.problem.solve(
                solver=cp.HIGHS,
                time_limit=request.time_limit_s,
                mip_rel_gap=request.mip_gap,
            )
        if compiled.problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return f"solver status {compiled.problem.status}"
        out = []
        for y, z in zip(compiled.y, compiled.z, strict=True):
            out.append((np.asarray(y.value, dtype=np.float64), np.asarray(z.value, dtype=np.float64)))
        return out


def _pool_matrix(request: PlanRequest, arrays: Sequence[ModelArrays]) -> tuple[FloatArray, FloatArray] | None:
    """Rows: pools with a capacity; columns: every variant of every model in order; entries: GPUs per
    replica. A pool never gets less than its variants' lower bounds need: replicas the HPA holds or that
    min_replicas demands exist whatever the plan says, so the bound, not the pool, wins."""
    if not request.pools:
        return None
    variants = [v for mp in request.models for v in mp.variants]
    names = sorted(request.pools)
    gpus = np.zeros((len(names), len(variants)))
    for col, v in enumerate(variants):
        if v.pool_name in request.pools:
            gpus[names.index(v.pool_name), col] = v.profile.gpus_per_replica
    lo = np.concatenate([a.lo for a in arrays])
    cap = np.array([max(request.pools[n], float(gpus[r] @ lo)) for r, n in enumerate(names)])
    return gpus, cap


def _model_plan(mp: ModelProblem, arr: ModelArrays, y: FloatArray, z: FloatArray) -> ModelPlan:
    replicas = np.clip(np.rint(y), arr.lo, arr.hi).astype(int)
    return make_model_plan(mp, arr, replicas, np.where(arr.mu > 0, np.clip(z, 0.0, None), 0.0))


def make_model_plan(mp: ModelProblem, arr: ModelArrays, replicas: Sequence[int] | np.ndarray,
                    load: FloatArray) -> ModelPlan:
    """The plan of one model from its replica counts and load split (V, B)."""
    busy = arr.busy(load)
    names = arr.names
    return ModelPlan(
        model=mp.demand.model,
        replicas={n: int(r) for n, r in zip(names, replicas, strict=True)},
        load={n: load[k].reshape(mp.demand.grid.shape) for k, n in enumerate(names)},
        busy={n: float(busy[k]) for k, n in enumerate(names)},
        cost_per_hour=float(sum(int(r) * v.profile.cost_per_hour for r, v in zip(replicas, mp.variants, strict=True))),
        demand_rps=float(arr.lam.sum()),
        served_rps=float(min(load.sum(), arr.lam.sum())),
        unservable_rps=float(arr.lam[~(arr.mu > 0).any(axis=0)].sum()),
        floors={v.name: v.min_replicas for v in mp.variants},
    )
