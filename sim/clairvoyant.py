"""The clairvoyant bound: the cheapest replica schedule that knows the whole trace in advance, held to the
oracle's criterion, but that must order every replica one cold start before it serves.

Time is cut into slices of Δ seconds (default the control interval, 15 s). For variant g, slice t, bucket b:

    minimise   Σ_{g,t} cost_g·Δ/3600 · y_gt  +  P·Σ_{b,t} s_bt
    subject to y_gt = alive replicas of g during slice t (integer, 0 ≤ y ≤ max_replicas); paid all slice,
               as sim.engine bills a replica from the moment it is created (engine law 5)
               a_gt ≥ y_gt − y_g,t−1,  a_gt ≥ 0                 replicas started at t
               x_gt = y_gt − Σ_{τ = t−L_g+1 .. t} a_gτ          ready at t: alive, and not started within the
                                                                last L_g = ⌈cold_start_g / Δ⌉ slices
               Σ_g z_gbt + s_bt = λ_bt                          λ_bt: the rate of bucket b over [tΔ, tΔ + 60 s)
               Σ_b z_gbt / μ_gb ≤ u · x_gt                      the oracle's criterion: ready capacity at
                                                                utilisation u carries the next minute, by the
                                                                fleet's profiles (μ: what they claim)
               z ≥ 0, z_gbt = 0 where μ_gb = 0
    The slice-0 fleet is free and ready (every replay policy starts with the replicas it wants, ready, as if
    it had been in charge before the trace).

HiGHS solves the MILP under a time limit per round and a relative gap; a round that ends above GOOD_GAP
(or with demand unserved) is followed by another from its incumbent, up to ROUNDS. `Schedule.gap` is
HiGHS's own MIP gap (primal − dual bound) / primal and `Schedule.lower_bound` its dual bound: the best
schedule under this criterion costs between the two. What the criterion ignores, and so what the bound does not bound:
- it is a bound on the *criterion*, not on the SLO: bursts inside a minute, queueing, chunked-prefill
  interference and routing (least-outstanding sends a bucket to any ready replica) are not modelled, so the
  replay's attainment is below 100 %;
- a replica removed while serving drains (up to drain_grace_s) and is paid while it drains; the MILP pays
  y only, so the replayed cost is a little above the MILP's objective (`Schedule.cost` is the objective);
- buckets no variant can serve are left out (no schedule could serve them);
- the engine removes starting replicas first; x assumes a decrease removes ready ones, which only
  under-counts ready capacity, so the replayed fleet has at least the capacity the MILP counted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from optimizer.profile import resample
from sim.fleet import FleetSpec
from sim.policies import CYCLE_S, DEMAND_WINDOW_S, UTILIZATION, Policy, Trace, demand_between, fleet_grid

# Penalty per req/s-slice left unserved, in $ — far above any replica-slice, so capacity always wins while
# the bounds allow it.
UNSERVED_PENALTY = 1e3
DECISION_S = 60.0
TIME_LIMIT_S = 60.0
MIP_GAP = 0.005
GOOD_GAP = 0.03  # below this a time-limited solve stops; above it, up to ROUNDS rounds
ROUNDS = 3
VERBOSE = False

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Schedule:
    names: tuple[str, ...]
    slice_s: float
    replicas: npt.NDArray[np.int64]  # (V, T) alive replicas per slice
    ready: FloatArray  # (V, T) what the MILP counts as ready
    cost: float  # $ of y over the trace (the objective without the unserved penalty)
    unserved: float  # req/s-slices the bounds left unserved (0 unless max_replicas binds)
    unservable_requests: int  # requests in buckets no variant's profile serves (left out)
    status: str
    gap: float  # HiGHS's relative MIP gap at the end of the solve
    solve_s: float
    lower_bound: float = float("nan")  # HiGHS's dual bound: no schedule serving everything costs less

    @property
    def peak(self) -> int:
        """The most replicas alive at once."""
        return int(self.replicas.sum(axis=0).max())

    def at(self, t: float) -> dict[str, int]:
        k = min(round(t / self.slice_s), self.replicas.shape[1] - 1)
        return {name: int(self.replicas[i, k]) for i, name in enumerate(self.names)}


def _highs_gap(problem: cp.Problem, objective: float) -> float:
    """HiGHS's MIP gap from cvxpy's solver stats; cvxpy's HiGHS interface keeps the solver's info there."""
    stats = problem.solver_stats
    extra = getattr(stats, "extra_stats", None)
    info = None
    if extra is not None:
        info = extra.get("info") if isinstance(extra, dict) else getattr(extra, "info", None)
        if info is None and hasattr(extra, "mip_gap"):
            info = extra
    for source in (info, extra):
        if source is None:
            continue
        gap = source.get("mip_gap") if isinstance(source, dict) else getattr(source, "mip_gap", None)
        if gap is not None and math.isfinite(float(gap)):
            return float(gap)
        bound = source.get("mip_dual_bound") if isinstance(source, dict) else getattr(source, "mip_dual_bound", None)
        if bound is not None and math.isfinite(float(bound)) and objective > 0:
            return max(0.0, (objective - float(bound)) / objective)
    return float("nan")


def solve(spec: FleetSpec, trace: Trace, decision_s: float = DECISION_S, check_s: float = CYCLE_S,
          utilization: float = UTILIZATION, time_limit_s: float = TIME_LIMIT_S, mip_gap: float = MIP_GAP,
          relax: bool = False, window_s: float = DEMAND_WINDOW_S, fewest: bool = False) -> Schedule:
    """Replica counts change every `decision_s`; the criterion is checked every `check_s` (a divisor), on
    the demand of the next `window_s` (a minute in the replay; the demo's compressed clock uses less).
    `fewest`: minimise the most replicas alive at once instead of the cost (what a burst needs when no
    fleet can reshape faster than a cold start; `make demo` measures its peak against it).
    `relax`: the LP relaxation (fractional replicas), a lower bound on every integer schedule of that
    decision interval; with decision_s = check_s it bounds every schedule the criterion admits at the
    replay's control interval."""
    if not (decision_s > 0 and check_s > 0) or abs(decision_s / check_s - round(decision_s / check_s)) > 1e-9:
        raise ValueError(f"decision_s {decision_s} must be a positive multiple of check_s {check_s}")
    profiles = spec.profiles()
    variants = [v for v in spec.variants if v.name in profiles]
    if not variants:
        raise ValueError(f"fleet {spec.source}: no variant has a profile, the clairvoyant has nothing to plan with")
    grid = fleet_grid(profiles)
    mu = np.vstack([resample(profiles[v.name], grid).capacity.ravel() for v in variants])  # (V, B)
    servable = mu > 0
    per = round(decision_s / check_s)
    n_slices = math.ceil(trace.duration / decision_s) + 1
    n_checks = n_slices * per
    lam = np.vstack([demand_between(spec.model, grid, trace, p * check_s, p * check_s + window_s).rates.ravel()
                     for p in range(n_checks)])  # (P, B)
    never = ~servable.any(axis=0)
    out_idx, in_idx = grid.indices(trace.prompts, trace.outputs)
    unservable_requests = int(np.sum(never.reshape(grid.shape)[out_idx, in_idx]))
    lam[:, never] = 0.0

    V, M, P = len(variants), n_slices, n_checks
    # z only where a variant can serve a bucket with demand at that check: (variant, demand cell) pairs
    pb = np.argwhere(lam > 0)  # (D, 2): check, bucket
    rows_g, rows_d = np.nonzero(servable[:, pb[:, 1]])
    K, D = rows_g.size, pb.shape[0]
    cost = np.array([profiles[v.name].cost_per_hour for v in variants]) * decision_s / 3600.0
    lo = np.array([v.min_replicas for v in variants], dtype=float)
    hi = np.array([v.max_replicas for v in variants], dtype=float)

    y = cp.Variable((V, M), integer=not relax)
    a = cp.Variable((V, M), nonneg=True)
    z = cp.Variable(K, nonneg=True)
    s = cp.Variable(D, nonneg=True)
    check_t = np.arange(P) * check_s
    slice_of = np.arange(P) // per
    alive = sp.csr_matrix((np.ones(P), (np.arange(P), slice_of)), shape=(P, M))  # y of the check's slice
    ready_rows = []
    for g, v in enumerate(variants):
        # replicas started at slice m ≤ m(p) are not ready at check p while m·Δ + cold_start > p·check_s
        m_t = np.arange(M) * decision_s
        starting = ((np.arange(M)[None, :] <= slice_of[:, None])
                    & (m_t[None, :] + v.cold_start_s > check_t[:, None] + 1e-9))
        ready_rows.append(alive @ y[g, :] - sp.csr_matrix(starting.astype(float)) @ a[g, :])
    x = cp.vstack(ready_rows)  # (V, P)
    meet = sp.csr_matrix((np.ones(K), (rows_d, np.arange(K))), shape=(D, K))
    inv = 1.0 / mu[rows_g, pb[rows_d, 1]]
    cap = sp.csr_matrix((inv, (rows_g * P + pb[rows_d, 0], np.arange(K))), shape=(V * P, K))
    x_flat = cp.reshape(x, (V * P,), order="C")
    constraints = [
        a[:, 0] == 0,
        a[:, 1:] >= y[:, 1:] - y[:, :-1],
        y >= lo[:, None], y <= hi[:, None],
        meet @ z + s == lam[pb[:, 0], pb[:, 1]],
        cap @ z <= utilization * x_flat,
    ]
    if fewest:
        # one replica more at the peak is worth less than any demand left unserved (a req/s takes about a
        # replica), and than all the cost of the schedule: lexicographic, fewest first, then cheapest
        peak = cp.Variable(nonneg=True)
        constraints.append(cp.sum(y, axis=0) <= peak)
        tie = 1.0 / (float(cost.sum() * hi.max()) * M + 1.0)
        objective = cp.Minimize(peak + tie * cp.sum(cost @ y) + UNSERVED_PENALTY * cp.sum(s))
    else:
        penalty = UNSERVED_PENALTY * float(cost.max())
        objective = cp.Minimize(cp.sum(cost @ y) + penalty * cp.sum(s))
    problem = cp.Problem(objective, constraints)
    solve_s = 0.0
    for attempt in range(1 if relax else ROUNDS):
        with warnings.catch_warnings():  # a time-out warns; the status and the gap say it
            warnings.simplefilter("ignore", UserWarning)
            # a later round starts from the previous incumbent (cvxpy hands HiGHS its last solution)
            problem.solve(solver=cp.HIGHS, time_limit=time_limit_s, mip_rel_gap=mip_gap, verbose=VERBOSE,
                          warm_start=attempt > 0)
        solve_s += float(problem.solver_stats.solve_time or 0.0)
        if relax or y.value is None or problem.status == cp.OPTIMAL:
            break
        # wall-clock limits on a loaded machine can stop HiGHS with a poor incumbent: give it another round
        if _highs_gap(problem, float(problem.value)) <= GOOD_GAP and float(np.sum(s.value)) <= 1e-6:
            break
    # at the time limit HiGHS returns its best schedule so far (cvxpy: user_limit) and the gap says how good
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.USER_LIMIT) or y.value is None:
        raise RuntimeError(f"clairvoyant MILP: solver status {problem.status} ({V} variants × {M} slices)")
    replicas = np.rint(y.value).astype(np.int64)
    gap = _highs_gap(problem, float(problem.value))
    if relax:
        return Schedule(names=tuple(v.name for v in variants), slice_s=decision_s, replicas=replicas,
                        ready=np.asarray(x.value, dtype=np.float64), cost=float(np.sum(cost @ y.value)),
                        unserved=float(np.sum(s.value)) * check_s / 60.0 if D else 0.0,
                        unservable_requests=unservable_requests, status=str(problem.status), gap=0.0,
                        solve_s=solve_s, lower_bound=float(problem.value))
    return Schedule(
        names=tuple(v.name for v in variants), slice_s=decision_s, replicas=replicas,
        ready=np.asarray(x.value, dtype=np.float64), cost=float(np.sum(cost @ replicas)),
        unserved=float(np.sum(s.value)) * check_s / 60.0 if D else 0.0, unservable_requests=unservable_requests,
        status=str(problem.status), gap=gap, solve_s=solve_s,
        lower_bound=float(problem.value) * (1.0 - gap) if math.isfinite(gap) and not fewest else float("nan"),
    )


