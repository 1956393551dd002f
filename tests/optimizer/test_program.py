"""The planner's specification, one row per rule. Profiles: cheap = 1 $/h, 10 req/s short, no long;
big = 2.5 $/h, 40 req/s short, 10 req/s long (see fixtures.py)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from optimizer.demand import Demand
from optimizer.program import ModelPlan, ModelProblem, PlanError, Planner, PlanRequest, Variant, greedy_plan

from .fixtures import BIG, CHEAP, demand, profile


@dataclass
class Case:
    name: str
    short: float
    long: float
    want: dict[str, int]
    coverage: float = 1.0
    u: float = 1.0
    cheap: dict[str, object] = field(default_factory=dict)  # Variant overrides
    big: dict[str, object] = field(default_factory=dict)
    pools: dict[str, float] = field(default_factory=dict)
    churn: float = 0.0


CASES = [
    Case("no demand, no replicas", 0, 0, {"cheap": 0, "big": 0}),
    Case("small short load goes to the cheap type", 8, 0, {"cheap": 1, "big": 0}),
    Case("30 req/s short: one big (2.5) beats three cheap (3)", 30, 0, {"cheap": 0, "big": 1}),
    Case("45 req/s short: big + cheap (3.5) beats two big (5)", 45, 0, {"cheap": 1, "big": 1}),
    Case("long requests only fit the big type", 0, 5, {"cheap": 0, "big": 1}),
    Case("mixed: big's spare capacity absorbs short load", 8, 5, {"cheap": 0, "big": 1}),
    Case("utilisation 0.5 leaves headroom: 8 req/s needs two cheap", 8, 0, {"cheap": 2, "big": 0}, u=0.5),
    Case("15 req/s short: two cheap (2) beat one big (2.5)", 15, 0, {"cheap": 2, "big": 0}),
    Case("max replicas bound shifts load to the dearer type", 15, 0, {"cheap": 0, "big": 1},
         cheap={"max_replicas": 1}),
    Case("min replicas is a floor even without load", 0, 0, {"cheap": 2, "big": 0}, cheap={"min_replicas": 2}),
    Case("held replicas are used instead of buying another type", 8, 0, {"cheap": 0, "big": 1},
         big={"held_replicas": 1}),
    Case("pool capacity caps a type across the plan", 45, 0, {"cheap": 0, "big": 2}, pools={"cheap": 0}),
    Case("demand beyond every bound: serve the most, say coverage", 100, 0, {"cheap": 2, "big": 1},
         coverage=60 / 100, cheap={"max_replicas": 2}, big={"max_replicas": 1}),
    Case("unservable bucket: no replicas bought for it", 0, 5, {"cheap": 0}, coverage=0.0),
    Case("churn keeps the previous mix when costs tie", 30, 0, {"cheap": 3, "big": 0},
         cheap={"previous_replicas": 3}, big={"previous_replicas": 0}, churn=0.5),
]


def _request(case: Case) -> PlanRequest:
    variants = [Variant("cheap", CHEAP, **case.cheap)]  # type: ignore[arg-type]
    if "big" in case.want:
        variants.append(Variant("big", BIG, **case.big))  # type: ignore[arg-type]
    return PlanRequest(
        models=(ModelProblem(demand(case.short, case.long), tuple(variants)),),
        pools=case.pools, utilization=case.u, churn=case.churn,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(case: Case) -> None:
    plan = Planner().plan(_request(case))
    assert plan.status == "optimal"
    assert plan.replicas() == case.want
    assert plan.coverage == pytest.approx(case.coverage, abs=1e-6)
    m = plan.models["m"]
    expected_cost = sum(n * {"cheap": 1.0, "big": 2.5}[v] for v, n in case.want.items())
    assert m.cost_per_hour == pytest.approx(expected_cost)
    for v, n in case.want.items():  # no variant carries more than its replicas can at utilisation u
        assert m.busy[v] <= case.u * n + 1e-6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_greedy_is_feasible_and_never_cheaper_than_optimal(case: Case) -> None:
    request = _request(case)
    optimal = Planner().plan(request)
    fallback = greedy_plan(request)
    m = fallback.models["m"]
    for v, n in m.replicas.items():
        variant = next(x for x in request.models[0].variants if x.name == v)
        assert variant.lower_bound <= n <= variant.max_replicas
        assert m.busy[v] <= case.u * n + 1e-6
    assert fallback.coverage == pytest.approx(optimal.coverage, abs=1e-6)
    if case.churn == 0:  # greedy ignores churn, so only then is the optimum a lower bound on its cost
        assert fallback.cost_per_hour >= optimal.cost_per_hour - 1e-9


def test_shared_pool_across_models() -> None:
    """Two models on one accelerator pool of 3 GPUs: the plan splits the pool, never exceeds it."""
    a = profile("a-l4", 1.0, 10.0, 10.0, accelerator="L4", model="a")
    b = profile("b-l4", 1.0, 10.0, 10.0, accelerator="L4", model="b")
    b_alt = profile("b-a100", 4.0, 40.0, 40.0, accelerator="A100", model="b")
    request = PlanRequest(
        models=(
            ModelProblem(demand(20, 0, model="a"), (Variant("a-l4", a),)),
            ModelProblem(demand(20, 0, model="b"), (Variant("b-l4", b), Variant("b-a100", b_alt))),
        ),
        pools={"L4": 3}, utilization=1.0,
    )
    plan = Planner().plan(request)
    assert plan.replicas() == {"a-l4": 2, "b-l4": 0, "b-a100": 1}
    assert plan.coverage == 1.0


def test_multi_gpu_replicas_count_against_the_pool() -> None:
    two_gpu = profile("tp2", 2.0, 40.0, 10.0, accelerator="A100", gpus=2)
    request = PlanRequest(
        models=(ModelProblem(demand(100, 0), (Variant("tp2", two_gpu),)),), pools={"A100": 5}, utilization=1.0
    )
    plan = Planner().plan(request)
    assert plan.replicas() == {"tp2": 2}  # 3 replicas would need 6 GPUs
    assert plan.coverage == pytest.approx(80 / 100)


def test_replicas_held_by_the_hpa_win_over_a_too_small_pool() -> None:
    request = PlanRequest(
        models=(ModelProblem(demand(5, 0), (Variant("cheap", CHEAP, held_replicas=3),)),), pools={"cheap": 1},
    )
    assert Planner().plan(request).replicas() == {"cheap": 3}


def test_huge_demand_gives_bounded_answer_not_absurd() -> None:
    """AIBrix answered ~5e8 replicas for an unservable bucket; we answer the bound and say coverage."""
    request = PlanRequest(models=(ModelProblem(demand(1e7, 1e7), (Variant("cheap", CHEAP),)),))
    plan = Planner().plan(request)
    n = plan.replicas()["cheap"]
    assert 0 < n <= 1000
    assert 0 < plan.coverage < 0.01
    assert math.isfinite(plan.cost_per_hour)


def test_one_planner_reused_across_demands_answers_like_fresh_ones() -> None:
    planner = Planner()
    variants = (Variant("cheap", CHEAP), Variant("big", BIG))
    results = []
    for short in (8, 30, 45, 8):
        request = PlanRequest((ModelProblem(demand(short, 0), variants),), utilization=1.0)
        results.append(planner.plan(request).replicas())
        assert results[-1] == Planner().plan(request).replicas()
    assert results == [
        {"cheap": 1, "big": 0}, {"cheap": 0, "big": 1}, {"cheap": 1, "big": 1}, {"cheap": 1, "big": 0},
    ]


def test_solver_time_out_falls_back_to_greedy() -> None:
    request = PlanRequest((ModelProblem(demand(45, 3), (Variant("cheap", CHEAP), Variant("big", BIG))),),
                          time_limit_s=0.0)
    plan = Planner().plan(request)
    assert plan.solver == "greedy"
    assert plan.status.startswith("fallback: ")
    assert plan.coverage == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"utilization": 0.0}, "utilization"),
        ({"utilization": 1.5}, "utilization"),
        ({"churn": -1.0}, "churn"),
        ({"pools": {"x": float("nan")}}, "pool x"),
    ],
)
def test_bad_requests_are_named(kwargs: dict[str, object], message: str) -> None:
    request = PlanRequest((ModelProblem(demand(1, 0), (Variant("cheap", CHEAP),)),), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=message):
        Planner().plan(request)


def test_bad_variant_bounds_are_named() -> None:
    request = PlanRequest((ModelProblem(demand(1, 0), (Variant("cheap", CHEAP, min_replicas=3, max_replicas=2),)),))
    with pytest.raises(PlanError, match="cheap: min_replicas 3 > max_replicas 2"):
        Planner().plan(request)


def test_plan_never_negative_or_nan_on_random_inputs() -> None:
    rng = np.random.default_rng(7)
    planner = Planner()
    for _ in range(20):
        short, long = rng.exponential(30), rng.exponential(5)
        big_max = int(rng.integers(0, 4))
        plan = planner.plan(PlanRequest((ModelProblem(demand(short, long), (
            Variant("cheap", CHEAP), Variant("big", BIG, max_replicas=big_max))),)))
        m = plan.models["m"]
        assert all(n >= 0 for n in m.replicas.values())
        assert all(np.all(np.isfinite(x)) and np.all(x >= -1e-9) for x in m.load.values())
        assert 0.0 <= plan.coverage <= 1.0
        assert plan.models["m"].replicas["big"] <= big_max


# ------------------------------------------------------------------ exactness against an independent oracle


def _oracle_objective(request: PlanRequest) -> float:
    """The documented program written out in cvxpy, every model and pool in one problem, solved by HiGHS's
    MIP to a 1e-9 gap: the planner's decomposition, bucket merging and branch and bound must match it."""
    import cvxpy as cp

    from optimizer.program import PLACEMENT_WEIGHT, UNSERVED_PENALTY, model_arrays

    arrays = [model_arrays(mp, request.utilization) for mp in request.models]
    scale = max(float(a.cost.max()) for a in arrays)
    terms, cons, ys = [], [], []
    for a in arrays:
        n_var, n_b = a.mu.shape
        y = cp.Variable(n_var, integer=True)
        z = cp.Variable((n_var, n_b), nonneg=True)
        s = cp.Variable(n_b, nonneg=True)
        d = cp.Variable(n_var, nonneg=True)
        cons += [cp.sum(z, axis=0) + s == a.lam, z <= np.where(a.mu > 0, a.lam[None, :], 0.0),
                 cp.sum(cp.multiply(a.inv_mu, z), axis=1) <= request.utilization * y,
                 y >= a.lo, y <= a.hi, d >= y - a.prev, d >= a.prev - y]
        c = a.cost / scale
        terms += [c @ y, request.churn * c @ d, UNSERVED_PENALTY * cp.sum(s),
                  cp.sum(cp.multiply(PLACEMENT_WEIGHT * c[:, None] * a.inv_mu, z))]
        ys.append((y, a))
    for pool, cap in request.pools.items():
        used = [(y[g], a.gpus[g], a.lo[g]) for y, a in ys for g in range(len(a.names)) if a.pools[g] == pool]
        if used:
            cons.append(sum(gp * v for v, gp, _ in used) <= max(cap, sum(gp * lo for _, gp, lo in used)))
    problem = cp.Problem(cp.Minimize(cp.sum(cp.hstack(terms))), cons)
    problem.solve(solver=cp.HIGHS, mip_rel_gap=1e-9)
    assert problem.status == cp.OPTIMAL
    return float(problem.value) * scale


