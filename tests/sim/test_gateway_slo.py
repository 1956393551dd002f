"""AIBrix's `slo` router as the simulator's gateway (sim/gateway_slo.py): the specification, one row per rule.

Two variants on a 2 × 2 grid (outputs 16/256, prompts 128/1024) with profiles whose capacity λ and mean E2E L
per cell each row sets; SLO TTFT 5 s, TPOT 0.2 s. With no completion seen the gateway predicts an output of
1 token, so a request's cell is (16, its prompt) and its target is 0.2·1 + 5 = 5.2 s: rank = waited + L − 5.2.
A request consumes 1 / (λ·L) of a pod; a pod takes it while load + that ≤ 1.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optimizer.profile import SLO, BenchmarkRow, Grid, Profile
from sim.engine import Fleet, Request
from sim.fleet import load_fleet
from sim.gateway_slo import CAP, NO_POD, SLO_FAILURE, GatewayPod, OutputPredictor, SLOGateway, gateway_tables

GRID = Grid(inputs=(128, 1024), outputs=(16, 256))
SHORT, LONG = 100, 1000  # prompts: first and second input tick
FIT = 10_000  # KV tokens every pod holds unless a row says otherwise


def profile(variant: str, cells: dict[tuple[int, int], tuple[float, float]], rows: bool = True) -> Profile:
    """cells: (output tick, input tick) → (λ, mean E2E). One benchmark rate per cell: at λ when λ > 0 (within
    every limit, sustained), else at 1 req/s with a P99 TTFT over the limit (gen_profile keeps its latency)."""
    slo = SLO(ttft=5.0, tpot=0.2)
    capacity = np.zeros(GRID.shape)
    bench: list[BenchmarkRow] = []
    for i, out_t in enumerate(GRID.outputs):
        for j, in_t in enumerate(GRID.inputs):
            lam, e2e = cells.get((out_t, in_t), (0.0, 1.0))
            capacity[i, j] = lam
            rate = lam if lam > 0 else 1.0
            ttft = 0.1 if lam > 0 else 9.0
            bench += [BenchmarkRow(in_t, out_t, rate, "TPUT", rate),
                      BenchmarkRow(in_t, out_t, rate, "E2E", e2e, e2e, e2e, e2e),
                      BenchmarkRow(in_t, out_t, rate, "TTFT", ttft, ttft, ttft, ttft),
                      BenchmarkRow(in_t, out_t, rate, "TPOT", 0.01, 0.01, 0.01, 0.01)]
    return Profile(model="m", variant=variant, accelerator="X", cost_per_hour=1.0, slo=slo, grid=GRID,
                   capacity=capacity, rows=tuple(bench) if rows else ())


def cells(lam: float, e2e: float, long_lam: float | None = None) -> dict[tuple[int, int], tuple[float, float]]:
    return {(16, 128): (lam, e2e), (16, 1024): (lam if long_lam is None else long_lam, e2e)}


FAST = cells(4.0, 1.0)  # consumption 1/(4·1) = 0.25
SLOW = cells(1.0, 3.0)  # rank 3 − 5.2 < 0; consumption 1/3
PODS = (GatewayPod("fast-1", "fast", FIT), GatewayPod("fast-2", "fast", FIT), GatewayPod("slow-1", "slow", FIT))


def gateway(fast=FAST, slow=SLOW, rows: bool = True) -> SLOGateway:
    return SLOGateway({"fast": profile("fast", fast, rows), "slow": profile("slow", slow, rows)})


@pytest.mark.parametrize("rule, fast, slow, loads, prompt, pods, want", [
    ("the most relaxed profile (lowest rank: lowest mean E2E) first", FAST, SLOW, {}, SHORT, PODS, "fast-2"),
    ("inside the variant, the least pending load", FAST, SLOW, {"fast-2": 0.5, "fast-1": 0.2}, SHORT, PODS,
     "fast-1"),
    ("equal loads: the last pod listed", FAST, SLOW, {"fast-1": 0.3, "fast-2": 0.3}, SHORT, PODS, "fast-2"),
    ("a pod is full when load + consumption > 1: the next profile, its rank ≤ 0", FAST, SLOW,
     {"fast-1": 0.8, "fast-2": 0.76}, SHORT, PODS, "slow-1"),
    ("load + consumption = 1 still fits", FAST, SLOW, {"fast-1": 0.8, "fast-2": 0.75}, SHORT, PODS, "fast-2"),
    ("a profile claiming nothing for the cell (λ = 0) is passed over", cells(4.0, 1.0, long_lam=0.0), SLOW, {},
     LONG, PODS, "slow-1"),
    ("profiles rank by the request's own cell", cells(4.0, 1.0), {(16, 128): (1.0, 3.0), (16, 1024): (9.0, 0.5)},
     {}, LONG, PODS, "slow-1"),
    ("pods that cannot hold the request are not listed for it", FAST, SLOW, {},
     SHORT, (GatewayPod("fast-1", "fast", 50), *PODS[2:]), "slow-1"),
])
def test_which_pod(rule, fast, slow, loads, prompt, pods, want):
    gw = gateway(fast, slow)
    gw.load.update(loads)
    gw.submit(1, prompt, 200, now=0.0)
    assert [(d.request_id, d.pod) for d in gw.dispatch(0.0, pods)] == [(1, want)], rule


@pytest.mark.parametrize("rule, fast, slow, loads, want", [
    ("every profile's pods full: it waits at the gateway", FAST, SLOW, {"fast-1": 0.9, "fast-2": 0.9, "slow-1": 0.9},
     []),
    ("the fastest full and the next profile expects a violation (rank > 0): it waits", FAST, cells(1.0, 6.0),
     {"fast-1": 0.9, "fast-2": 0.9}, []),
    ("λ·L < 1 (the profile holds less than one request at capacity): never fits, even idle", cells(1.0, 0.5),
     cells(1.0, 0.9), {}, []),
    ("no profile claims capacity for the cell: rejected as an SLO failure", cells(0.0, 1.0), cells(0.0, 3.0), {},
     [(1, None, SLO_FAILURE)]),
    ("the fastest full, the next claims nothing (rank ≤ 0): the last error, an SLO failure, rejects it", FAST,
     cells(0.0, 3.0), {"fast-1": 0.9, "fast-2": 0.9}, [(1, None, SLO_FAILURE)]),
])
def test_when_nothing_takes_it(rule, fast, slow, loads, want):
    gw = gateway(fast, slow)
    gw.load.update(loads)
    gw.submit(1, SHORT, 200, now=0.0)
    got = [(d.request_id, d.pod, d.reason) for d in gw.dispatch(0.0, PODS)]
    assert got == want, rule
    assert len(gw) == (0 if want else 1), rule


def test_no_pod_of_a_profiled_variant_fits_rejects():
    gw = gateway()
    gw.submit(1, SHORT, 200, now=0.0)
    tiny = tuple(replace(p, kv_tokens=50) for p in PODS)
    assert [(d.pod, d.reason) for d in gw.dispatch(0.0, tiny)] == [(None, NO_POD)]


def test_a_finished_request_frees_its_pod_for_the_queue():
    gw = gateway(fast=cells(2.0, 1.0), slow=cells(0.0, 3.0))  # consumption 0.5 on the fast pods, slow serves none
    pods = PODS[:1]
    for rid in (1, 2, 3):
        gw.submit(rid, SHORT, 200, now=0.0)
    assert [(d.request_id, d.pod) for d in gw.dispatch(0.0, pods)] == [(1, "fast-1"), (2, "fast-1")]
    assert gw.load["fast-1"] == pytest.approx(CAP) and len(gw) == 1
    assert gw.done(1, now=1.0, prompt=SHORT, output=10) is True  # below the cap again: try the queue
    assert [(d.request_id, d.pod) for d in gw.dispatch(1.0, pods)] == [(3, "fast-1")]
    assert gw.load["fast-1"] == pytest.approx(1.0)


def test_the_most_urgent_queue_head_goes_first():
    """Capacity for one request; the one whose rank is highest (it waited longer) takes it, even though it is
    in the sub-queue created later."""
    gw = gateway(fast=cells(4.0, 1.0), slow=cells(0.0, 3.0))
    gw.load["fast-1"] = 0.75  # room for exactly one request of either prompt
    gw.submit(1, SHORT, 200, now=5.0)
    gw.submit(2, LONG, 200, now=1.0)
    assert [d.request_id for d in gw.dispatch(6.0, PODS[:1])] == [2]


def test_inside_a_sub_queue_first_come_first_served():
    gw = gateway(fast=cells(4.0, 1.0), slow=cells(0.0, 3.0))
    gw.load["fast-1"] = 0.75
    gw.submit(1, SHORT, 200, now=0.0)
    gw.submit(2, SHORT, 200, now=0.0)
    assert [d.request_id for d in gw.dispatch(0.0, PODS[:1])] == [1]


@pytest.mark.parametrize("rule, profiles", [
    ("no ready variant has a profile", {}),
    ("a profile has no latency data to rank with", {"fast": profile("fast", cells(0.0, 1.0), rows=False),
                                                    "slow": profile("slow", SLOW)}),
])
def test_fallback_is_least_request(rule, profiles):
    """The earliest head goes to the pod with the fewest requests in flight, whatever the profiles claim."""
    gw = SLOGateway(profiles)
    gw.submit(1, LONG, 200, now=0.0)
    gw.submit(2, LONG, 200, now=0.0)
    gw.submit(3, LONG, 200, now=0.0)
    routed = [d.pod for d in gw.dispatch(0.0, PODS)]
    assert sorted(routed) == ["fast-1", "fast-2", "slow-1"], rule
    assert gw.load == {}, rule


def test_no_ready_pod_waits():
    gw = gateway()
    gw.submit(1, SHORT, 200, now=0.0)
    assert gw.dispatch(0.0, ()) == [] and len(gw) == 1
    assert gw.remove(1) is True and len(gw) == 0 and gw.remove(1) is False
    gw.submit(2, LONG, 200, now=1.0)  # the emptied sub-queue does not stand in the way
    assert [(d.request_id, d.pod) for d in gw.dispatch(1.0, PODS)] == [(2, "fast-2")]


def test_latency_table_is_read_at_the_profiles_rate():
    """Mean E2E at the highest rate within every limit and sustained; a cell meeting none keeps the latency of
    its lowest rate (gen_profile's setMetrics)."""
    p = profile("v", cells(4.0, 1.0, long_lam=0.0))
    extra = (BenchmarkRow(128, 16, 8.0, "TPUT", 8.0), BenchmarkRow(128, 16, 8.0, "E2E", 2.0, 2.0, 2.0, 2.0),
             BenchmarkRow(128, 16, 8.0, "TTFT", 0.2, 0.2, 0.2, 0.2),
             BenchmarkRow(128, 16, 8.0, "TPOT", 0.01, 0.01, 0.01, 0.01),
             BenchmarkRow(128, 16, 16.0, "TPUT", 9.0), BenchmarkRow(128, 16, 16.0, "E2E", 7.0, 7.0, 7.0, 7.0),
             BenchmarkRow(128, 16, 16.0, "TTFT", 0.2, 0.2, 0.2, 0.2),
             BenchmarkRow(128, 16, 16.0, "TPOT", 0.01, 0.01, 0.01, 0.01))
    _, tables = gateway_tables({"v": replace(p, rows=p.rows + extra)})
    e2e = tables["v"].e2e
    assert e2e is not None
    assert e2e[0, 0] == 2.0  # 16 req/s is not sustained (9 < 0.9·16); 8 is the highest within the limits
    assert e2e[0, 1] == 1.0  # no rate within the limits: the lowest rate's latency


def test_predictor():
    pred = OutputPredictor(seed=0)
    assert pred.predict(1000, now=0.0) == 1  # no history: optimistic
    pred.add(1000, 100, now=0.0)  # round(log2(100)) = 7
    assert pred.predict(1000, now=10.0) == 128
    assert pred.predict(900, now=10.0) == 128  # same prompt bucket (round(log2) = 10)
    assert pred.predict(100, now=10.0) == 1  # another prompt bucket has no history
    assert pred.predict(1000, now=241.0) == 1  # the 240 s window forgot it
    pred.add(1000, 16, now=300.0)
    pred.add(1000, 1000, now=300.0)
    assert {pred.predict(1000, now=301.0) for _ in range(50)} == {16, 1024}


def test_the_gateway_learns_outputs_from_completions():
    gw = gateway()
    gw.submit(1, SHORT, 200, now=0.0)
    gw.dispatch(0.0, PODS)
    gw.done(1, now=2.0, prompt=SHORT, output=200)
    gw.submit(2, SHORT, 300, now=3.0)
    gw.dispatch(3.0, ())
    assert gw._queues[(8.0, 7.0)][0].output == 256  # round(log2(200)) = 8


# --------------------------------------------------------------------------- in the engine, bundled fleet


def two_pod_fleet(routing: str) -> Fleet:
    spec = load_fleet()
    keep = ("deepseek-coder-7b-l4", "deepseek-coder-7b-a100")
    spec = replace(spec, variants=tuple(replace(v, initial_replicas=1 if v.name in keep else 0)
                                        for v in spec.variants))
    return Fleet(spec, seed=0, routing=routing)


@pytest.mark.parametrize("routing, some_on_l4", [("least-outstanding", True), ("slo", False)])
def test_long_prompts_go_where_the_profiles_claim_capacity(routing, some_on_l4):
    """3,000-token prompts (200 tokens out), one L4 and one A100 ready: the L4's profile claims nothing for
    them. The default router sends the L4 some (whenever it has fewer in flight); the SLO router none."""
    fleet = two_pod_fleet(routing)
    for k in range(20):
        fleet.submit(Request(3000, 200), 4.0 * k)
    done = fleet.advance(1e4)
    assert len(done) == 20 and not any(c.dropped for c in done)
    assert any(c.variant == "deepseek-coder-7b-l4" for c in done) is some_on_l4


def test_engine_queues_at_the_gateway_and_drops_after_max_queue():
    fleet = two_pod_fleet("slo")
    fleet.set_replicas("deepseek-coder-7b-a100", 0, 0.0)
    fleet.set_replicas("deepseek-coder-7b-l4", 0, 0.0)
    rid = fleet.submit(Request(300, 20), 1.0)
    assert fleet.snapshot(2.0).pending == 1 and fleet.in_flight == 1
    done = fleet.advance(1.0 + fleet.spec.max_queue_s + 1)
    assert [(c.request_id, c.dropped, c.reason) for c in done] == [(rid, True, "gateway-timeout")]


def test_engine_rejects_what_no_profile_claims():
    """An 8,000-token prompt with no output history (predicted 1 token): no bundled profile claims capacity
    at (4, 8192), so AIBrix's router rejects it at once."""
    fleet = two_pod_fleet("slo")
    rid = fleet.submit(Request(8000, 50), 1.0)
    assert [(c.request_id, c.reason) for c in fleet.advance(2.0)] == [(rid, SLO_FAILURE)]


def test_engine_every_request_ends_exactly_once_with_slo_routing():
    fleet = two_pod_fleet("slo")
    ids = []
    for k in range(600):
        if k == 300:
            fleet.set_replicas("deepseek-coder-7b-l4", 0, 30.0)  # drain: its queue goes back to the gateway
        ids.append(fleet.submit(Request(100 + 97 * (k % 23), 1 + (k % 60)), 0.1 * k))
    done = fleet.advance(1e5)
    assert sorted(c.request_id for c in done) == sorted(ids)
    assert fleet.in_flight == 0
    assert fleet._gateway is not None and all(abs(v) < 1e-9 for v in fleet._gateway.load.values())


def test_engine_with_slo_routing_is_deterministic_for_a_seed():
    def run() -> list[tuple[int, str | None, float, str]]:
        fleet = two_pod_fleet("slo")
        for k in range(300):
            fleet.submit(Request(100 + 211 * (k % 31), 1 + (k % 90)), 0.05 * k)
        return sorted((c.request_id, c.pod, c.finish, c.reason) for c in fleet.advance(1e5))

    assert run() == run()
