"""`gpumix serve` calibrating as users run it: a subprocess against the real Prometheus and exporter of
conftest.py and a real Redis. A variant whose requests miss its profile's SLO is derated, the change is logged
with its evidence, stored in Redis and exported; a restarted service starts from what was stored; an
operator's freeze holds the factor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from scaler.calibration_store import CALIBRATION_KEY
from scaler.cli import main
from sim.services import free_port
from tests.conftest import REPO
from tests.service.helpers import eventually, sample

pytestmark = pytest.mark.integration

def serve(tmp: Path, prometheus: str, redis_url: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    http_port = free_port()
    log = tmp / f"serve-{http_port}.log"
    env = {**os.environ, "GPUMIX_LOG_FORMAT": "json", "GPUMIX_RATE_WINDOW": "5s", "GPUMIX_SCRAPE_INTERVAL": "1",
           "GPUMIX_MAX_SAMPLE_AGE": "10", "GPUMIX_CALIBRATION_WINDOW": "10s", "GPUMIX_CALIBRATION_INTERVAL": "1",
           "GPUMIX_CALIBRATION_WARMUP": "0"}
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", prometheus, "--redis", redis_url,
         "--inventory", str(tmp / "inventory.yaml"), "--profiles", str(tmp / "profiles"),
         "--grpc-port", str(free_port()), "--http-port", str(http_port), "--interval", "0.5"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO)
    return proc, http_port, log


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        return str(r.read().decode())


def factor(port: int, variant: str) -> float | None:
    return sample(metrics(port), "gpumix_calibration_factor", namespace="llm", variant=variant)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)


def test_serve_derates_stores_and_restarts_from_redis(fleet: tuple[Path, str], redis_url: str) -> None:
    tmp, prometheus = fleet
    store = redis.Redis.from_url(redis_url)
    proc, port, log = serve(tmp, prometheus, redis_url)
    try:
        derated = eventually(lambda: (f := factor(port, "a40")) is not None and f < 1.0 and f, timeout=90.0,
                             every=1.0, what="the a40's factor derated")
        assert derated >= 0.25  # the operator's lower bound
        stored = json.loads(store.hget(CALIBRATION_KEY, "variant:llm/a40") or "{}")
        assert stored["factor"] < 1.0
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        changes = [e for e in lines if e.get("event") == "calibration_changed" and e["entry"] == "variant:llm/a40"]
        assert changes and changes[0]["outcome"] == "derated" and changes[0]["attainment"] == 0.0
        assert changes[0]["load"] == pytest.approx(0.5, rel=0.3)  # the evidence the change rests on
    finally:
        stop(proc)

    # An operator freezes the variant; the restarted service starts from Redis and keeps the factor.
    assert main(["calibrate", "--redis", redis_url, "--freeze", "llm/a40"]) == 0
    kept = json.loads(store.hget(CALIBRATION_KEY, "variant:llm/a40") or "{}")["factor"]
    proc, port, _ = serve(tmp, prometheus, redis_url)
    try:
        first = eventually(lambda: factor(port, "a40"), timeout=30.0, what="the restored factor on /metrics")
        assert first == pytest.approx(kept)
        frozen = eventually(lambda: sample(metrics(port), "gpumix_calibration_frozen", namespace="llm",
                                           variant="a40") == 1.0, timeout=30.0, what="the freeze applied")
        assert frozen
        for _ in range(5):  # further misses, a step a second, do not move a frozen factor
            assert factor(port, "a40") == pytest.approx(kept)
            time.sleep(1.0)
    finally:
        stop(proc)
        store.close()