def _plan_objective(request: PlanRequest, given: ModelPlan | None = None) -> float:
    """The same objective evaluated on the planner's answer (in $/h, like the oracle's); `given`: the plan of
    the request's only model, planned elsewhere."""
    from optimizer.program import PLACEMENT_WEIGHT, UNSERVED_PENALTY, model_arrays

    if given is None:
        plan = Planner().plan(request)
        assert plan.status == "optimal"
    arrays = [model_arrays(mp, request.utilization) for mp in request.models]
    scale_all = max(float(a.cost.max()) for a in arrays)
    total = 0.0
    for mp, a in zip(request.models, arrays, strict=True):
        m = given if given is not None else plan.models[mp.demand.model]
        y = np.array([m.replicas[n] for n in a.names], dtype=float)
        load = np.vstack([m.load[n].ravel() for n in a.names])
        assert np.all((load * a.inv_mu).sum(axis=1) <= request.utilization * y + 1e-6)
        c = a.cost / scale_all
        unserved = float(a.lam.sum() - load.sum())
        total += float(c @ y + request.churn * c @ np.abs(y - a.prev) + UNSERVED_PENALTY * unserved
                       + PLACEMENT_WEIGHT * (c[:, None] * a.inv_mu * load).sum())
    return total * scale_all


def _random_request(rng: np.random.Generator, n_models: int, shared_pool: bool) -> PlanRequest:
    from optimizer.profile import SLO, Grid, Profile

    grid = Grid(inputs=(128, 512, 2048), outputs=(64, 256))
    models = []
    for m in range(n_models):
        variants = []
        twins = rng.random() < 0.5  # two input ticks every variant serves alike: merged into one bucket class
        for g in range(int(rng.integers(1, 5))):
            cap = rng.uniform(1, 40, size=grid.shape) * (rng.random(grid.shape) > 0.25)
            if twins:
                cap[:, 1] = cap[:, 0]
            acc = "shared" if shared_pool and g == 0 else f"acc{m}-{g}"
            prof = Profile(model=f"m{m}", variant=f"m{m}-v{g}", accelerator=acc,
                           cost_per_hour=round(float(rng.uniform(0.3, 4.0)), 2), slo=SLO("99", tpot=0.05),
                           grid=grid, capacity=cap, gpus_per_replica=int(rng.integers(1, 3)))
            variants.append(Variant(prof.variant, prof, min_replicas=int(rng.integers(0, 2)),
                                    max_replicas=int(rng.integers(2, 30)), held_replicas=int(rng.integers(0, 2)),
                                    previous_replicas=int(rng.integers(0, 6))))
        rates = rng.exponential(8, size=grid.shape) * (rng.random(grid.shape) > 0.4)
        models.append(ModelProblem(Demand(f"m{m}", grid, rates), tuple(variants)))
    pools = {"shared": float(rng.integers(1, 12))} if shared_pool else {}
    return PlanRequest(tuple(models), pools=pools, utilization=float(rng.uniform(0.6, 1.0)),
                       churn=float(rng.choice([0.0, 0.05, 0.5])), mip_gap=1e-9)


