"""gpumix's /metrics from prometheus-client (scaler/telemetry.py): the series and labels the dashboards and
alerts read, `namespace` on every per-model series, content negotiation, process metrics, read-only scrapes."""

from __future__ import annotations

import math

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from optimizer.ids import ModelId, VariantId
from scaler import adapter, telemetry
from scaler.config import Config
from scaler.table import ModelView, Published, Table, VariantView
from tests.service.helpers import sample, samples


def _table() -> Table:
    table = Table()
    def vid(ns: str, name: str) -> VariantId:
        return VariantId(ns, name)

    variants = {
        vid("prod", "m-a100"): VariantView(vid("prod", "m-a100"), "m", "ok", recommendation=3, current=2, held=1,
                                           decided_at=1.0),
        vid("prod", "m-l4"): VariantView(vid("prod", "m-l4"), "m", "missing"),
        vid("dev", "m-a100"): VariantView(vid("dev", "m-a100"), "m", "ok", recommendation=1, current=1, held=0,
                                          decided_at=1.0),
    }
    prod, dev = ModelId("prod", "m"), ModelId("dev", "m")
    models = {
        prod: ModelView(prod, demand_rps=4.5, buckets=((128, 32, 4.5),), data_age=3.0, cost_per_hour=6.0,
                        coverage=1.0),
        dev: ModelView(dev, demand_rps=0.5, buckets=((512, 64, 0.5),), data_age=9.0, cost_per_hour=2.0, coverage=0.5),
    }
    table.publish(Published(variants=variants, models=models, planned_at=1.0))
    table.set_waiting({prod: 2.0, dev: 7.0})
    counters = table.counters
    counters.error("unreachable")
    counters.error("unreachable")
    counters.error("stale")
    counters.solve_seconds.setdefault("prod/m", telemetry.Histogram()).observe(0.02)
    counters.solve_seconds.setdefault("dev/m", telemetry.Histogram()).observe(3.0)
    counters.solver_fallback["dev/m"] = 2
    counters.cycle_seconds.observe(0.3)
    counters.cycle_seconds.observe(20.0)
    return table


def _text(table: Table) -> str:
    return generate_latest(telemetry.registry(table)).decode()


# Every series gpumix served before prometheus-client, with the labels that identify it (now with namespace).
EXPECTED = [
    ("gpumix_up", {}, 1),
    ("gpumix_desired_replicas", {"namespace": "prod", "model": "m", "variant": "m-a100"}, 3),
    ("gpumix_desired_replicas", {"namespace": "dev", "model": "m", "variant": "m-a100"}, 1),
    ("gpumix_current_replicas", {"namespace": "prod", "model": "m", "variant": "m-a100"}, 2),
    ("gpumix_held_replicas", {"namespace": "prod", "model": "m", "variant": "m-a100"}, 1),
    ("gpumix_profile_status", {"namespace": "prod", "model": "m", "variant": "m-l4", "status": "missing"}, 1),
    ("gpumix_profile_status", {"namespace": "prod", "model": "m", "variant": "m-l4", "status": "ok"}, 0),
    ("gpumix_profile_status", {"namespace": "prod", "model": "m", "variant": "m-a100", "status": "ok"}, 1),
    ("gpumix_plan_cost_per_hour", {"namespace": "prod", "model": "m"}, 6.0),
    ("gpumix_plan_cost_per_hour", {"namespace": "dev", "model": "m"}, 2.0),
    ("gpumix_plan_coverage", {"namespace": "dev", "model": "m"}, 0.5),
    ("gpumix_demand_rps", {"namespace": "prod", "model": "m"}, 4.5),
    ("gpumix_data_age_seconds", {"namespace": "dev", "model": "m"}, 9.0),
    ("gpumix_waiting_requests", {"namespace": "prod", "model": "m"}, 2.0),  # the fast path's count
    ("gpumix_waiting_requests", {"namespace": "dev", "model": "m"}, 7.0),
    ("gpumix_demand_bucket_rps", {"namespace": "prod", "model": "m", "input_tokens": "128", "output_tokens": "32"},
     4.5),
    ("gpumix_solve_seconds_bucket", {"namespace": "prod", "model": "m", "le": "0.025"}, 1),
    ("gpumix_solve_seconds_bucket", {"namespace": "prod", "model": "m", "le": "0.01"}, 0),
    ("gpumix_solve_seconds_bucket", {"namespace": "dev", "model": "m", "le": "2.5"}, 0),
    ("gpumix_solve_seconds_bucket", {"namespace": "dev", "model": "m", "le": "5"}, 1),
    ("gpumix_solve_seconds_count", {"namespace": "dev", "model": "m"}, 1),
    ("gpumix_solve_seconds_sum", {"namespace": "dev", "model": "m"}, 3.0),
    ("gpumix_solver_fallback_total", {"namespace": "dev", "model": "m"}, 2),
    ("gpumix_observation_errors_total", {"kind": "unreachable"}, 2),
    ("gpumix_observation_errors_total", {"kind": "stale"}, 1),
    ("gpumix_cycle_seconds_bucket", {"le": "0.5"}, 1),
    ("gpumix_cycle_seconds_bucket", {"le": "10"}, 1),
    ("gpumix_cycle_seconds_bucket", {"le": "+Inf"}, 2),
    ("gpumix_cycle_seconds_count", {}, 2),
]


