"""`gpumix calibrate` against a real Prometheus scraping a vLLM-like exporter, with a real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from optimizer.calibrate import VariantCalibration
from optimizer.profile import load_profile
from scaler.calibration_store import CALIBRATION_KEY, CONTROL_KEY
from scaler.cli import main
from tests.service.helpers import eventually

pytestmark = pytest.mark.integration

@pytest.fixture()
def calibrate(fleet: tuple[Path, str]) -> tuple[list[str], Path]:
    tmp, prometheus = fleet
    args = ["calibrate", "--prometheus", prometheus, "--inventory", str(tmp / "inventory.yaml"), "--profiles",
            str(tmp / "profiles"), "--window", "10s", "--warmup", "0", "--min-completions", "20"]
    return args, tmp


def report(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_observed_capacity_against_the_profile(calibrate: tuple[list[str], Path], redis_url: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    args, tmp = calibrate
    args = [*args, "--redis", redis_url]
    plain = redis.Redis.from_url(redis_url)
    plain.hset(CALIBRATION_KEY, "variant:llm/a40", json.dumps(VariantCalibration(0.9).to_json()))

    def settled() -> dict | None:
        out = report(args, capsys)
        rows = {r["variant"]: r for r in out["variants"]}
        # Ages come from when Prometheus first saw each pod (to 15 s): wait until every pod is past the window.
        ready = rows["llm/a100"].get("replicas_used") == 2 and rows["llm/a40"].get("replicas_used") == 1
        return rows if ready else None

    rows = eventually(settled, timeout=90.0, every=2.0, what="pods older than the window")
    out = report(args, capsys)
    # The model's SLO is the strictest of its profiles' (0.1 s): the a40's 8 of 28 req/s miss it.
    (model,) = out["models"]
    assert model["model"] == "llm/llama2-7b" and model["utilization"] == 0.8
    assert model["observed_attainment"] == pytest.approx(1 - 8.0 / 28.0, abs=0.05)
    a100, a40 = rows["llm/a100"], rows["llm/a40"]
    assert a100["profile_rps"] == pytest.approx(12.0)
    assert a100["load"] == pytest.approx(10.0 / 12.0, rel=0.25)
    assert a100["attainment"] == 1.0 and a100["verdict"] == "uprated"
    assert a100["observed_rps"] > a100["profile_rps"]
    assert a40["load"] == pytest.approx(0.5, rel=0.25)
    assert a40["attainment"] == 0.0 and a40["verdict"] == "derated"
    assert a40["stored_factor"] == 0.9 and a40["would_set"] < 0.9
    assert a40["observed_rps"] < a40["profile_rps"] * a40["load"] * 1.01

    # The table a person reads says the same.
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "llm/a40" in text and "derated" in text and "uprated" in text
    assert "inside bucket" not in text  # both limits sit on vLLM bucket bounds

    # Corrected profiles: the stored factor applied, raw rows kept.
    out_dir = tmp / "corrected"
    assert main([*args, "--write", str(out_dir)]) == 0
    capsys.readouterr()
    assert load_profile(out_dir / "a40.json").capacity[0, 0] == pytest.approx(16.0 * 0.9)
    assert load_profile(out_dir / "a100.json").capacity[0, 0] == pytest.approx(12.0)
    plain.close()


def test_freeze_and_reset_go_to_the_control_hash(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    plain = redis.Redis.from_url(redis_url)
    assert main(["calibrate", "--redis", redis_url, "--freeze", "llm/a40", "--reset-headroom", "llm/llama2-7b"]) == 0
    controls = {k.decode(): json.loads(v) for k, v in plain.hgetall(CONTROL_KEY).items()}
    assert controls["variant:llm/a40"] == {"frozen": True, "reset_at": None}
    assert controls["model:llm/llama2-7b"]["frozen"] is False
    assert controls["model:llm/llama2-7b"]["reset_at"] == pytest.approx(time.time(), abs=30)
    assert main(["calibrate", "--redis", redis_url, "--unfreeze", "llm/a40"]) == 0
    assert json.loads(plain.hget(CONTROL_KEY, "variant:llm/a40"))["frozen"] is False
    capsys.readouterr()
    assert main(["calibrate", "--redis", redis_url, "--freeze", "a40"]) == 2
    assert "namespace/name" in capsys.readouterr().err
    assert main(["calibrate", "--freeze", "llm/a40"]) == 2  # no Redis to keep it in
    plain.close()
