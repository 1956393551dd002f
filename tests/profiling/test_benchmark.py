"""The load generator against a local streaming server: measurements, failure counting, resumption,
prompt-length calibration, AIBrix output."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from optimizer.profile import SLO, derive_capacity, parse_benchmark_lines
from scaler.benchmark import (
    Benchmark,
    BenchmarkError,
    Point,
    Unreachable,
    endpoint_url,
    grid_points,
    load_trace,
    read_rows,
)
from sim.services import free_port
from tests.conftest import DATA
from tests.profiling.faulty_openai import CHAT_TEMPLATE_TOKENS, FaultyServer


@pytest.fixture()
async def server() -> AsyncIterator[FaultyServer]:
    s = FaultyServer()
    await s.start()
    yield s
    await s.stop()


def test_endpoint_url_completes_the_path_and_refuses_non_http() -> None:
    assert endpoint_url("http://127.0.0.1:8000", "completions") == "http://127.0.0.1:8000/v1/completions"
    assert endpoint_url("http://127.0.0.1:8000/v1/", "chat") == "http://127.0.0.1:8000/v1/chat/completions"
    assert endpoint_url("http://h:1/v1/completions", "completions") == "http://h:1/v1/completions"
    with pytest.raises(BenchmarkError, match="--url"):
        endpoint_url("127.0.0.1:8000", "completions")
    with pytest.raises(BenchmarkError, match="api"):
        endpoint_url("http://h:1", "embeddings")


def test_grid_points_reports_every_problem() -> None:
    with pytest.raises(BenchmarkError) as err:
        grid_points([0], [], rates=[-1], arrival="bursty", requests=0)
    text = str(err.value)
    for part in ("input lengths", "output lengths", "rates must be positive", "arrival", "requests per point"):
        assert part in text
    with pytest.raises(BenchmarkError, match="either request rates or concurrencies"):
        grid_points([8], [8], rates=[1], concurrencies=[2])
    points = grid_points([16, 32], [4], rates=[4, 1])
    assert [(p.input_tokens, p.rate) for p in points] == [(16, 1.0), (16, 4.0), (32, 1.0), (32, 4.0)]


async def test_measures_a_grid_and_writes_rows(server: FaultyServer, tmp_path: Path) -> None:
    out, aibrix = tmp_path / "rows.jsonl", tmp_path / "aibrix.jsonl"
    bench = Benchmark(server.url, "ok")
    points = grid_points([20], [8], rates=[50.0], requests=12) + grid_points([20], [8], concurrencies=[4],
                                                                              requests=12)
    run = await bench.run(points, out, aibrix_out=aibrix)
    rows = read_rows(out)
    assert len(rows) == 2 and run.rows == rows
    for row in rows:
        assert row["completed"] == 12 and row["errors"] == {} and row["complete"]
        assert row["input_tokens_measured"] == 20 and row["output_tokens_measured"] == 8
        lat = row["latency"]
        assert set(lat) == {"TTFT", "TPOT", "E2E", "ITL"}
        assert 0 < lat["TTFT"]["mean"] < lat["E2E"]["mean"]
        assert lat["TPOT"]["P50"] <= lat["TPOT"]["P99"]
        assert row["tput_rps"] > 0 and row["tokens_per_s"] == pytest.approx(8 * row["tput_rps"])
    closed = rows[1]
    assert closed["mode"] == "concurrency" and closed["concurrency"] == 4
    # The closed loop alone holds its concurrency (the open-loop point before it has no bound: on a loaded
    # machine its 50 req/s overlapped 6 deep); +1 for a request the server has not yet counted out when the
    # client, past [DONE], sends the next.
    server.max_in_flight = 0
    await bench.run(grid_points([20], [8], concurrencies=[4], requests=12), tmp_path / "closed.jsonl")
    assert 0 < server.max_in_flight <= 4 + 1
    # The AIBrix file parses with the profile module and feeds the SLO derivation.
    parsed = parse_benchmark_lines(aibrix.read_text().splitlines(), str(aibrix))
    assert {r.metric for r in parsed} == {"TPUT", "TT", "E2E", "TTFT", "TPOT"}
    grid, cap = derive_capacity(parsed, SLO(percentile="99", e2e=10.0))
    assert grid.inputs == (20,) and cap[0, 0] > 0


# (model, what the point's requests meet): every request failing stops the run after that point.
ALL_FAIL = [("malformed", "malformed_stream"), ("truncated", "malformed_stream")]


@pytest.mark.parametrize(("model", "kind"), ALL_FAIL)
async def test_a_point_whose_every_request_fails_stops_the_run(server: FaultyServer, tmp_path: Path, model: str,
                                                                kind: str) -> None:
    out = tmp_path / "rows.jsonl"
    points = [Point(8, 6, rate=100.0, requests=5), Point(8, 6, rate=200.0, requests=5)]
    run = await Benchmark(server.url, model).run(points, out)
    (row,) = run.rows  # the second point was not attempted
    assert row["completed"] == 0 and row["errors"] == {kind: 5} and not row["complete"]
    assert run.aborted is not None and "every request" in run.aborted and kind in run.aborted
    assert row["tput_rps"] == 0 and row["latency"] == {}


async def test_failures_are_counted_and_the_point_is_not_complete(server: FaultyServer, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    points = [Point(8, 6, concurrency=1, requests=6), Point(8, 6, concurrency=2, requests=6)]
    run = await Benchmark(server.url, "flaky", calibrate=False).run(points, out)
    assert run.aborted is None and len(run.rows) == 2 and run.failed == run.rows
    for row in run.rows:
        assert row["errors"] == {"http_500": 3} and row["completed"] == 3 and not row["complete"]
    # A rerun never skips a point with failures.
    again = await Benchmark(server.url, "flaky", calibrate=False).run(points, out)
    assert not again.skipped and len(again.rows) == 2


UNREACHABLE = [("refused", "connection", "Cannot connect"), ("http500", "http_500", "boom")]


@pytest.mark.parametrize(("case", "kind", "words"), UNREACHABLE)
async def test_unreachable_endpoint_fails_fast_naming_the_connection(server: FaultyServer, tmp_path: Path,
                                                                     case: str, kind: str, words: str) -> None:
    out = tmp_path / "rows.jsonl"
    url = f"http://127.0.0.1:{free_port()}" if case == "refused" else server.url
    with pytest.raises(Unreachable) as err:
        await Benchmark(url, case).run(grid_points([8, 16], [4, 8], rates=[1, 2], requests=50), out)
    assert kind in str(err.value) and words in str(err.value) and url in str(err.value)
    assert not out.exists() or not read_rows(out)
    assert server.requests == (1 if case == "http500" else 0)  # one preflight request, nothing more


async def test_timeouts_and_point_deadline(server: FaultyServer, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    run = await Benchmark(server.url, "slow", request_timeout=0.1, calibrate=False).run(
        [Point(8, 50, concurrency=2, requests=2)], out)
    assert run.rows[0]["errors"] == {"timeout": 2} and not run.rows[0]["complete"] and run.aborted
    # Point deadline: arrivals after it are not sent, in-flight ones are cancelled, all counted.
    run = await Benchmark(server.url, "slow", point_timeout=0.3, calibrate=False).run(
        [Point(8, 50, rate=20.0, arrival="constant", requests=40)], out)
    row = run.rows[0]
    assert not row["complete"] and row["completed"] == 0
    assert row["errors"]["cancelled"] >= 1 and row["errors"]["not_sent"] >= 20
    assert row["errors"]["cancelled"] + row["errors"]["not_sent"] == 40


async def test_rerun_skips_measured_points_and_redoes_interrupted_ones(server: FaultyServer, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    first = grid_points([10], [4], concurrencies=[1, 2], requests=3)
    await Benchmark(server.url, "ok", calibrate=False).run(first, out)
    assert server.requests == 1 + 6  # the preflight request, then the points
    more = grid_points([10], [4], concurrencies=[1, 2, 3], requests=3)
    run = await Benchmark(server.url, "ok", calibrate=False).run(more, out)
    assert len(run.skipped) == 2 and [r["concurrency"] for r in run.rows] == [3]
    assert server.requests == 7 + 1 + 3
    # Another model on the same file is a different point.
    run = await Benchmark(server.url, "nousage", calibrate=False).run(first[:1], out)
    assert len(run.rows) == 1 and run.rows[0]["output_tokens_measured"] == 4  # counted from chunks

    # Ctrl-C mid-point: the partial point is kept, marked incomplete, and measured again next time.
    bench = Benchmark(server.url, "slow", calibrate=False)
    before = server.requests
    task = asyncio.create_task(bench.run([Point(10, 30, concurrency=2, requests=6)], out))
    while server.in_flight == 0 or server.requests < before + 2:  # past the preflight, into the point
        await asyncio.sleep(0.01)
    bench.stop.set()
    run = await task
    assert run.interrupted and not run.rows[0]["complete"]
    assert run.rows[0]["errors"].get("cancelled", 0) >= 1
    run = await Benchmark(server.url, "slow", calibrate=False).run([Point(10, 30, concurrency=2, requests=6)], out)
    assert len(run.rows) == 1 and run.rows[0]["complete"] and run.rows[0]["completed"] == 6
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["format"] == "gpumix.benchmark/v1" for line in lines)


async def test_prompt_length_is_calibrated_on_reported_usage(server: FaultyServer, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    bench = Benchmark(server.url, "ok", api="chat")
    run = await bench.run([Point(40, 4, rate=100.0, requests=4)], out)
    assert run.calibration == {40: 40}
    assert run.rows[0]["input_tokens_measured"] == 40  # the 3 template tokens were taken off the words
    assert CHAT_TEMPLATE_TOKENS == 3


def test_foreign_output_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    out.write_text('{"input_tokens": 1, "metric": "TPUT"}\n')
    with pytest.raises(BenchmarkError, match="line 1"):
        read_rows(out)


def test_trace_loading() -> None:
    trace = load_trace(DATA / "traces" / "azure-llm-2023-code.csv", limit=50, speedup=10.0, max_tokens=2048)
    assert len(trace) == 50 and trace[0].at == 0.0
    assert all(b.at >= a.at for a, b in itertools.pairwise(trace))
    assert max(r.input_tokens for r in trace) <= 2048


async def test_trace_replay(server: FaultyServer, tmp_path: Path) -> None:
    trace = load_trace(DATA / "traces" / "azure-llm-2023-code.csv", limit=8, speedup=50.0, max_tokens=32)
    point = Point(16, 8, requests=len(trace), trace="azure")
    run = await Benchmark(server.url, "ok", calibrate=False).run([point], tmp_path / "t.jsonl", trace=trace)
    row = run.rows[0]
    assert row["mode"] == "trace" and row["completed"] == 8
    assert row["output_tokens_measured"] == pytest.approx(sum(r.output_tokens for r in trace) / 8)
