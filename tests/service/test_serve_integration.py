"""`gpumix serve` as users run it (a subprocess), against a real Prometheus scraping the test exporter and a
real Redis, driven over a real gRPC channel by a client generated from proto/externalscaler.proto.

The scenario runs in order on one service: answers, bad requests, scale-from-zero push, the HTTP adapter,
a Prometheus outage, a Redis outage, then a restart that must continue the same windows from Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import redis

from optimizer.hpa import desired_replicas
from optimizer.profile import load_profile
from sim.services import PrometheusServer, RedisServer, free_port, start_prometheus, start_redis
from tests.conftest import DATA, REPO
from tests.service.exporter import FleetExporter
from tests.service.helpers import (
    A40,
    A100,
    IDLE_MODEL,
    IDLE_VARIANT,
    INVENTORY,
    L4,
    MODEL,
    NS,
    eventually,
    pb,
    pb_grpc,
    ref,
    sample,
    samples,
)

pytestmark = pytest.mark.integration

STALE_AFTER = 4.0



@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


@dataclass
class World:
    tmp: Path
    exporter: FleetExporter
    target: str
    prometheus: PrometheusServer
    redis: RedisServer
    service: Service
    stub: pb_grpc.ExternalScalerStub
    channel: grpc.Channel

    def start_service(self) -> Service:
        grpc_port, http_port = free_port(), free_port()
        log = self.tmp / f"serve-{grpc_port}.log"
        env = {**os.environ, "GPUMIX_LOG_FORMAT": "json", "GPUMIX_RATE_WINDOW": "5s", "GPUMIX_SCRAPE_INTERVAL": "1",
               "GPUMIX_FAST_INTERVAL": "0.3", "GPUMIX_STALE_AFTER": str(STALE_AFTER),
               "GPUMIX_MAX_SAMPLE_AGE": "10", "GPUMIX_PROMETHEUS_TIMEOUT": "1"}
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", self.prometheus.url, "--redis", self.redis.url,
             "--inventory", str(self.tmp / "inventory.yaml"), "--profiles", str(self.tmp / "profiles"),
             "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--interval", "0.5"],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO,
        )
        service = Service(proc, grpc_port, http_port, log)
        eventually(lambda: service.http("/healthz")[0] == 200, what="gpumix serve /healthz")
        self.service = service
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = pb_grpc.ExternalScalerStub(self.channel)
        return service

    def metrics(self, variant: str) -> pb.GetMetricsResponse:
        r = ref(MODEL, variant)
        return self.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=r, metricName=f"s0-gpumix-{NS}-{variant}"),
                                    timeout=3)

    def desired(self, variant: str, gauge: str = "gpumix_desired_replicas") -> int | None:
        value = sample(self.service.http("/metrics")[1], gauge, namespace=NS, variant=variant)
        return None if value is None else int(value)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "inventory.yaml").write_text(INVENTORY)
    profiles = tmp / "profiles"
    profiles.mkdir()
    shutil.copy(DATA / "aibrix" / f"{A40}.json", profiles)  # AIBrix file in the directory
    exporter = FleetExporter("v1")
    exporter.set_variant(NS, MODEL, A40, 2, rps=6.0)
    exporter.set_variant(NS, MODEL, A100, 0)
    exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0)
    target = exporter.start()
    (tmp / "prom").mkdir()
    (tmp / "redis").mkdir()
    prometheus = start_prometheus(tmp / "prom", [target])
    redis_server = start_redis(tmp / "redis")
    client = redis.Redis.from_url(redis_server.url)
    # The A100 profile as AIBrix's GPU optimizer stores it, and the idle model's in our own format.
    client.set(f"aibrix:profile_{MODEL}_{A100}", (DATA / "aibrix" / f"{A100}.json").read_text())
    idle = replace(load_profile(DATA / "aibrix" / f"{A40}.json"), model=IDLE_MODEL, variant=IDLE_VARIANT)
    client.set(f"gpumix:profile:{IDLE_MODEL}:{IDLE_VARIANT}", json.dumps(idle.to_json()))
    client.close()
    w = World(tmp, exporter, target, prometheus, redis_server, None, None, None)  # type: ignore[arg-type]
    w.start_service()
    try:
        yield w
    finally:
        w.channel.close()
        w.service.stop()
        w.prometheus.stop()
        w.redis.stop()
        exporter.stop()
        if sys.exc_info()[0] is not None:
            print(w.service.log.read_text()[-5000:])


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("expected a gRPC error")


def test_answers_like_keda_expects(world: World) -> None:
    response = eventually(lambda: world.metrics(A40), what="a first recommendation")
    assert len(response.metricValues) == 1
    value = response.metricValues[0]
    assert value.metricName == f"gpumix-{NS}-{A40}"
    desired = world.desired(A40)
    assert desired is not None and desired >= 1
    # 6 req/s of (500, 100)-token requests on A40s (5.3 req/s each at 80 %) needs 2 of them.
    eventually(lambda: world.desired(A40) == 2, what="a40 planned at 2")
    value = world.metrics(A40).metricValues[0]
    assert desired_replicas(value.metricValueFloat, 1.0, current=2) == 2
    assert value.metricValue == 2

    spec = world.stub.GetMetricSpec(ref(MODEL, A40), timeout=3)
    assert len(spec.metricSpecs) == 1
    assert spec.metricSpecs[0].metricName == f"gpumix-{NS}-{A40}" == spec.metricSpecs[0].metricName.lower()
    assert spec.metricSpecs[0].targetSizeFloat == 1.0 and spec.metricSpecs[0].targetSize == 1
    spec = world.stub.GetMetricSpec(ref(MODEL, A40, target="100"), timeout=3)
    assert spec.metricSpecs[0].targetSizeFloat == 100.0 and spec.metricSpecs[0].targetSize == 100
    scaled = world.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, A40, target="100"),
                                                        metricName=f"gpumix-{NS}-{A40}".upper()), timeout=3)
    assert desired_replicas(scaled.metricValues[0].metricValueFloat, 100.0, current=2) == 2

    assert world.stub.IsActive(ref(MODEL, A40), timeout=3).result is True
    assert world.stub.IsActive(ref(MODEL, A100), timeout=3).result is ((world.desired(A100) or 0) > 0)


def test_bad_metadata_names_the_key(world: World) -> None:
    r = pb.ScaledObjectRef(name="so", namespace=NS, scalerMetadata={"model": MODEL})
    code, details = _code(lambda: world.stub.GetMetricSpec(r, timeout=3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'variant'" in details
    code, details = _code(lambda: world.stub.GetMetricSpec(ref(MODEL, A40, replicas="3"), timeout=3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'replicas'" in details
    code, details = _code(lambda: world.stub.GetMetrics(
        pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, A40, target="-1"), metricName=""), timeout=3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'target'" in details
    code, details = _code(lambda: world.stub.GetMetrics(
        pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, A40), metricName="s0-something-else"), timeout=3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metricName" in details
    # IsActive never errors, even on a request it cannot use.
    assert world.stub.IsActive(r, timeout=3).result is False


def test_unknown_or_unprofiled_is_not_found(world: World) -> None:
    code, details = _code(lambda: world.stub.GetMetricSpec(ref("no-such-model", A40), timeout=3))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-model" in details
    code, details = _code(lambda: world.stub.GetMetrics(
        pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, "llama2-7b-h100")), timeout=3))
    assert code == grpc.StatusCode.NOT_FOUND and "llama2-7b-h100" in details
    code, details = _code(
        lambda: world.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, L4)), timeout=3))
    assert code == grpc.StatusCode.NOT_FOUND and "no usable profile" in details
    code, _ = _code(lambda: world.stub.GetMetricSpec(ref(MODEL, A40, namespace="other"), timeout=3))
    assert code == grpc.StatusCode.NOT_FOUND
    text = world.service.http("/metrics")[1]
    assert sample(text, "gpumix_profile_status", namespace=NS, model=MODEL, variant=L4, status="missing") == 1


def test_stream_pushes_true_when_an_idle_model_sees_demand(world: World) -> None:
    eventually(lambda: world.desired(IDLE_VARIANT) == 0, what="idle model planned at 0")
    stream = world.stub.StreamIsActive(ref(IDLE_MODEL, IDLE_VARIANT), timeout=30)
    first = next(stream)
    assert first.result is False
    world.exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0, waiting=3)
    pushed = next(stream)  # blocks until the fast path sees the queue
    assert pushed.result is True
    stream.cancel()
    assert world.stub.IsActive(ref(IDLE_MODEL, IDLE_VARIANT), timeout=3).result is True
    world.exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0)


def test_http_adapter(world: World) -> None:
    status, body = world.service.http(f"/metrics/{NS}/{A40}")
    assert status == 200
    assert f'vllm:deployment_replicas{{model_name="{MODEL}"}} {world.desired(A40)}' in body
    assert world.service.http(f"/metrics/{NS}/nope")[0] == 404
    assert world.service.http(f"/metrics/{NS}/{L4}")[0] == 404
    assert world.service.http("/healthz")[0] == 200
    assert world.service.http("/readyz")[0] == 200
    text = world.service.http("/metrics")[1]
    assert sample(text, "gpumix_up") == 1
    assert sample(text, "gpumix_cycle_seconds_count") >= 1  # type: ignore[operator]
    # Per-model series carry the namespace: the same model name may be served in two namespaces.
    for name in ("gpumix_plan_cost_per_hour", "gpumix_plan_coverage", "gpumix_demand_rps",
                 "gpumix_demand_bucket_rps", "gpumix_solve_seconds_bucket", "gpumix_data_age_seconds",
                 "gpumix_current_replicas", "gpumix_waiting_requests"):
        assert samples(text, name, namespace=NS, model=MODEL), name
    assert samples(text, "process_cpu_seconds_total"), "process metrics from prometheus-client"


def test_prometheus_outage_keeps_the_fleet_then_goes_unavailable(world: World) -> None:
    before = world.desired(A40)
    port, workdir = world.prometheus.port, world.prometheus.config.parent
    world.prometheus.stop()
    # Last good recommendation stands (never a shrink), IsActive still answers.
    assert world.metrics(A40).metricValues[0].metricValue == before
    assert world.stub.IsActive(ref(MODEL, A40), timeout=3).result is True
    eventually(lambda: sample(world.service.http("/metrics")[1], "gpumix_observation_errors_total",
                              kind="unreachable"), what="unreachable counted")
    eventually(lambda: _code(lambda: world.metrics(A40))[0] == grpc.StatusCode.UNAVAILABLE,
               timeout=STALE_AFTER + 10, what="UNAVAILABLE after stale_after")
    assert world.desired(A40) == before
    assert world.stub.IsActive(ref(MODEL, A40), timeout=3).result is True
    assert world.service.http("/readyz")[0] == 503
    world.prometheus = start_prometheus(workdir, [world.target], port=port)
    eventually(lambda: world.metrics(A40), timeout=30, what="recovery after Prometheus restart")
    assert world.service.proc.poll() is None


def test_redis_outage_is_survived(world: World) -> None:
    port, workdir = world.redis.port, Path(world.redis.url and world.tmp / "redis")
    world.redis.stop()
    world.exporter.set_variant(NS, MODEL, A40, 2, rps=14.0)
    eventually(lambda: world.desired(A40) == 3, what="re-planned without Redis")
    assert world.metrics(A40).metricValues[0].metricValue >= 3
    world.redis = start_redis(workdir, port=port)  # empty: state was in memory only
    client = redis.Redis.from_url(world.redis.url)
    try:
        client.set(f"aibrix:profile_{MODEL}_{A100}", (DATA / "aibrix" / f"{A100}.json").read_text())
        idle = replace(load_profile(DATA / "aibrix" / f"{A40}.json"), model=IDLE_MODEL, variant=IDLE_VARIANT)
        client.set(f"gpumix:profile:{IDLE_MODEL}:{IDLE_VARIANT}", json.dumps(idle.to_json()))
        eventually(lambda: client.hget("gpumix:state", f"{NS}/{A40}"), what="state written again")
    finally:
        client.close()
    assert world.service.proc.poll() is None


def test_restart_continues_the_same_windows(world: World) -> None:
    eventually(lambda: world.desired(A40) == 3, what="a40 at 3")
    world.channel.close()
    assert world.service.stop() == 0  # SIGTERM: clean exit
    client = redis.Redis.from_url(world.redis.url)
    try:
        state = json.loads(client.hget("gpumix:state", f"{NS}/{A40}"))
    finally:
        client.close()
    assert state["replicas"] == 3 and any(n == 3 for _, n in state["history"])
    # Demand falls while the service is down: a fresh service would plan 1, but the HPA still holds 3 inside
    # its 300 s scale-down window, and the restarted service knows it from Redis.
    world.exporter.set_variant(NS, MODEL, A40, 3, rps=2.0)
    world.start_service()
    eventually(lambda: world.metrics(A40), what="first answer after restart")
    lines = [json.loads(line) for line in world.service.log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "state_restored" for e in lines)
    # The restarted service knows the HPA still holds 3 (its window started before the restart) ...
    assert world.desired(A40, "gpumix_held_replicas") == 3
    # ... and publishes what the lower demand needs, so the hold ages out rather than being renewed.
    eventually(lambda: world.desired(A40) == 1, what="steady count published")
    value = world.metrics(A40).metricValues[0].metricValueFloat
    assert desired_replicas(value, 1.0, current=3) == 1
