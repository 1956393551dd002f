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
coverage says how much that was. Costs are normalised to the most expensive variant of each independent
problem so the penalty's scale does not depend on the currency.

How it is solved, and why it stays exact:
- Models that share no capped accelerator pool do not interact: the program is block-diagonal, and each
  connected component (models linked through a pool with a capacity) is its own program. 1,000 models on
  uncapped pools are 1,000 small programs, not one large one whose relative gap would be shared.
- Only active buckets enter a program: a bucket without demand has z = s = 0 in every solution, and a
  bucket no variant can serve has s = λ whatever the replicas; both are dropped and re-added when the plan
  is read back. Sparse demand (a handful of active buckets) makes a program of a few dozen columns.
- A component without servable demand has hi = lo for every variant (nothing to carry), so its plan is
  the lower bounds with no load, read off without a solver.
- A model without a capped pool and a small replica box is solved by cutting planes over the box
  (`_Program.lattice_search`): exact, and fewer LPs than branching.
- Everything else goes to HiGHS, built directly as arrays (no modelling layer to compile; ~0.5 ms per model
  with 4 variants and ~25 bucket classes), under the request's time limit; HiGHS's own output is switched
  off before it can print.
- The Planner remembers each model's last lattice search (`_Memory`): the next cycle's program has the same
  matrix when only demand and counts moved, so the old duals still bound every replica vector and last
  cycle's plan, moved onto the new demand, is often provably optimal within the gap without any LP.
If HiGHS fails or runs out of time, the greedy plan of `optimizer.fallback` is returned with a status that
says so.