@pytest.mark.parametrize(("name", "labels", "value"), EXPECTED,
                         ids=[f"{n}{sorted(lab.values())}" for n, lab, _ in EXPECTED])
def test_series_and_labels(name: str, labels: dict[str, str], value: float) -> None:
    found = samples(_text(_table()), name, **labels)
    assert len(found) == 1, found
    got_labels, got = found[0]
    assert got_labels == labels and got == value


@pytest.mark.parametrize("name", ["gpumix_desired_replicas", "gpumix_current_replicas", "gpumix_held_replicas",
                                  "gpumix_profile_status", "gpumix_plan_cost_per_hour", "gpumix_plan_coverage",
                                  "gpumix_demand_rps", "gpumix_data_age_seconds", "gpumix_waiting_requests",
                                  "gpumix_demand_bucket_rps", "gpumix_solve_seconds_bucket",
                                  "gpumix_solver_fallback_total"])
def test_every_per_model_series_carries_the_namespace(name: str) -> None:
    found = samples(_text(_table()), name)
    assert found and all(labels.get("namespace") in ("prod", "dev") and labels.get("model") == "m"
                         for labels, _ in found), found
    # The same model name in two namespaces: two series, never one overwriting the other.
    if name not in ("gpumix_solver_fallback_total", "gpumix_held_replicas", "gpumix_current_replicas"):
        assert {labels["namespace"] for labels, _ in found} == {"prod", "dev"}


def test_families_that_appear_lazily_are_declared_from_the_start() -> None:
    text = _text(Table())
    for family in ("gpumix_solver_fallback_total counter", "gpumix_observation_errors_total counter",
                   "gpumix_solve_seconds histogram", "gpumix_desired_replicas gauge"):
        assert f"# TYPE {family}" in text
    assert sample(text, "gpumix_cycle_seconds_count") == 0


def test_histogram_buckets_are_cumulative() -> None:
    hist = telemetry.Histogram()
    for value in (0.001, 0.3, 0.3, 7.0, 50.0):
        hist.observe(value)
    buckets = dict(hist.buckets())
    assert [buckets[b] for b in ("0.005", "0.25", "0.5", "5", "10", "+Inf")] == [1, 1, 3, 3, 4, 5]
    assert hist.count == 5 and math.isclose(hist.sum, 57.601)


def test_process_metrics_are_served() -> None:
    text = _text(_table())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert samples(text, name), name


def test_a_scrape_reads_and_never_writes() -> None:
    table = _table()
    snapshot, counters = table.published, table.counters
    before = (dict(counters.observation_errors), dict(counters.solver_fallback), counters.cycle_seconds.count)
    first, second = _text(table), _text(table)
    assert table.published is snapshot and table.counters is counters
    assert (dict(counters.observation_errors), dict(counters.solver_fallback), counters.cycle_seconds.count) == before
    strip = [line for line in first.splitlines() if line.startswith("gpumix_")]
    assert strip == [line for line in second.splitlines() if line.startswith("gpumix_")]


@pytest.mark.parametrize(("accept", "content_type"), [
    ("", "text/plain; version=0.0.4"),
    ("text/plain", "text/plain; version=0.0.4"),
    ("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5", "application/openmetrics-text"),
])
async def test_metrics_endpoint_negotiates_the_format(accept: str, content_type: str) -> None:
    app = adapter.make_app(_table(), Config(), clock=lambda: 2.0)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
        body = await response.text()
    assert response.status == 200 and response.headers["Content-Type"].startswith(content_type)
    if content_type.startswith("application/openmetrics-text"):
        assert body.endswith("# EOF\n")
        families = {f.name: f for f in parse_openmetrics(body)}
        assert families["gpumix_solver_fallback"].type == "counter"
        assert families["gpumix_desired_replicas"].samples
    else:
        assert sample(body, "gpumix_desired_replicas", namespace="prod", variant="m-a100") == 3


async def test_aibrix_endpoint_is_unchanged() -> None:
    app = adapter.make_app(_table(), Config(), clock=lambda: 2.0)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics/prod/m-a100")
        body = await response.text()
    assert response.headers["Content-Type"] == adapter.CONTENT_TYPE
    assert 'vllm:deployment_replicas{model_name="m"} 3\n' in body