@pytest.mark.parametrize("seed", range(24))
def test_planner_matches_the_oracle_on_random_requests(seed: int) -> None:
    """Bounds, held replicas, churn, multi-GPU replicas, unservable cells, and half of the cases a capped
    pool shared by every model (one coupled component) against models planned apart."""
    rng = np.random.default_rng(seed)
    request = _random_request(rng, n_models=int(rng.integers(1, 4)), shared_pool=seed % 2 == 0)
    want = _oracle_objective(request)
    assert _plan_objective(request) == pytest.approx(want, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    "pools, accelerators, groups",
    [
        ({}, [["a"], ["a"], ["b"]], [[0], [1], [2]]),  # an uncapped pool couples nothing
        ({"a": 4}, [["a"], ["a"], ["b"]], [[0, 1], [2]]),
        ({"a": 4, "b": 2}, [["a"], ["a", "b"], ["b"]], [[0, 1, 2]]),  # a chain through two pools
        ({"b": 2}, [["a"], ["a", "b"], ["c"]], [[0], [1], [2]]),  # a capped pool used by one model only
    ],
)
def test_models_linked_by_capped_pools_are_planned_together(
    pools: dict[str, float], accelerators: list[list[str]], groups: list[list[int]]
) -> None:
    from optimizer.program import components, model_arrays

    models = tuple(
        ModelProblem(demand(5, 0, model=f"m{k}"), tuple(
            Variant(f"m{k}-{acc}", profile(f"m{k}-{acc}", 1.0, 10.0, 0.0, accelerator=acc, model=f"m{k}"))
            for acc in accs))
        for k, accs in enumerate(accelerators)
    )
    arrays = [model_arrays(mp, 0.8) for mp in models]
    assert sorted(components([a.pools for a in arrays], pools)) == groups


