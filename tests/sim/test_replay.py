"""Replay: trace parsing, determinism for a seed, and sane policy outputs on a short slice of the Azure trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.fleet import load_fleet
from sim.policies import Trace, make_policies
from sim.replay import TraceError, load_trace, replay

AZURE = Path(__file__).resolve().parents[2] / "data" / "traces" / "azure-llm-2023-code.csv"


@pytest.fixture(scope="module")
def spec():
    return load_fleet()


@pytest.fixture(scope="module")
def short_trace() -> Trace:
    full = load_trace(AZURE)
    keep = full.times < 600.0  # ten minutes, with the trace's first bursts
    return Trace(full.times[keep], full.prompts[keep], full.outputs[keep])


def test_azure_and_mooncake_traces_load(tmp_path):
    azure = load_trace(AZURE)
    assert len(azure) == 8819 and azure.times[0] == 0.0 and np.all(np.diff(azure.times) >= 0)
    assert 3000 < azure.duration < 3700
    lines = [json.dumps({"timestamp": ms, "input_length": 100 + ms, "output_length": 10, "hash_ids": [1]})
             for ms in (0, 500, 2000)]
    path = tmp_path / "mooncake.jsonl"
    path.write_text("\n".join(lines) + "\n")
    mc = load_trace(path, speedup=2.0)
    assert list(mc.times) == [0.0, 0.25, 1.0] and list(mc.prompts) == [100, 600, 2100]


def test_bad_trace_names_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,12,x\n")
    with pytest.raises(TraceError, match="line 2"):
        load_trace(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,in,out\n1,2,3\n")
    with pytest.raises(TraceError, match="header"):
        load_trace(wrong)


def test_gpumix_replay_is_deterministic_for_a_seed(spec, short_trace):
    a = replay(spec, short_trace, make_policies(spec, "gpumix")[0], seed=5)
    b = replay(spec, short_trace, make_policies(spec, "gpumix")[0], seed=5)
    assert a.to_json() == b.to_json()
    assert a.series.replicas == b.series.replicas


def test_policies_give_sane_results(spec, short_trace):
    results = {p.name: replay(spec, short_trace, p) for p in make_policies(spec, "all")}
    assert set(results) >= {"gpumix", "static-peak", "oracle"} | {f"hpa-queue:{v}" for v in spec.names}
    for r in results.values():
        assert r.requests == len(short_trace)  # every request accounted for
        assert 0.0 <= r.attainment <= 1.0 and r.cost > 0
        assert r.cost == pytest.approx(sum(r.cost_by_variant.values()))
    static = results["static-peak"]
    assert static.scale_events == 0 and sum(1 for v in static.gpu_hours.values() if v > 0) == 1
    for name, r in results.items():
        if name.startswith("hpa-queue:"):
            used = [v for v, h in r.gpu_hours.items() if h > 0]
            assert used == [name.split(":", 1)[1]]
    # the oracle knows the future and has no cold start: nothing that must wait for a pod costs less
    assert results["oracle"].cost < results["gpumix"].cost
    assert results["gpumix"].attainment > max(r.attainment for n, r in results.items() if n.startswith("hpa-queue"))


def test_unknown_policy_is_refused(spec):
    with pytest.raises(ValueError, match="policy 'nope'"):
        make_policies(spec, "nope")


def test_the_replay_command_offers_the_engines_routings() -> None:
    import argparse

    from scaler.commands.replay import add_arguments
    from sim.engine import DEFAULT_ROUTING, ROUTING

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "routing"]
    assert tuple(action.choices or ()) == ROUTING and action.default == DEFAULT_ROUTING


def test_worst_minute_counts_misses_by_arrival_minute() -> None:
    from sim.engine import Completion
    from sim.replay import Result, worst_minute

    spec = load_fleet()
    ok = {"first_token": 0.5, "finish": 1.0}  # TTFT 0.5 s, 10 tokens at 0.05 s: within the SLO
    late = {"first_token": 30.0, "finish": 31.0}  # TTFT past every limit
    rows = [(10.0, ok), (70.0, late), (80.0, late), (90.0, ok), (130.0, late)]
    done = [Completion(i, t, 100, 10, finish=t + d["finish"], first_token=t + d["first_token"])
            for i, (t, d) in enumerate(rows)]
    result = Result("p", len(done), 0.0, 0.4, 0, 0, 0, 0, 0, 0, {}, {}, 180.0, completions=done)
    assert worst_minute(spec, result) == (1, 2, 3)
    assert worst_minute(spec, Result("p", 1, 0.0, 1.0, 0, 0, 0, 0, 0, 0, {}, {}, 60.0, completions=done[:1])) is None


def test_minutes_trace_a_run_by_arrival_minute(spec, short_trace):
    """Every request counted once, under the minute it arrived and the variant that served it; the replicas
    shown are the ones running at the minute's start."""
    from sim.replay import minutes

    (policy,) = make_policies(spec, "static-peak")
    result = replay(spec, short_trace, policy, seed=0)
    rows = minutes(spec, result)
    assert [r.minute for r in rows] == list(range(len(rows)))
    assert sum(r.arrivals for r in rows) == len(result.completions)
    assert all(r.missed.get(v, 0) <= n for r in rows for v, n in r.served.items())
    assert sum(sum(r.missed.values()) for r in rows) == round(len(result.completions) * (1 - result.attainment))
    fixed = {v: n for v, n in rows[0].replicas.items()}
    assert fixed and all(r.replicas == fixed for r in rows)  # static: the same fleet, ready, every minute
    assert all(n == ready for n, ready in fixed.values())
