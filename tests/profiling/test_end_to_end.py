"""End to end against the simulator's real-time OpenAI endpoint: benchmark a small grid, profile it, store
the profile in a real Redis, and check that `gpumix serve` (a subprocess) reads it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from optimizer.autofit import calibrate_rows
from optimizer.profile import parse_profile
from scaler.benchmark import Benchmark, grid_points, read_rows
from scaler.cli import main
from scaler.commands.profile import load_rows
from sim.fleet import load_fleet
from sim.realtime import RealtimeFleet, ServerThread
from sim.services import PrometheusServer, free_port
from tests.conftest import REPO
from tests.service.helpers import sample

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def test_benchmark_profile_store_and_serve_reads_it(tmp_path: Path, redis_url: str,
                                                    prometheus: PrometheusServer) -> None:
    spec = load_fleet()
    variant = next(v for v in spec.variants if v.accelerator == "A100-80GB")
    one = dataclasses.replace(variant, initial_replicas=1, cold_start_s=0.0)
    fleet = RealtimeFleet(dataclasses.replace(spec, variants=(one,)), seed=1)
    rows_file = tmp_path / "rows.jsonl"
    points = grid_points([64, 512], [16], concurrencies=[1, 8], requests=8)
    with ServerThread(fleet) as srv:
        bench = Benchmark(srv.url, spec.model, point_timeout=60, request_timeout=30)
        run = asyncio.run(bench.run(points, rows_file))
        assert len(run.rows) == 4 and not run.interrupted
        assert run.calibration == {64: 64, 512: 512}  # the simulator counts one token per word
        # A re-run measures nothing: every point is in the file.
        again = asyncio.run(Benchmark(srv.url, spec.model).run(points, rows_file))
        assert again.rows == [] and len(again.skipped) == 4
    rows = read_rows(rows_file)
    assert all(r["completed"] == 8 and r["errors"] == {} for r in rows)
    by = {(r["input_tokens"], r["concurrency"]): r for r in rows}
    # The engine's TPOT = a·B + c: eight in flight decode slower per token than one, and faster in total.
    for n in (64, 512):
        assert by[(n, 8)]["latency"]["TPOT"]["mean"] > by[(n, 1)]["latency"]["TPOT"]["mean"]
        assert by[(n, 8)]["tokens_per_s"] > 2 * by[(n, 1)]["tokens_per_s"]
    # The fit on these measurements finds the simulated replica's per-step time; at 8 in flight the client
    # also sees the prefills of new arrivals stalling decode steps, so TPOT is at least the engine's a·8 + c.
    perf = one.perf
    scale, fits = calibrate_rows(load_rows([rows_file], None).rows, spec.model, "A100-80GB")
    fit = fits[(512, 16)]
    assert fit.c == pytest.approx(perf.c, rel=0.25) and fit.a > 0
    assert fit.tpot(8) >= 0.9 * perf.tpot(8, 512 + 8)
    assert scale.reference == "A100-80GB" and scale.decode_c > 0

    slo_tpot = 2 * by[(512, 8)]["latency"]["TPOT"]["P99"]
    code = main(["profile", str(rows_file), "--slo", f"tpot={slo_tpot}", "--variant", one.name,
                 "--accelerator", one.accelerator, "--cost", "3.67", "--out", str(tmp_path / "p.json"),
                 "--plot", str(tmp_path / "p.png"), "--to", f"{redis_url}?model={spec.model}"])
    assert code == 0
    stored = redis.Redis.from_url(redis_url).get(f"gpumix:profile:{spec.model}:{one.name}")
    profile = parse_profile(json.loads(stored))
    assert profile.variant == one.name and profile.grid.inputs == (64, 512) and profile.capacity.min() > 0

    (tmp_path / "inventory.yaml").write_text(
        f"models:\n- name: {spec.model}\n  namespace: llm\n  variants:\n"
        f"  - {{name: {one.name}, accelerator: {one.accelerator}, max_replicas: 4}}\n")
    (tmp_path / "profiles").mkdir()
    http_port = free_port()
    env = {**os.environ, "GPUMIX_LOG_FORMAT": "json", "GPUMIX_PROMETHEUS_TIMEOUT": "1"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", prometheus.url, "--redis", redis_url,
         "--inventory", str(tmp_path / "inventory.yaml"), "--profiles", str(tmp_path / "profiles"),
         "--grpc-port", str(free_port()), "--http-port", str(http_port), "--interval", "0.5"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO)
    try:
        def profile_ok(text: str) -> bool:
            return sample(text, "gpumix_profile_status", model=spec.model, variant=one.name, status="ok") == 1

        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and not profile_ok(text):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
            text = _metrics(http_port)
        assert profile_ok(text), (text[-2000:], log.read_text()[-2000:])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