def test_grid_beyond_the_tick_limit_is_planned_on_a_conservative_coarsening() -> None:
    """A 100-tick union grid (finer than MAX_TICKS) plans on kept ticks: requests move up, capacity is read
    at the kept tick, so the plan buys at least what the fine plan would."""
    from optimizer.profile import MAX_TICKS, SLO, Grid, Profile, coarsen

    fine = Grid(inputs=tuple(range(10, 1010, 10)), outputs=(64,))
    coarse = coarsen(fine)
    assert len(coarse.inputs) <= MAX_TICKS and coarse.inputs[-1] == fine.inputs[-1]
    assert set(coarse.inputs) <= set(fine.inputs)
    capacity = np.linspace(40, 4, 100)[None, :]  # longer prompts, less capacity
    prof = Profile(model="m", variant="v", accelerator="v", cost_per_hour=1.0, slo=SLO("99", tpot=0.05),
                   grid=fine, capacity=capacity)
    rates = np.zeros((1, 100))
    rates[0, 1::2] = 0.5  # demand on ticks the coarsening drops
    request = PlanRequest((ModelProblem(Demand("m", fine, rates), (Variant("v", prof),)),), utilization=1.0)
    plan = Planner().plan(request)
    exact_busy = float((rates / capacity).sum())
    m = plan.models["m"]
    assert m.busy["v"] >= exact_busy - 1e-9  # never claims more capacity than measured
    assert m.replicas["v"] >= math.ceil(exact_busy - 1e-9)
    assert m.load["v"].shape == fine.shape and m.load["v"].sum() == pytest.approx(rates.sum())


