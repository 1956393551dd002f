"""The service's parts in process: configuration, observation parsing and demand estimation, the gRPC
servicer's stream lifecycle, TLS / mutual TLS, and Prometheus failures (real Prometheus for V0/V1 names)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from optimizer.estimate import LengthFacts, estimate_demand
from optimizer.ids import ModelId, VariantId
from optimizer.profile import Grid
from scaler import keda, metric
from scaler.config import Config, ConfigError, load
from scaler.prometheus import CYCLE_QUERIES, Observer, parse_results
from scaler.table import Published, Table, VariantView
from scaler.vector import Sample
from sim.services import PrometheusServer
from tests.service.exporter import FleetExporter
from tests.service.helpers import pb_grpc, ref

GRID = Grid((128, 256, 512, 1024, 2048), (4, 8, 16, 32, 64, 128, 256, 512))


# ------------------------------------------------------------------------------------ configuration


def test_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gpumix.yaml"
    path.write_text("interval: -1\nutilization: 1.5\nmetrics: v9\nqueries: {nonsense: up}\ncolour: blue\n")
    with pytest.raises(ConfigError) as err:
        load(str(path), {"grpc_port": "x", "prometheus": "ftp://x"}, environ={"GPUMIX_DRAIN_TIME": "soon"})
    text = "\n".join(err.value.problems)
    for needle in ("interval", "utilization", "metrics", "queries.nonsense", "colour", "grpc_port", "prometheus",
                   "drain_time (from $GPUMIX_DRAIN_TIME)", "inventory", "profiles"):
        assert needle in text, needle


def test_config_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "gpumix.yaml"
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("models: []\n")
    path.write_text(f"prometheus: http://127.0.0.1:1\ninventory: {inventory}\nprofiles: {tmp_path}\ninterval: 5\n"
                    "grpc_port: 1000\n")
    config = load(str(path), {"grpc_port": "2000"}, environ={"GPUMIX_INTERVAL": "7", "GPUMIX_GRPC_PORT": "3000"})
    assert (config.interval, config.grpc_port) == (7.0, 2000)
    assert config.stale_after_s == 60.0
    assert "vllm:gpu_cache_usage_perc" in Config(metrics="v0").query("kv_cache")


# ----------------------------------------------------------------------------- observation, demand


def _sample(value: str, **labels: str) -> Sample:
    return Sample(labels, (0.0, value))


def test_parse_drops_nan_inf_negative_and_counts_them() -> None:
    seen: list[str] = []
    results = {
        "completions": [_sample("2.5", namespace="llm", model_name="m", variant="a"),
                        _sample("NaN", namespace="llm", model_name="m", variant="b"),
                        _sample("+Inf", namespace="llm", model_name="m", variant="c"),
                        _sample("-1", namespace="llm", model_name="m", variant="d")],
        "waiting": [_sample("4", namespace="llm", model_name="m", variant="a")],
        "replicas": [_sample("3", namespace="llm", deployment="a")],
    }
    obs = parse_results(Config(), results, {}, 0.0, seen.append)
    facts = obs.models[("llm", "m")]
    assert facts.completions_rps == 2.5 and facts.waiting == 4
    assert obs.invalid_samples == 3 and seen == ["invalid_sample"] * 3
    assert obs.replicas[("llm", "a")] == 3
    assert obs.complete
    assert not parse_results(Config(), results, {"waiting": "timeout"}, 0.0).complete


def test_demand_adds_the_queue_and_spreads_by_histograms() -> None:
    lengths = LengthFacts(prompt_histogram=[(100.0, 0.0), (200.0, 10.0), (500.0, 10.0), (float("inf"), 10.0)],
                          generation_histogram=[(50.0, 0.0), (100.0, 10.0), (float("inf"), 10.0)],
                          prompt_tokens_rps=600.0, generation_tokens_rps=300.0)
    est = estimate_demand("m", 4.0, 30.0, lengths, GRID, drain_time=60.0)
    assert est.source == "histograms"
    assert est.demand.total == pytest.approx(4.0 + 30.0 / 60.0)
    # (100, 200] prompts land in the 128 and 256 buckets; (50, 100] outputs in 64 and 128.
    assert {i for _, i in zip(*est.demand.rates.nonzero(), strict=True)} <= {0, 1}
    assert est.crosscheck == pytest.approx(150.0 / 150.0)
    assert est.requests == 10.0  # the mix was measured on the histogram's 10 requests


def test_demand_from_token_rates_when_histograms_are_missing() -> None:
    lengths = LengthFacts(prompt_tokens_rps=1000.0, generation_tokens_rps=200.0)
    est = estimate_demand("m", 2.0, 0.0, lengths, GRID, drain_time=60.0)
    assert est.source == "token_rates"
    out_i, in_j = GRID.index(500, 100)
    assert est.demand.rates[out_i, in_j] == pytest.approx(2.0)
    bare = estimate_demand("m", 0.0, 6.0, LengthFacts(), GRID, drain_time=60.0)
    assert bare.source == "no_lengths" and bare.demand.rates[-1, -1] == pytest.approx(0.1)
    assert est.requests is None and bare.requests is None  # no mix measured on requests
    empty = LengthFacts(prompt_histogram=[(100.0, 0.0), (float("inf"), 0.0)], generation_histogram=[])
    assert estimate_demand("m", 0.0, 6.0, empty, GRID, drain_time=60.0).requests is None


# ----------------------------------------------------------------------------------- Prometheus


@pytest.mark.integration
async def test_v0_and_v1_names_against_real_prometheus(prometheus: PrometheusServer) -> None:
    v1, v0 = FleetExporter("v1"), FleetExporter("v0")
    v1.set_variant("a", "m1", "m1-a40", 2, rps=4.0)
    v0.set_variant("b", "m0", "m0-a100", 1, rps=2.0, waiting=5)
    for n in range(30):  # variants added do not add queries
        v1.set_variant("a", "m1", f"m1-extra{n}", 1, rps=0.1)
    prometheus.reload([v1.start(), v0.start()])
    try:
        for version, model in (("v1", ("a", "m1")), ("v0", ("b", "m0"))):
            observer = Observer(Config(prometheus=prometheus.url, rate_window="5s", metrics=version))
            obs = None
            for _ in range(60):
                obs = await observer.observe()
                facts = obs.models.get(model)
                if facts and "completions" in facts.seen and facts.prompt_histogram and "coverage" in facts.seen:
                    break
                await asyncio.sleep(0.25)
            assert obs is not None and not obs.errors
            facts = obs.models[model]
            assert facts.completions_rps > 0 and facts.prompt_histogram
            assert all(v.newest_sample for v in facts.variants.values())
            assert observer.queries_sent % len(CYCLE_QUERIES) == 0
        assert obs.models[("b", "m0")].waiting == 5
        assert obs.replicas[("b", "m0-a100")] == 1
    finally:
        v1.stop()
        v0.stop()


class _Failing(BaseHTTPRequestHandler):
    delay = 0.0
    status = 503

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b'{"status":"error"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def failing_server() -> Iterator[tuple[str, type[_Failing]]]:
    handler = type("Handler", (_Failing,), {})
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 64})  # 14 queries at once
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


async def test_prometheus_5xx_timeout_unreachable_are_classified(failing_server: tuple[str, type[_Failing]]) -> None:
    url, handler = failing_server
    kinds: list[str] = []
    observer = Observer(Config(prometheus=url, prometheus_timeout=0.3), on_error=kinds.append)
    obs = await observer.observe()
    assert set(obs.errors.values()) == {"http_5xx"} and not obs.complete
    handler.delay = 1.0
    obs = await observer.observe()
    assert set(obs.errors.values()) == {"timeout"}
    dead = Observer(Config(prometheus="http://127.0.0.1:9", prometheus_timeout=0.3))
    assert set((await dead.observe()).errors.values()) == {"unreachable"}
    assert {"http_5xx", "timeout"} <= set(kinds)


# ----------------------------------------------------------------------------------------- gRPC


def _table() -> Table:
    table = Table()
    vid = VariantId("llm", "m-a40")
    view = VariantView(vid, "m", "ok", recommendation=0, decided_at=time.time(), current=0)
    table.publish(Published(variants={vid: view}))
    return table


async def test_streams_end_cleanly_when_clients_go_away() -> None:
    table = _table()
    server = await keda.start(table, Config(grpc_port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            calls = [stub.StreamIsActive(ref("m", "m-a40")) for _ in range(50)]
            firsts = await asyncio.gather(*(c.read() for c in calls))
            assert all(f.result is False for f in firsts)
            assert server.scaler.open_streams == 50
            table.set_waiting({ModelId("llm", "m"): 2.0})
            pushed = await asyncio.gather(*(c.read() for c in calls))
            assert all(p.result is True for p in pushed)
            for c in calls:
                c.cancel()
            for _ in range(100):
                if server.scaler.open_streams == 0:
                    break
                await asyncio.sleep(0.05)
            assert server.scaler.open_streams == 0
            # the server still answers after all that
            assert (await stub.IsActive(ref("m", "m-a40"))).result is True
    finally:
        await server.stop(0)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(d / f"{name}.crt"))
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


async def test_mutual_tls(certs: dict[str, Path]) -> None:
    config = Config(grpc_port=0, tls_cert=str(certs["server_crt"]), tls_key=str(certs["server_key"]),
                    tls_client_ca=str(certs["ca_crt"]))
    server = await keda.start(_table(), config)
    try:
        good = grpc.ssl_channel_credentials(certs["ca_crt"].read_bytes(), certs["client_key"].read_bytes(),
                                            certs["client_crt"].read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", good) as channel:
            spec = await pb_grpc.ExternalScalerStub(channel).GetMetricSpec(ref("m", "m-a40"), timeout=5)
            assert spec.metricSpecs[0].metricName == "gpumix-llm-m-a40"
        no_client_cert = grpc.ssl_channel_credentials(certs["ca_crt"].read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", no_client_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.ExternalScalerStub(channel).GetMetricSpec(ref("m", "m-a40"), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_health_and_reflection() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = await keda.start(_table(), Config(grpc_port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=keda.SERVICE))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = [s.name async for r in stream for s in r.list_services_response.service]
            assert keda.SERVICE in names
            stream2 = pb_grpc.ExternalScalerStub(channel).StreamIsActive(ref("m", "m-a40"))
            assert (await stream2.read()).result is False
            stream2.cancel()
    finally:
        await server.stop(0)


def test_metric_name_is_path_safe() -> None:
    assert metric.metric_name("LLM", "DeepSeek_Coder.7b/V100") == "gpumix-llm-deepseek-coder-7b-v100"
    assert metric.report_value(0, 3, 1.0) == 0.0
    assert metric.report_value(11, 10, 1.0) >= 11.0 * 1.0  # leaves the HPA's 10 % dead band
