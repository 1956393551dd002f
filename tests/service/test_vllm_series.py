"""gpumix's queries against a real Prometheus scraping vLLM's series as each supported release names them
(tests/service/exporter.py cites vllm/v1/metrics/loggers.py): TPOT under the new and the old name, aborted
requests not counted as served, GPU utilisation of MIG slices from the DCGM field MIG reports."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request

import pytest

from scaler.config import Config
from sim.services import PrometheusServer
from tests.service.exporter import ABORTED_FRACTION, FleetExporter


def _query(prometheus: PrometheusServer, expr: str, at: float | None = None) -> list[dict[str, object]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]


async def _until(prometheus: PrometheusServer, expr: str) -> list[dict[str, object]]:
    for _ in range(80):
        got = _query(prometheus, expr)
        if got:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"no result for {expr}")


@pytest.mark.integration
@pytest.mark.parametrize("vllm", ["0.10", "0.12"])
async def test_queries_read_each_vllm_release(prometheus: PrometheusServer, vllm: str) -> None:
    exporter = FleetExporter("v1", vllm=vllm)
    exporter.set_variant("llm", "m", "m-a40", 2, rps=4.0)
    exporter.set_variant("llm", "m", "m-mig3g", 1, rps=1.0)
    prometheus.reload([exporter.start()])
    config = Config(inventory="unused.yaml", prometheus=prometheus.url, rate_window="5s")
    try:
        tpot = await _until(prometheus, config.query("tpot_p99"))
        assert float(tpot[0]["value"][1]) > 0  # type: ignore[index]
        # One evaluation: what gpumix counts as served over everything the counter holds. Aborted requests
        # are in the counter but not served.
        ratio = await _until(prometheus, f'sum({config.query("completions")}) / '
                                         "sum(rate(vllm:request_success_total[5s]))")
        assert float(ratio[0]["value"][1]) == pytest.approx(1 / (1 + ABORTED_FRACTION), rel=1e-6)  # type: ignore[index]
        util = await _until(prometheus, config.query("gpu_util"))
        by_deployment = {r["metric"]["deployment"]: float(r["value"][1]) for r in util}  # type: ignore[index]
        assert by_deployment == {"m-a40": 50.0, "m-mig3g": 50.0}  # the MIG slice from GR_ENGINE_ACTIVE
    finally:
        exporter.stop()