def test_profile_finer_than_the_tick_limit_is_refused_by_name() -> None:
    from optimizer.profile import MAX_TICKS, ProfileError, parse_profile

    ticks = list(range(1, MAX_TICKS + 2))
    doc = {"format": "gpumix.profile/v1", "model": "m", "variant": "v", "cost_per_hour": 1.0,
           "slo": {"tpot": 0.05}, "grid": {"input_tokens": ticks, "output_tokens": [64]},
           "capacity_rps": [[1.0] * len(ticks)]}
    with pytest.raises(ProfileError, match=rf"grid.input_tokens: {MAX_TICKS + 1} ticks, more than the {MAX_TICKS}"):
        parse_profile(doc, "fine.json")
    doc["grid"]["input_tokens"] = ticks[:MAX_TICKS]
    doc["capacity_rps"] = [[1.0] * MAX_TICKS]
    assert parse_profile(doc, "ok.json").grid.shape == (1, MAX_TICKS)


def test_solve_json_is_the_only_thing_on_stdout(tmp_path: Path) -> None:
    """HiGHS prints a banner unless told not to before its first call: `gpumix solve --json` must pipe into
    a JSON parser as it is."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    aibrix = repo / "data/aibrix"
    solve = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "solve", "--json", "--profiles",
         str(aibrix / "simulator-llama2-7b-a100.json"), str(aibrix / "simulator-llama2-7b-a40.json"),
         "--demand", str(repo / "examples/demand-llama2-7b.json")],
        capture_output=True, text=True, cwd=repo, timeout=120, check=True,
    )
    parsed = subprocess.run([sys.executable, "-m", "json.tool"], input=solve.stdout, capture_output=True,
                            text=True, timeout=60)
    assert parsed.returncode == 0, f"stdout is not JSON: {solve.stdout[:300]!r}"
    doc = json.loads(solve.stdout)
    assert doc["status"] == "optimal" and doc["replicas"]


@pytest.mark.parametrize("seed", range(6))
def test_independent_models_searched_together_match_the_oracle_one_by_one(seed: int) -> None:
    """At least BATCH_MIN independent models go through one LP per branch-and-bound round: every model's plan
    must still be its own optimum."""
    from dataclasses import replace

    from optimizer.program import BATCH_MIN

    rng = np.random.default_rng(100 + seed)
    request = _random_request(rng, n_models=BATCH_MIN + 4, shared_pool=False)
    plan = Planner().plan(request)
    assert plan.status == "optimal"
    for mp in request.models:
        alone = replace(request, models=(mp,))
        got = _plan_objective(alone, plan.models[mp.demand.model])
        assert got == pytest.approx(_oracle_objective(alone), rel=1e-6, abs=1e-6), mp.demand.model


@pytest.mark.parametrize("seed", range(12))
def test_lattice_search_alone_matches_the_oracle(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model without a capped pool and a small replica box is planned by cutting planes over its box: with
    branching and HiGHS's MIP made unavailable, the plan must still be the oracle's optimum."""
    import optimizer.program as program

    def unavailable(*args: object, **kwargs: object) -> None:
        raise AssertionError("the lattice search should have planned this model")

    rng = np.random.default_rng(500 + seed)
    request = _random_request(rng, n_models=1, shared_pool=False)
    arrays = program.model_arrays(request.models[0], request.utilization)
    assert float(np.prod(arrays.hi - arrays.lo + 1)) <= program.LATTICE_POINTS
    monkeypatch.setattr(program._Program, "branch_and_bound", unavailable)
    monkeypatch.setattr(program._Program, "solve", unavailable)
    assert _plan_objective(request) == pytest.approx(_oracle_objective(request), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_a_planner_carried_across_changing_demands_stays_at_the_oracle(seed: int) -> None:
    """One Planner, one model's demand moving cycle by cycle (a little, a lot, up and down, its previous
    counts following the plan): each plan starts from the last search's bounds and plan (`_Memory`), and each
    must still be feasible and the oracle's optimum for its own demand."""
    from dataclasses import replace

    rng = np.random.default_rng(900 + seed)
    request = _random_request(rng, n_models=1, shared_pool=False)
    planner = Planner()
    mp = request.models[0]
    for factor in (1.0, 1.01, 0.99, 1.3, 0.6, 1.0, 1.002):
        rates = mp.demand.rates * factor * rng.uniform(0.98, 1.02, size=mp.demand.rates.shape)
        mp = replace(mp, demand=replace(mp.demand, rates=rates))
        step = replace(request, models=(mp,))
        plan = planner.plan(step)
        assert plan.status == "optimal"
        got = _plan_objective(step, plan.models[mp.demand.model])
        assert got == pytest.approx(_oracle_objective(step), rel=1e-6, abs=1e-6), factor
        replicas = plan.models[mp.demand.model].replicas
        mp = replace(mp, variants=tuple(replace(v, previous_replicas=replicas[v.name]) for v in mp.variants))


def test_the_bounds_of_one_search_hold_for_the_next_demand() -> None:
    """`dual_bounds`: the duals of an LP of one cycle's program, priced on the next cycle's bounds (same
    matrix, other demand and previous counts), bound that cycle's V(y) from below at every replica vector,
    and equal V at the vector they were computed at (strong duality)."""
    from dataclasses import replace

    from highspy import _core as highs

    import optimizer.program as program

    rng = np.random.default_rng(3)
    request = _random_request(rng, n_models=1, shared_pool=False)
    request = replace(request, churn=0.05)
    mp = request.models[0]
    later = replace(mp, demand=replace(mp.demand, rates=mp.demand.rates * 1.2),
                    variants=tuple(replace(v, previous_replicas=(v.previous_replicas or 0) + 1) for v in mp.variants))
    now_p = program._Program([program.model_arrays(mp, request.utilization)], {}, request)
    next_p = program._Program([program.model_arrays(later, request.utilization)], {}, replace(request, models=(later,)))
    assert now_p.same_matrix(next_p)
    solver = program._quiet_solver()

    def value(p: program._Program, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        p._pass(solver, integer=False)
        solver.changeColsBounds(y.size, p.y_cols, y, y)
        solver.run()
        assert solver.getModelStatus() == highs.HighsModelStatus.kOptimal
        sol = solver.getSolution()
        return (solver.getInfo().objective_function_value, np.asarray(sol.row_dual)[None, :],
                np.asarray(sol.col_dual)[None, :])

    lo, hi = now_p.col_lower[now_p.y_cols], now_p.col_upper[now_p.y_cols]
    checked = 0
    for _ in range(6):
        y = np.array([float(rng.integers(a, b + 1)) for a, b in zip(lo, hi, strict=True)])
        v_now, rows, cols = value(now_p, y)
        c, g = now_p.dual_bounds(rows, cols)
        assert float(c[0] + g[0] @ y) == pytest.approx(v_now, rel=1e-7, abs=1e-7)
        c, g = next_p.dual_bounds(rows, cols)
        for _ in range(6):
            y2 = np.array([float(rng.integers(a, b + 1)) for a, b in zip(lo, hi, strict=True)])
            y2 = np.clip(y2, next_p.col_lower[next_p.y_cols], next_p.col_upper[next_p.y_cols])
            assert float(c[0] + g[0] @ y2) <= value(next_p, y2)[0] + 1e-7
            checked += 1
    assert checked == 36