Grids beyond `profile.MAX_TICKS` ticks per axis (a union of variants' grids can be) are planned on a
conservative coarsening (`profile.coarsen`): requests move up to the next kept tick, capacity is read at
the kept ticks, so the plan never claims more than was measured and memory stays bounded.
"""

from __future__ import annotations

import copy
import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from highspy import _core as highs

from optimizer.defaults import KEDA_DEFAULT_MAX_REPLICAS
from optimizer.demand import Demand
from optimizer.fallback import IntArray, ModelArrays, greedy
from optimizer.profile import MAX_TICKS, FloatArray, Grid, Profile, coarsen, resample

__all__ = [
    "DEFAULT_MAX_REPLICAS",
    "ModelArrays",
    "ModelPlan",
    "ModelProblem",
    "Plan",
    "PlanError",
    "PlanRequest",
    "Planner",
    "Variant",
    "greedy_plan",
    "make_model_plan",
    "model_arrays",
]

# Penalty per req/s left unserved, in units of the most expensive replica-hour. Leaving 0.001 req/s
# unserved must cost more than any replica, hence 1e4.
UNSERVED_PENALTY = 1e4
# Load goes to the capacity that is cheapest per request when replicas are otherwise equal (e.g. replicas
# the HPA still holds): a tie-break worth far less than any replica, so it never changes what is bought.
PLACEMENT_WEIGHT = 1e-3
# Ceiling on replicas per variant when no maximum is given and demand is huge: keeps the integer
# program bounded (AIBrix's missing bound gave 5e8 replicas for an unservable bucket).
DEFAULT_MAX_REPLICAS = KEDA_DEFAULT_MAX_REPLICAS  # a variant with no limit given: KEDA's maxReplicaCount default


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
    status: str  # "optimal", or "fallback: <why>" / "fallback for n of m models: <why>"
    solver: str  # "highs" (also when every component was read off its bounds), "greedy", or "highs+greedy"
    solve_ms: float
    greedy: frozenset[str] = frozenset()  # models planned by the fallback (the rest are exact)

    def exact(self, model: str) -> bool:
        return model not in self.greedy

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

    def overlay(self, replan: Plan) -> Plan:
        """This plan with the models of `replan` (a later plan of some of them) in place of its own."""
        greedy = (self.greedy - replan.models.keys()) | replan.greedy
        why = next((p.status.split(": ", 1)[-1] for p in (replan, self) if p.greedy & greedy), None)
        return _plan_of({**self.models, **replan.models}, greedy, why, self.solve_ms + replan.solve_ms)


def _plan_of(models: dict[str, ModelPlan], greedy: frozenset[str], why: str | None, ms: float) -> Plan:
    """A plan whose `greedy` models came from the fallback (for `why`) and the rest from HiGHS."""
    if not greedy:
        return Plan(models, "optimal", "highs", ms)
    if len(greedy) == len(models):
        return Plan(models, f"fallback: {why}", "greedy", ms, greedy)
    return Plan(models, f"fallback for {len(greedy)} of {len(models)} models: {why}", "highs+greedy", ms, greedy)


# ------------------------------------------------------------------------------------------- inputs


def planning_grid(grid: Grid) -> Grid:
    """The grid a demand is planned on: itself, or its conservative coarsening when it is too fine."""
    return grid if max(len(grid.inputs), len(grid.outputs)) <= MAX_TICKS else coarsen(grid, MAX_TICKS)


def model_arrays(problem: ModelProblem, utilization: float) -> ModelArrays:
    grid = planning_grid(problem.demand.grid)
    lam = problem.demand.on(grid).rates.ravel()
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
        pools=tuple(v.pool_name for v in problem.variants),
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


def components(model_pools: Sequence[Sequence[str]], pools: Mapping[str, float]) -> list[list[int]]:
    """Models (by index; each given by its variants' pools) grouped into independent problems: two models are
    in one group when a chain of capped pools links them. An uncapped pool couples nothing."""
    parent = list(range(len(model_pools)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_user: dict[str, int] = {}
    for k, used in enumerate(model_pools):
        for pool in used:
            if pool not in pools:
                continue
            if pool in first_user:
                a, b = root(first_user[pool]), root(k)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_user[pool] = k
    groups: dict[int, list[int]] = {}
    for k in range(len(model_pools)):
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


# ---------------------------------------------------------------------------------------- the program


# LP relaxations the branch and bound may spend before HiGHS's MIP (with its cuts) takes the component.
NODE_LIMIT = 200
# A model without a capped pool whose replica box holds at most this many vectors is planned by
# `lattice_search` (its bounds are evaluated for every vector at once: a few MB at most).
LATTICE_POINTS = 20_000
# Duals kept per model for the next search (each one bound over the box), and what counts as a zero dual.
MEMORY_DUALS = 8
MEMORIES = 2  # searches kept per model
DUAL_ZERO = 1e-12
# Independent single-model programs from this many on are searched together in one LP (see
# branch_and_bound_blocks); fewer are cheaper one by one.
BATCH_MIN = 8
# ... and at most this many per LP: a round's re-solve grows faster than linearly with the models in it.
BATCH_MAX = 100


class _HandOver(Exception):
    pass


@dataclass(frozen=True)
class _Memory:
    """What one model's lattice search leaves for its next one: the program (its matrix and costs), the duals
    of the LPs it evaluated (valid bounds for any later program with the same matrix) and the last basis."""

    program: _Program
    row_duals: FloatArray  # one row per LP evaluated, newest last
    col_duals: FloatArray
    basis: highs.HighsBasis
    cols: FloatArray  # the plan it returned


class _Program:
    """One component's MILP as HiGHS column-wise arrays, with where each model's y and z live."""

    def __init__(self, arrays: Sequence[ModelArrays], pools: Mapping[str, float], request: PlanRequest,
                 per_model_scale: bool = False) -> None:
        # per_model_scale: each model is its own component (a batch of independent programs in one LP), so
        # each is normalised to its own dearest variant, exactly as it would be alone.
        global_scale = max(max(float(a.cost.max()) for a in arrays), 1e-9)
        u, churn = request.utilization, request.churn
        pool_names = sorted({p for a in arrays for p in a.pools if p in pools})
        pool_row0 = 0  # pool rows come first, so every model's rows can be appended after them
        n_rows = len(pool_names)
        rows: list[npt.NDArray[np.int32]] = []
        cols: list[npt.NDArray[np.int32]] = []
        vals: list[FloatArray] = []
        cost: list[FloatArray] = []
        lower: list[FloatArray] = []
        upper: list[FloatArray] = []
        integral: list[npt.NDArray[np.int32]] = []
        row_lo: list[FloatArray] = [np.full(n_rows, -highs.kHighsInf)]
        row_hi: list[FloatArray] = [np.zeros(n_rows)]
        lo_all = np.concatenate([a.lo for a in arrays])
        gpus_all = np.concatenate([a.gpus for a in arrays])
        pools_all = [p for a in arrays for p in a.pools]
        for r, name in enumerate(pool_names):
            used = sum(g * lo for g, lo, p in zip(gpus_all, lo_all, pools_all, strict=True) if p == name)
            # The bounds win over a too-small pool: replicas the HPA holds exist whatever the plan says.
            row_hi[0][r] = max(pools[name], float(used))
        n_cols = 0
        self.slices: list[tuple[int, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]], int,
                                npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray, int]] = []
        self.shapes: list[tuple[int, int]] = []

        def add_cols(c: FloatArray, lo: FloatArray, hi: FloatArray, kind: int) -> int:
            nonlocal n_cols
            first = n_cols
            cost.append(c)
            lower.append(lo)
            upper.append(hi)
            integral.append(np.full(c.size, kind, dtype=np.int32))
            n_cols += c.size
            return first

        def add_entries(r: npt.ArrayLike, c: npt.ArrayLike, v: npt.ArrayLike) -> None:
            rows.append(np.asarray(r, dtype=np.int32))
            cols.append(np.asarray(c, dtype=np.int32))
            vals.append(np.asarray(v, dtype=np.float64))

        y_kind = 1 if request.integer else 0
        y_cols: list[npt.NDArray[np.int32]] = []
        d_cols: list[npt.NDArray[np.int32]] = []  # |y − prev| columns, aligned with y_cols (churn > 0 only)
        prevs: list[FloatArray] = []
        self.blocks: list[tuple[int, int, int, int]] = []  # per model: columns [c0, c1), y_cols [y_a, y_b)
        self.bucket_rows: list[int] = []  # per model: its first bucket-class row
        for a in arrays:
            scale = max(float(a.cost.max()), 1e-9) if per_model_scale else global_scale
            first_col, first_y = n_cols, sum(c.size for c in y_cols)
            n_var = len(a.names)
            active = _active(a)
            # Buckets every variant serves at the same rate are one bucket to the program (same capacity
            # use, placement and penalty per req/s): merge them, split the load back in proportion to demand.
            columns = np.ascontiguousarray(a.mu[:, active].T)
            # Rows compared as raw bytes: np.unique(axis=0) costs ~0.3 ms a call, this a few µs.
            _, first, member = np.unique(columns.view(np.dtype((np.void, columns.dtype.itemsize * n_var))).ravel(),
                                         return_index=True, return_inverse=True)
            classes = columns[first]
            member = member.ravel()
            lam = np.asarray(np.bincount(member, weights=a.lam[active], minlength=classes.shape[0]), dtype=np.float64)
            sub_mu = classes.T
            pg, pb = np.nonzero(sub_mu > 0)  # servable (variant, bucket class) pairs
            # rows of this model: bucket classes, then capacity per variant, then 2 churn rows per variant
            r_bucket = n_rows
            r_cap = r_bucket + lam.size
            r_churn = r_cap + n_var
            n_rows = r_churn + (2 * n_var if churn > 0 else 0)
            row_lo += [lam, np.full(n_var, -highs.kHighsInf)]
            row_hi += [lam, np.zeros(n_var)]
            y0 = add_cols(a.cost / scale, a.lo, a.hi, y_kind)
            y_cols.append(np.arange(y0, y0 + n_var, dtype=np.int32))
            g_idx = np.arange(n_var)
            add_entries(r_cap + g_idx, y0 + g_idx, np.full(n_var, -u))
            for g, pool in enumerate(a.pools):
                if pool in pools:
                    add_entries([pool_row0 + pool_names.index(pool)], [y0 + g], [a.gpus[g]])
            if churn > 0:
                d0 = add_cols(churn * a.cost / scale, np.zeros(n_var), np.full(n_var, highs.kHighsInf), 0)
                d_cols.append(np.arange(d0, d0 + n_var, dtype=np.int32))
                prevs.append(a.prev)
                # d − y ≥ −prev and d + y ≥ prev: d ≥ |y − prev|
                row_lo += [-a.prev, a.prev]
                row_hi += [np.full(2 * n_var, highs.kHighsInf)]
                add_entries(r_churn + g_idx, y0 + g_idx, np.full(n_var, -1.0))
                add_entries(r_churn + n_var + g_idx, y0 + g_idx, np.ones(n_var))
                add_entries(r_churn + g_idx, d0 + g_idx, np.ones(n_var))
                add_entries(r_churn + n_var + g_idx, d0 + g_idx, np.ones(n_var))
            inv = 1.0 / sub_mu[pg, pb]
            z0 = add_cols(PLACEMENT_WEIGHT * (a.cost[pg] / scale) * inv, np.zeros(pg.size), lam[pb], 0)
            z_idx = z0 + np.arange(pg.size)
            add_entries(r_bucket + pb, z_idx, np.ones(pg.size))
            add_entries(r_cap + pg, z_idx, inv)
            s0 = add_cols(np.full(lam.size, UNSERVED_PENALTY), np.zeros(lam.size), lam, 0)
            add_entries(r_bucket + np.arange(lam.size), s0 + np.arange(lam.size), np.ones(lam.size))
            share = a.lam[active] / lam[member]  # each active bucket's part of its class
            self.slices.append((y0, (pg.astype(np.intp), pb.astype(np.intp)), z0, active, member, share,
                                lam.size))
            self.blocks.append((first_col, n_cols, first_y, first_y + n_var))
            self.bucket_rows.append(r_bucket)
            self.shapes.append(a.mu.shape)
        r_all, c_all, v_all = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        order = np.argsort(c_all, kind="stable")
        self.n_cols, self.n_rows = n_cols, n_rows
        self.col_cost = np.concatenate(cost)
        self.col_lower = np.concatenate(lower)
        self.col_upper = np.concatenate(upper)
        self.integrality = np.concatenate(integral)
        self.row_lower = np.concatenate(row_lo)
        self.row_upper = np.concatenate([np.atleast_1d(x) for x in row_hi])
        # The churn rows' upper bounds were appended as one block per model; lengths must still agree.
        assert self.row_lower.size == n_rows == self.row_upper.size
        self.a_index = r_all[order]
        self.a_value = v_all[order]
        self.a_start = np.searchsorted(c_all[order], np.arange(n_cols + 1)).astype(np.int32)
        self.entry_col = c_all[order]  # the column of each matrix entry
        self.integer = request.integer
        self.y_cols = np.concatenate(y_cols)
        self.d_cols = np.concatenate(d_cols) if d_cols else None
        self.prev = np.concatenate(prevs) if prevs else None
        self.has_pools = bool(pool_names)
        self.nodes = 0  # LPs solved by the last branch and bound
        # What fixes the matrix and costs of a one-model program (see `rebound`), and its box's vectors.
        self._matrix_key = ((arrays[0].mu, arrays[0].cost, self.slices[0][3], u, churn)
                            if len(arrays) == 1 and not pool_names else None)
        self._points: tuple[FloatArray, FloatArray, FloatArray] | None = None

    def rebound(self, a: ModelArrays, request: PlanRequest) -> _Program | None:
        """This one-model program on the same model's new demand, replica bounds and previous counts, when its
        matrix and costs stay (same servable buckets, capacities, prices, utilisation and churn): only row
        and column bounds move, so nothing is rebuilt (a rebuild was a third of a 1,000-model plan). None
        when anything else changed."""
        if self._matrix_key is None:
            return None
        mu, cost, active, u, churn = self._matrix_key
        if (u != request.utilization or churn != request.churn or not np.array_equal(cost, a.cost)
                or not np.array_equal(mu, a.mu)):
            return None
        if not np.array_equal(active, _active(a)):
            return None
        y0, (pg, pb), z0, _, member, _, n_classes = self.slices[0]
        n_var = len(a.lo)
        lam = np.asarray(np.bincount(member, weights=a.lam[active], minlength=n_classes), dtype=np.float64)
        out = copy.copy(self)
        out.row_lower, out.row_upper = self.row_lower.copy(), self.row_upper.copy()
        out.col_lower, out.col_upper = self.col_lower.copy(), self.col_upper.copy()
        rb = self.bucket_rows[0]
        out.row_lower[rb:rb + n_classes] = lam
        out.row_upper[rb:rb + n_classes] = lam
        if self.prev is not None:
            r_churn = rb + n_classes + n_var
            out.row_lower[r_churn:r_churn + n_var] = -a.prev
            out.row_lower[r_churn + n_var:r_churn + 2 * n_var] = a.prev
            out.prev = a.prev
        out.col_lower[y0:y0 + n_var] = a.lo
        out.col_upper[y0:y0 + n_var] = a.hi
        out.col_upper[z0:z0 + pg.size] = lam[pb]
        out.col_upper[z0 + pg.size:z0 + pg.size + n_classes] = lam
        out.slices = [(y0, (pg, pb), z0, active, member, a.lam[active] / lam[member], n_classes)]
        out._matrix_key = (a.mu, a.cost, active, u, churn)
        out.nodes = 0
        return out

    def box_points(self) -> FloatArray:
        """Every replica vector of the box, one per row (kept while the box stays)."""
        lo, hi = self.col_lower[self.y_cols], self.col_upper[self.y_cols]
        if self._points is not None and np.array_equal(self._points[0], lo) and np.array_equal(self._points[1], hi):
            return self._points[2]
        points = np.stack(np.meshgrid(*(np.arange(lo[g], hi[g] + 1) for g in range(lo.size)), indexing="ij"),
                          axis=-1).reshape(-1, lo.size)
        self._points = (lo, hi, points)
        return points

    def _pass(self, solver: highs._Highs, integer: bool) -> str | None:
        solver.clearModel()
        # The LP searches re-solve one small program many times from the last basis: presolve would only
        # rebuild what the warm start keeps (~20 % of each re-solve). The MIP solver needs it.
        solver.setOptionValue("presolve", "choose" if integer else "off")
        status = solver.passModel(
            self.n_cols, self.n_rows, int(self.a_index.size), int(highs.MatrixFormat.kColwise),
            int(highs.ObjSense.kMinimize), 0.0, self.col_cost, self.col_lower, self.col_upper,
            self.row_lower, self.row_upper, self.a_start, self.a_index, self.a_value,
            self.integrality if integer else np.zeros(self.n_cols, dtype=np.int32),
        )
        return None if status == highs.HighsStatus.kOk else f"model rejected by HiGHS ({status})"

    def same_matrix(self, other: _Program) -> bool:
        """Same constraint matrix and costs: the duals of one program's LPs are dual-feasible for the other's,
        whatever the bounds (demand per class, replica bounds, previous counts) of each."""
        if self.a_value is other.a_value and self.col_cost is other.col_cost:  # one rebound from the other
            return True
        return (self.n_rows == other.n_rows and np.array_equal(self.a_start, other.a_start)
                and np.array_equal(self.a_index, other.a_index) and np.array_equal(self.a_value, other.a_value)
                and np.array_equal(self.col_cost, other.col_cost))

    def dual_bounds(self, row_duals: FloatArray, col_duals: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(c, G) with V(y) ≥ c_k + G_k·y for every replica vector y and every k, from the duals (one row each)
        of LPs of a program with the same matrix and costs, evaluated on this program's bounds (weak duality:
        each bound times the dual that prices it, the y columns left as variables; −inf when a dual prices a
        missing bound, which only makes that bound useless)."""
        pi = np.where(np.abs(row_duals) > DUAL_ZERO, row_duals, 0.0)
        d = np.where(np.abs(col_duals) > DUAL_ZERO, col_duals, 0.0)
        g = d[:, self.y_cols]
        d[:, self.y_cols] = 0.0
        rows = np.where(pi > 0, self.row_lower, np.where(pi < 0, self.row_upper, 0.0))
        cols = np.where(d > 0, self.col_lower, np.where(d < 0, self.col_upper, 0.0))
        return (pi * rows).sum(axis=1) + (d * cols).sum(axis=1), g

    def carry(self, memory: _Memory) -> FloatArray | None:
        """The memory's plan moved onto this program's bounds (same matrix, one model): the same replicas,
        each class's load and slack scaled by how its demand changed, churn against this cycle's previous
        counts. None unless that is feasible here (capacity left, replicas within bounds), to a 1e-9 margin."""
        _, (pg, pc), z0, _, _, _, n_classes = self.slices[0]
        rows = slice(self.bucket_rows[0], self.bucket_rows[0] + n_classes)
        ratio = self.row_lower[rows] / memory.program.row_lower[rows]
        x = memory.cols.copy()
        x[z0:z0 + pg.size] *= ratio[pc]
        x[z0 + pg.size:z0 + pg.size + n_classes] *= ratio
        if self.d_cols is not None and self.prev is not None:
            x[self.d_cols] = np.abs(x[self.y_cols] - self.prev)
        activity = np.bincount(self.a_index, weights=self.a_value * x[self.entry_col], minlength=self.n_rows)
        slack = 1e-9 * np.maximum(1.0, np.abs(activity))
        if (np.any(activity < self.row_lower - slack) or np.any(activity > self.row_upper + slack)
                or np.any(x < self.col_lower - 1e-9) or np.any(x > self.col_upper + 1e-9)):
            return None
        return x

    def lattice_search(self, solver: highs._Highs, deadline: float, gap: float, max_points: int,
                       memories: Sequence[_Memory] = ()) -> tuple[FloatArray | str | None, _Memory | None]:
        """Column values of an optimal plan of one model without a capped pool (within `gap`, as
        `branch_and_bound`), by cutting planes over every replica vector of its box, and what the next search
        of this model can start from; None when the box holds more than `max_points` vectors or an LP could
        not be read (the caller then branches).

        V(y), the program's optimum with the replica counts fixed at y, is the value of an LP in which y only
        moves bounds, so it is convex in y, and the duals of any LP of this program give a bound V(y) ≥ c + g·y
        valid for every y (`dual_bounds`). The vector with the lowest bound is evaluated exactly (one LP,
        warm-started), its bound added, until no unevaluated vector's bound can beat the best value by more
        than the gap. The first bound comes from the relaxation, or, when `memories` hold earlier searches of
        the same matrix (the previous cycle's steady and hold-aware plans: other demand and bounds, same
        classes), from every LP they evaluated, re-priced on this cycle's bounds; a plan of theirs carried onto
        this demand that no bound beats is returned without any LP, else the newest basis starts the first
        LP. A model whose demand moved little closes in zero or one LP."""
        n = int(self.y_cols.size)
        lo0, hi0 = self.col_lower[self.y_cols], self.col_upper[self.y_cols]
        sizes = (hi0 - lo0 + 1).astype(np.int64)
        if float(np.prod(sizes.astype(np.float64))) > max_points:
            return None, None
        points = self.box_points()
        row_duals: list[FloatArray] = []
        col_duals: list[FloatArray] = []
        bound = np.full(points.shape[0], -math.inf)

        def add_bounds(rows: FloatArray, cols: FloatArray) -> None:
            c, g = self.dual_bounds(rows, cols)
            np.maximum(bound, (c[:, None] + g @ points.T).max(axis=0), out=bound)

        def evaluate(lo: FloatArray, hi: FloatArray) -> tuple[float, FloatArray] | None:
            self.nodes += 1
            solver.changeColsBounds(n, self.y_cols, lo, hi)
            solver.run()
            if solver.getModelStatus() != highs.HighsModelStatus.kOptimal:
                return None  # every y is feasible (the slack s serves the rest): this is HiGHS, not the plan
            solution = solver.getSolution()
            cols = np.asarray(solution.col_value, dtype=np.float64)
            row_duals.append(np.asarray(solution.row_dual, dtype=np.float64))
            col_duals.append(np.asarray(solution.col_dual, dtype=np.float64))
            add_bounds(row_duals[-1][None, :], col_duals[-1][None, :])
            return float(self.col_cost @ cols), cols

        warm = [m for m in memories if self.same_matrix(m.program)]
        for m in warm:
            add_bounds(m.row_duals, m.col_duals)
        for m in warm:
            carried = self.carry(m)
            if carried is not None:
                # An earlier plan, still feasible, and no vector's bound beats it by more than the gap: it is
                # optimal within the gap here too, and no LP was needed.
                obj = float(self.col_cost @ carried)
                if float(bound.min()) >= obj - max(gap * abs(obj), 1e-9):
                    return carried, replace(m, program=self, cols=carried)
        error = self._pass(solver, integer=False)
        if error:
            return error, None
        _limit(solver, deadline - time.perf_counter())
        if warm:
            for m in warm:
                row_duals += list(m.row_duals)
                col_duals += list(m.col_duals)
            solver.setBasis(warm[0].basis)
        elif evaluate(lo0, hi0) is None:
            return None, None
        best_obj, best = math.inf, None
        while True:
            k = int(np.argmin(bound))
            if best is not None and bound[k] >= best_obj - max(gap * abs(best_obj), 1e-9):
                break
            if time.perf_counter() > deadline:
                return "solver status time limit reached", None
            y = points[k].astype(np.float64)
            found = evaluate(y, y)
            if found is None:
                return None, None
            if found[0] < best_obj:
                best_obj, best = found
            bound[k] = math.inf  # evaluated exactly: best_obj already accounts for it
        return best, _Memory(self, np.vstack(row_duals[-MEMORY_DUALS:]), np.vstack(col_duals[-MEMORY_DUALS:]),
                             solver.getBasis(), best)

    def branch_and_bound(self, solver: highs._Highs, deadline: float, gap: float, node_limit: int
                         ) -> FloatArray | str | None:
        """Column values of an optimal plan (within `gap`, HiGHS's mip_rel_gap semantics), found by best-first
        branch and bound on the replica counts over warm-started LP relaxations; None when `node_limit`
        LPs did not settle it (the caller then asks HiGHS's MIP). Small programs close in a few dozen LPs
        (~0.3 ms each), where the MIP solver spends 10–20 ms in presolve, cuts and heuristics."""
        error = self._pass(solver, integer=False)
        if error:
            return error
        _limit(solver, deadline - time.perf_counter())
        n = int(self.y_cols.size)

        def relax(lo: FloatArray, hi: FloatArray) -> tuple[float, FloatArray] | None:
            self.nodes += 1
            solver.changeColsBounds(n, self.y_cols, lo, hi)
            solver.run()
            status = solver.getModelStatus()
            if status == highs.HighsModelStatus.kInfeasible:
                return None
            if status != highs.HighsModelStatus.kOptimal:
                raise _HandOver(solver.modelStatusToString(status))
            return (float(solver.getInfo().objective_function_value),
                    np.asarray(solver.getSolution().col_value, dtype=np.float64))

        try:
            return self._search(relax, deadline, gap, node_limit)
        except _HandOver:
            return None  # an LP the search could not read (HiGHS said neither optimal nor infeasible)

    def _search(self, relax: Callable[[FloatArray, FloatArray], tuple[float, FloatArray] | None],
                deadline: float, gap: float, node_limit: int) -> FloatArray | str | None:
        best_obj: float = math.inf
        best: FloatArray | None = None

        def beats(bound: float) -> bool:
            return best is None or bound < best_obj - max(gap * abs(best_obj), 1e-9)

        lo0, hi0 = self.col_lower[self.y_cols].copy(), self.col_upper[self.y_cols].copy()
        root = relax(lo0, hi0)
        if root is None:
            return "no plan: the relaxation is infeasible"
        # Best-first: the open node with the lowest bound next, so optimality is proved in the fewest LPs.
        heap: list[tuple[float, int, FloatArray, FloatArray, FloatArray]] = [(root[0], 0, lo0, hi0, root[1])]
        tie = 1
        while heap:
            bound, _, lo, hi, cols = heapq.heappop(heap)
            if not beats(bound):
                break  # no open node can beat the incumbent by more than the gap
            if self.nodes >= node_limit:
                return None
            if time.perf_counter() > deadline:
                return "solver status time limit reached"
            y = cols[self.y_cols]
            frac = np.abs(y - np.rint(y))
            if frac.max() <= 1e-6:
                best_obj, best = bound, cols
                continue
            # Rounding every count up keeps this node's load split feasible (more capacity, same load) unless
            # a bound or a pool forbids it: an incumbent without an LP, so the search prunes early.
            up_all = np.ceil(y - 1e-6)
            if not self.has_pools and np.all(up_all <= hi):
                rounded_cols = cols.copy()
                rounded_cols[self.y_cols] = up_all
                if self.d_cols is not None and self.prev is not None:
                    rounded_cols[self.d_cols] = np.abs(up_all - self.prev)
                rounded_obj = float(self.col_cost @ rounded_cols)
                if rounded_obj < best_obj:
                    best_obj, best = rounded_obj, rounded_cols
            elif best is None:
                rounded = relax(np.minimum(up_all, hi), np.minimum(up_all, hi))
                if rounded is not None:
                    best_obj, best = rounded
            j = int(np.argmax(frac))
            down_hi, up_lo = hi.copy(), lo.copy()
            down_hi[j] = math.floor(y[j])
            up_lo[j] = math.floor(y[j]) + 1
            for child_lo, child_hi in ((lo, down_hi), (up_lo, hi)):
                child = relax(child_lo, child_hi)
                if child is not None and beats(child[0]):
                    heapq.heappush(heap, (child[0], tie, child_lo, child_hi, child[1]))
                    tie += 1
        return best if best is not None else "no integer plan found"

    def branch_and_bound_blocks(self, solver: highs._Highs, deadline: float, gap: float, node_limit: int
                                ) -> list[FloatArray | None] | str:
        """The same best-first search for every model of a batch of independent single-model programs (no
        capped pool), all in one LP: each round sets the bounds of one open node per model and solves the LP
        once, warm-started, which costs a few ms for hundreds of models where an LP each costs ~0.2 ms per
        model. Blocks share no row, so the LP's optimum is every block's own optimum under its bounds. Per
        model: its optimal columns (full length, zero outside the model), or None when `node_limit` LPs
        did not settle it (the caller then plans that model alone)."""
        error = self._pass(solver, integer=False)
        if error:
            return error
        _limit(solver, deadline - time.perf_counter())
        n_y = int(self.y_cols.size)
        lo_all, hi_all = self.col_lower[self.y_cols].copy(), self.col_upper[self.y_cols].copy()

        def solve_round(lo: FloatArray, hi: FloatArray) -> FloatArray:
            solver.changeColsBounds(n_y, self.y_cols, lo, hi)
            solver.run()
            status = solver.getModelStatus()
            if status != highs.HighsModelStatus.kOptimal:  # every node is feasible (slack s), so this is HiGHS
                raise _HandOver(solver.modelStatusToString(status))
            return np.asarray(solver.getSolution().col_value, dtype=np.float64)

        n_blocks = len(self.blocks)
        best_obj = [math.inf] * n_blocks
        best: list[FloatArray | None] = [None] * n_blocks
        heaps: list[list[tuple[float, int, FloatArray, FloatArray, FloatArray]]] = [[] for _ in range(n_blocks)]
        pending: list[list[tuple[FloatArray, FloatArray]]] = [[] for _ in range(n_blocks)]
        lps = [0] * n_blocks
        open_blocks = set(range(n_blocks))
        tie = 0

        def beats(k: int, bound: float) -> bool:
            return best[k] is None or bound < best_obj[k] - max(gap * abs(best_obj[k]), 1e-9)

        try:
            cols = solve_round(lo_all, hi_all)
        except _HandOver:
            return [None] * n_blocks
        for k, (c0, c1, ya, yb) in enumerate(self.blocks):
            lps[k] = 1
            heaps[k].append((float(self.col_cost[c0:c1] @ cols[c0:c1]), 0, lo_all[ya:yb].copy(),
                             hi_all[ya:yb].copy(), cols[c0:c1].copy()))
        while open_blocks:
            if time.perf_counter() > deadline:
                return "solver status time limit reached"
            # Advance every open block to its next LP to evaluate: pop nodes, take incumbents, branch.
            for k in list(open_blocks):
                c0, c1, ya, yb = self.blocks[k]
                while not pending[k]:
                    if not heaps[k] or not beats(k, heaps[k][0][0]):
                        open_blocks.discard(k)  # no open node can beat the incumbent by more than the gap
                        break
                    if lps[k] >= node_limit:
                        open_blocks.discard(k)
                        best[k] = None
                        best_obj[k] = -math.inf  # marks "unsettled": planned alone by the caller
                        break
                    bound, _, lo, hi, sub = heapq.heappop(heaps[k])
                    y = sub[self.y_cols[ya:yb] - c0]
                    frac = np.abs(y - np.rint(y))
                    if frac.max() <= 1e-6:
                        best_obj[k], best[k] = bound, sub
                        continue
                    up_all = np.ceil(y - 1e-6)
                    if np.all(up_all <= hi):  # rounded up: feasible, no LP needed (see _search)
                        rounded = sub.copy()
                        rounded[self.y_cols[ya:yb] - c0] = up_all
                        if self.d_cols is not None and self.prev is not None:
                            rounded[self.d_cols[ya:yb] - c0] = np.abs(up_all - self.prev[ya:yb])
                        obj = float(self.col_cost[c0:c1] @ rounded)
                        if obj < best_obj[k]:
                            best_obj[k], best[k] = obj, rounded
                    j = int(np.argmax(frac))
                    down_hi, up_lo = hi.copy(), lo.copy()
                    down_hi[j] = math.floor(y[j])
                    up_lo[j] = math.floor(y[j]) + 1
                    pending[k] += [(lo, down_hi), (up_lo, hi)]
            batch = [k for k in open_blocks if pending[k]]
            if not batch:
                break
            lo_r, hi_r = lo_all.copy(), hi_all.copy()
            chosen = {}
            for k in batch:
                _, _, ya, yb = self.blocks[k]
                chosen[k] = pending[k].pop()
                lo_r[ya:yb], hi_r[ya:yb] = chosen[k]
            try:
                cols = solve_round(lo_r, hi_r)
            except _HandOver:
                for k in batch:
                    open_blocks.discard(k)
                    best[k], best_obj[k] = None, -math.inf
                continue
            for k in batch:
                c0, c1, _, _ = self.blocks[k]
                lps[k] += 1
                obj = float(self.col_cost[c0:c1] @ cols[c0:c1])
                if beats(k, obj):
                    tie += 1
                    heapq.heappush(heaps[k], (obj, tie, chosen[k][0], chosen[k][1], cols[c0:c1].copy()))
        out: list[FloatArray | None] = []
        for k, (c0, c1, _, _) in enumerate(self.blocks):
            found = best[k]
            if found is None:
                out.append(None)
                continue
            full = np.zeros(self.n_cols)
            full[c0:c1] = found
            out.append(full)
        return out

    def solve(self, solver: highs._Highs, time_limit_s: float, mip_gap: float) -> FloatArray | str:
        """Column values, or why there are none."""
        error = self._pass(solver, self.integer)
        if error:
            return error
        _limit(solver, time_limit_s)
        solver.setOptionValue("mip_rel_gap", mip_gap)
        if time_limit_s <= 0:
            return "solver status time limit (no time left)"
        solver.run()
        model_status = solver.getModelStatus()
        if model_status != highs.HighsModelStatus.kOptimal:
            return f"solver status {solver.modelStatusToString(model_status)}"
        return np.asarray(solver.getSolution().col_value, dtype=np.float64)

    def read(self, k: int, cols: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Model k's replicas (V,) and load split (V, B) from the column values."""
        y0, (pg, pc), z0, active, member, share, n_classes = self.slices[k]
        n_var, n_buckets = self.shapes[k]
        per_class = np.zeros((n_var, n_classes))
        per_class[pg, pc] = cols[z0:z0 + pg.size]
        z = np.zeros((n_var, n_buckets))
        z[:, active] = per_class[:, member] * share
        return cols[y0:y0 + n_var], z


def _same_box(a: _Program, b: _Program) -> bool:
    return bool(np.array_equal(a.col_lower[a.y_cols], b.col_lower[b.y_cols])
                and np.array_equal(a.col_upper[a.y_cols], b.col_upper[b.y_cols]))


def _active(a: ModelArrays) -> npt.NDArray[np.intp]:
    """The buckets that enter the program: demanded, and servable by some variant."""
    return np.flatnonzero((a.lam > 0) & (a.mu > 0).any(axis=0))


def _servable_demand(a: ModelArrays) -> bool:
    return bool(_active(a).size)


def _limit(solver: highs._Highs, seconds: float) -> None:
    """Let the solver's next runs take `seconds` more. HiGHS before 2.0 compares `time_limit` with its run time
    summed over every run of the instance (ERGO-Code/HiGHS#1331, #1477), so a limit set as the time left made
    a long-lived Planner time out on every LP once its instance had run LPs that long in total (hours into a
    small service, the first cycles at 1,000 models): the searches lost their memory and models fell back to
    greedy plans."""
    solver.setOptionValue("time_limit", solver.getRunTime() + max(seconds, 0.0))


def _quiet_solver() -> highs._Highs:
    # The core object, not highspy.Highs: the wrapper's constructor registers callbacks, and that logs HiGHS's
    # banner to stdout before any option could switch it off (`gpumix solve --json` must print JSON only).
    solver = highs._Highs()
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("log_to_console", False)
    return solver


class Planner:
    """Plans a request component by component; keeps one quiet HiGHS instance for all of them, and per model
    what its last search learnt (`_Memory`)."""

    def __init__(self) -> None:
        self._solver: highs._Highs | None = None
        self.programs_solved = 0  # how many components needed HiGHS (the rest were read off the bounds)
        # Per model, its last lattice search: the next plan of the same model starts from its bounds.
        self._memories: dict[str, list[_Memory]] = {}
        self._behind: frozenset[str] = frozenset()  # models the last plans ran out of time for: searched first
        # A cycle plans all its models, then again only those whose holds matter: what either request learnt
        # is kept, and a model in neither of the last two requests is forgotten (memory stays bounded).
        self._previous: frozenset[str] = frozenset()

    def plan(self, request: PlanRequest) -> Plan:
        """The exact plan of every model within the time limit. Out of time, the models planned so far keep
        their exact plans and only the rest get the greedy fallback's (together, so shared pools hold); the
        next plan searches those first, so a request too large for one limit is planned exactly over a few."""
        validate(request)
        started = time.perf_counter()
        arrays = [model_arrays(mp, request.utilization) for mp in request.models]
        solved, why = self._solve(request, arrays, started)
        rest = [k for k, x in enumerate(solved) if x is None]
        split = dict(zip(rest, greedy([arrays[k] for k in rest], request.pools, request.utilization), strict=True))
        models = {}
        for k, (mp, arr) in enumerate(zip(request.models, arrays, strict=True)):
            found = solved[k]
            models[mp.demand.model] = (_model_plan(mp, arr, *found) if found is not None
                                       else make_model_plan(mp, arr, *split[k]))
        behind = frozenset(request.models[k].demand.model for k in rest)
        names = frozenset(mp.demand.model for mp in request.models)
        self._behind = ((self._behind - names) & self._previous) | behind
        self._previous = names
        return _plan_of(models, behind, why, (time.perf_counter() - started) * 1e3)

    def _solve(self, request: PlanRequest, arrays: Sequence[ModelArrays], started: float
               ) -> tuple[list[tuple[FloatArray, FloatArray] | None], str | None]:
        """The solution per model (None where there is none) and, if any is missing, why. Every component is
        either solved whole or not at all, so the missing ones can be planned apart."""
        out: list[tuple[FloatArray, FloatArray] | None] = [None] * len(arrays)
        deadline = started + request.time_limit_s
        groups = []
        for group in components([a.pools for a in arrays], request.pools):
            if not any(_servable_demand(arrays[k]) for k in group):  # nothing to carry: the bounds are the plan
                for k in group:
                    out[k] = (arrays[k].lo.copy(), np.zeros(arrays[k].mu.shape))
            else:
                groups.append(group)
        if groups and self._solver is None:
            self._solver = _quiet_solver()
        assert self._solver is None or isinstance(self._solver, highs._Highs)
        alone = [k for g in groups if len(g) == 1 for k in g if not set(arrays[k].pools) & set(request.pools)]
        alone.sort(key=lambda k: request.models[k].demand.model not in self._behind)  # stable: behind first
        memories: dict[str, list[_Memory]] = {}
        for k in alone if request.integer else ():
            assert self._solver is not None
            name = request.models[k].demand.model
            program = next((p for m in self._memories.get(name, ()) if (p := m.program.rebound(arrays[k], request))),
                           None) or _Program([arrays[k]], {}, request)
            cols, memory = program.lattice_search(self._solver, deadline, request.mip_gap, LATTICE_POINTS,
                                                  self._memories.get(name, ()))
            if isinstance(cols, str):
                # Out of time: the models searched so far keep what they learnt, so the next plans get further.
                self._memories = {**self._memories, **memories}
                return out, cols
            if cols is not None:
                out[k] = program.read(0, cols)
                self.programs_solved += 1
            if memory is not None:
                # The newest first, then the last one planned under other replica bounds: a cycle's steady and
                # hold-aware plans alternate, and each starts from its own kind.
                others = [m for m in self._memories.get(name, ()) if not _same_box(m.program, program)]
                memories[name] = [memory, *others[:MEMORIES - 1]]
        if request.integer:
            names = {mp.demand.model for mp in request.models}
            kept = {k: m for k, m in self._memories.items() if k not in names and k in self._previous}
            self._memories = {**kept, **memories}
        if any(out[k] is not None for k in alone):
            settled = {k for k in alone if out[k] is not None}
            alone = [k for k in alone if k not in settled]
            groups = [g for g in groups if not (len(g) == 1 and g[0] in settled)]
        for first in range(0, len(alone), BATCH_MAX) if request.integer and len(alone) >= BATCH_MIN else ():
            chunk = alone[first:first + BATCH_MAX]
            assert self._solver is not None
            batch = _Program([arrays[k] for k in chunk], {}, request, per_model_scale=True)
            result = batch.branch_and_bound_blocks(self._solver, deadline, request.mip_gap, NODE_LIMIT)
            if isinstance(result, str):
                return out, result
            for i, (k, found) in enumerate(zip(chunk, result, strict=True)):
                if found is not None:
                    out[k] = batch.read(i, found)
                    self.programs_solved += 1
            settled = {k for k in alone if out[k] is not None}
            groups = [g for g in groups if not (len(g) == 1 and g[0] in settled)]
        for group in groups:
            members = [arrays[k] for k in group]
            assert self._solver is not None
            program = _Program(members, request.pools, request)
            cols = None
            if request.integer:
                cols = program.branch_and_bound(self._solver, deadline, request.mip_gap, NODE_LIMIT)
            if cols is None:
                cols = program.solve(self._solver, deadline - time.perf_counter(), request.mip_gap)
            if isinstance(cols, str):
                return out, cols
            self.programs_solved += 1
            for i, k in enumerate(group):
                out[k] = program.read(i, cols)
        assert all(x is not None for x in out)
        return out, None


def greedy_plan(request: PlanRequest) -> Plan:
    """The fallback's plan for a whole request (what `Planner.plan` returns when HiGHS cannot answer)."""
    validate(request)
    arrays = [model_arrays(mp, request.utilization) for mp in request.models]
    return Plan(_greedy_models(request, arrays), "greedy", "greedy", 0.0)


def _greedy_models(request: PlanRequest, arrays: Sequence[ModelArrays]) -> dict[str, ModelPlan]:
    split = greedy(arrays, request.pools, request.utilization)
    return {mp.demand.model: make_model_plan(mp, arr, r, z)
            for mp, arr, (r, z) in zip(request.models, arrays, split, strict=True)}


def _model_plan(mp: ModelProblem, arr: ModelArrays, y: FloatArray, z: FloatArray) -> ModelPlan:
    replicas = np.clip(np.rint(y), arr.lo, arr.hi).astype(np.int64)
    return make_model_plan(mp, arr, replicas, np.where(arr.mu > 0, np.clip(z, 0.0, None), 0.0))


def make_model_plan(mp: ModelProblem, arr: ModelArrays, replicas: Sequence[int] | IntArray,
                    load: FloatArray) -> ModelPlan:
    """The plan of one model from its replica counts and load split (V, B) on the planning grid; loads are
    reported on the demand's own grid (a coarsened bucket's load sits at its tick)."""
    busy = arr.busy(load)
    names = arr.names
    grid = mp.demand.grid
    plan_grid = planning_grid(grid)
    if plan_grid == grid:
        per_variant = {n: load[k].reshape(grid.shape) for k, n in enumerate(names)}
    else:
        rows = np.searchsorted(np.asarray(grid.outputs), np.asarray(plan_grid.outputs))
        cols = np.searchsorted(np.asarray(grid.inputs), np.asarray(plan_grid.inputs))
        per_variant = {}
        for k, n in enumerate(names):
            full = np.zeros(grid.shape)
            full[np.ix_(rows, cols)] = load[k].reshape(plan_grid.shape)
            per_variant[n] = full
    return ModelPlan(
        model=mp.demand.model,
        replicas={n: int(r) for n, r in zip(names, replicas, strict=True)},
        load=per_variant,
        busy={n: float(busy[k]) for k, n in enumerate(names)},
        cost_per_hour=float(sum(int(r) * v.profile.cost_per_hour for r, v in zip(replicas, mp.variants, strict=True))),
        demand_rps=float(arr.lam.sum()),
        served_rps=float(min(load.sum(), arr.lam.sum())),
        unservable_rps=float(arr.lam[~(arr.mu > 0).any(axis=0)].sum()),
        floors={v.name: v.min_replicas for v in mp.variants},
    )
