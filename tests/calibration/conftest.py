"""The fleet the calibration's integration tests run against: a real Prometheus scraping the test exporter,
profile files and an inventory. The a100 serves within its profile's SLO; every a40 request misses its."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from optimizer.profile import SLO, Grid, Profile
from sim.services import PrometheusServer
from tests.service.exporter import FleetExporter

GRID = Grid((1024,), (256,))  # every request of the exporter's falls in this one bucket (the last)


def profile(variant: str, rps: float, ttft: float) -> Profile:
    return Profile("llama2-7b", variant, variant.upper(), 2.0, SLO(percentile="99", ttft=ttft), GRID,
                   np.array([[rps]]))


@pytest.fixture()
def fleet(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[tuple[Path, str]]:
    """(directory holding `profiles/` and `inventory.yaml`, Prometheus URL)."""
    exporter = FleetExporter()
    # a100: 2 replicas at 10 req/s each against a claimed 12 → load 0.83, TTFT 0.075 s well under 1 s.
    exporter.set_variant("llm", "llama2-7b", "a100", replicas=2, rps=20.0)
    # a40: 8 req/s against a claimed 16 → load 0.5, but every TTFT (0.15 s: long prompts) misses its 0.1 s limit.
    exporter.set_variant("llm", "llama2-7b", "a40", replicas=1, rps=8.0, prompt_tokens=2000)
    prometheus.reload([exporter.start()])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for p in (profile("a100", 12.0, 1.0), profile("a40", 16.0, 0.1)):
        (profiles / f"{p.variant}.json").write_text(json.dumps(p.to_json()))
    (tmp_path / "inventory.yaml").write_text("models:\n- name: llama2-7b\n  namespace: llm\n  variants:\n"
                                             "  - {name: a100, max_replicas: 8}\n  - {name: a40, max_replicas: 8}\n")
    try:
        yield tmp_path, prometheus.url
    finally:
        exporter.stop()