class Clairvoyant(Policy):
    """Replays the MILP's schedule: at each cycle the Deployments are set to the slice's alive counts, with
    no HPA in between (the schedule already respects cold starts; an HPA would only delay it)."""

    name = "clairvoyant"

    def __init__(self, spec: FleetSpec, decision_s: float = DECISION_S, time_limit_s: float = TIME_LIMIT_S) -> None:
        self.spec = spec
        self.slice_s = decision_s
        self.time_limit_s = time_limit_s
        self.schedule: Schedule | None = None

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        self.schedule = solve(spec, trace, self.slice_s, time_limit_s=self.time_limit_s)
        self.notes = (f"MILP {self.schedule.status}, HiGHS gap {100 * self.schedule.gap:.1f} %: schedule "
                      f"${self.schedule.cost:.2f}, optimum ≥ ${self.schedule.lower_bound:.2f}, "
                      f"{self.schedule.solve_s:.0f} s")
        return self.schedule.at(0.0)

    def step(self, now: float) -> None:
        assert self.schedule is not None, "initial() solves the schedule"
        # a slice coarser than the cycle holds its counts until the next slice starts
        for name, n in self.schedule.at(math.floor(now / self.slice_s + 1e-9) * self.slice_s).items():
            if n != self.fleet.replicas(name):
                self.fleet.set_replicas(name, n, now)
