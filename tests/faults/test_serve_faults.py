"""Faults against a running `gpumix serve` (a subprocess) as an operator meets them: Prometheus behind the
fault proxy, a real Redis, a profile directory, KEDA's calls over a real gRPC channel. One row per fault;
each asserts what the operator sees (a log line, a /metrics counter or status, a gRPC code and message) and
that no recommendation decreases while the fault lasts (read as KEDA does: GetMetrics, through the HPA's
arithmetic, and the adapter's gauge). Then start-up faults (ports, configuration), restarts with garbage in
the state hash, and `gpumix benchmark` against nothing.

Rows are short (a few control cycles at interval 0.5 s) and run in order on one service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from optimizer.hpa import desired_replicas
from sim.services import PrometheusServer, RedisServer, free_port, start_prometheus, start_redis
from tests.conftest import DATA, REPO
from tests.faults.proxy import Fault, FaultProxy
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
)

pytestmark = pytest.mark.integration

STALE_AFTER = 8.0
ROW_S = 1.5  # how long each fault lasts: three cycles, well inside stale_after
ENV = {"GPUMIX_LOG_FORMAT": "json", "GPUMIX_RATE_WINDOW": "5s", "GPUMIX_SCRAPE_INTERVAL": "1",
       "GPUMIX_FAST_INTERVAL": "0.3",
       "GPUMIX_STALE_AFTER": str(STALE_AFTER), "GPUMIX_MAX_SAMPLE_AGE": "10", "GPUMIX_PROMETHEUS_TIMEOUT": "1"}
WAITING_QUERY = 'sum by (namespace, model_name, variant) (vllm:num_requests_waiting)'


def gpumix(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / ".venv/bin/gpumix"), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **ENV, **(env or {})}, timeout=timeout)


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log: Path
    channel: grpc.Channel
    stub: pb_grpc.ExternalScalerStub

    def http(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()[since:]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def mark(self) -> int:
        return len(self.log.read_text().splitlines())

    def get_metrics(self, variant: str, model: str = MODEL) -> pb.GetMetricsResponse:
        request = pb.GetMetricsRequest(scaledObjectRef=ref(model, variant), metricName=f"s0-gpumix-{NS}-{variant}")
        return self.stub.GetMetrics(request, timeout=3)

    def gauge(self, variant: str, name: str = "gpumix_desired_replicas") -> int | None:
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith(name + "{") and f'variant="{variant}"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
        return None

    def counter(self, kind: str) -> float:
        for line in self.http("/metrics")[1].splitlines():
            if line.startswith(f'gpumix_observation_errors_total{{kind="{kind}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self, sig: int | None = None) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


@dataclass
class World:
    tmp: Path
    exporter: FleetExporter
    target: str  # the exporter's address, scraped by Prometheus
    prometheus: PrometheusServer
    proxy: FaultProxy
    redis: RedisServer
    service: Service | None = None
    services: list[Service] = field(default_factory=list)

    def start(self, grpc_port: int | None = None, http_port: int | None = None) -> Service:
        grpc_port, http_port = grpc_port or free_port(), http_port or free_port()
        log = self.tmp / f"serve-{grpc_port}-{len(self.services)}.log"
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", self.proxy.url, "--redis", self.redis.url,
             "--inventory", str(self.tmp / "inventory.yaml"), "--profiles", str(self.tmp / "profiles"),
             "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--interval", "0.5"],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env={**os.environ, **ENV}, cwd=REPO,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        service = Service(proc, grpc_port, http_port, log, channel, pb_grpc.ExternalScalerStub(channel))
        self.services.append(service)
        eventually(lambda: service.http("/healthz")[0] == 200, what="gpumix serve /healthz")
        self.service = service
        return service

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("serve-faults")
    (tmp / "inventory.yaml").write_text(INVENTORY)
    (tmp / "profiles").mkdir()
    shutil.copy(DATA / "aibrix" / f"{A40}.json", tmp / "profiles")
    exporter = FleetExporter("v1")
    exporter.set_variant(NS, MODEL, A40, 2, rps=6.0)
    exporter.set_variant(NS, MODEL, A100, 0)
    exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0)
    (tmp / "prom").mkdir()
    (tmp / "redis").mkdir()
    target = exporter.start()
    prometheus = start_prometheus(tmp / "prom", [target])
    proxy = FaultProxy(prometheus.url).start()
    redis_server = start_redis(tmp / "redis")
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"aibrix:profile_{MODEL}_{A100}", (DATA / "aibrix" / f"{A100}.json").read_text())
    client.close()
    w = World(tmp, exporter, target, prometheus, proxy, redis_server)
    try:
        w.start()
        yield w
    finally:
        for s in w.services:
            s.stop()
        proxy.stop()
        w.prometheus.stop()
        w.redis.stop()
        exporter.stop()
        if sys.exc_info()[0] is not None and w.service is not None:
            print(w.service.log.read_text()[-5000:])


def _baseline(world: World) -> dict[str, float]:
    """What KEDA would make of each answering variant now: replicas after the HPA's arithmetic."""
    s = world.service
    assert s is not None
    eventually(lambda: s.gauge(A40) == 2, timeout=30, what="a40 planned at 2")
    eventually(lambda: s.get_metrics(A40) and s.get_metrics(A100), what="fresh answers")
    return {v: desired_replicas(s.get_metrics(v).metricValues[0].metricValueFloat, 1.0, current=c)
            for v, c in ((A40, 2), (A100, 0))}


def _watch(world: World, seconds: float, during: Callable[[], None] | None = None) -> dict[str, list[Any]]:
    """Samples what KEDA and a dashboard see, every 0.1 s for `seconds`: per variant the replicas the HPA
    would compute from GetMetrics (or the gRPC error), and the desired gauge."""
    s = world.service
    assert s is not None
    seen: dict[str, list[Any]] = {A40: [], A100: [], "gauge": []}
    deadline = time.monotonic() + seconds
    first = True
    while time.monotonic() < deadline:
        for variant, current in ((A40, 2), (A100, 0)):
            try:
                value = s.get_metrics(variant).metricValues[0].metricValueFloat
                seen[variant].append(desired_replicas(value, 1.0, current=current))
            except grpc.RpcError as exc:
                seen[variant].append((exc.code(), exc.details()))
        seen["gauge"].append(s.gauge(A40))
        if first and during is not None:
            during()
        first = False
        time.sleep(0.1)
    return seen


def _no_decrease(seen: dict[str, list[Any]], baseline: dict[str, float], *, unavailable_holds: bool = False) -> None:
    """No answer below the baseline. With `unavailable_holds`, UNAVAILABLE counts as holding: KEDA, with the
    rendered ScaledObjects' no fallback, keeps every variant as it is while the scaler answers it."""
    for variant in (A40, A100):
        for answer in seen[variant]:
            if unavailable_holds and isinstance(answer, tuple) and answer[0] is grpc.StatusCode.UNAVAILABLE:
                continue
            assert isinstance(answer, int) and answer >= baseline[variant], (variant, answer, baseline)
    assert all(g is not None and g >= 2 for g in seen["gauge"]), seen["gauge"]


def _recovered(world: World, mark: int) -> None:
    s = world.service
    assert s is not None
    eventually(lambda: any(e["event"] == "recovered" for e in s.events(mark)), timeout=15,
               what="recovered logged")


# (fault, proxy fault, error kind counted, the `what` of the one warning line)
PROMETHEUS_ROWS: list[tuple[str, Fault, str, str]] = [
    ("503", Fault("status", status=503, body=b'{"status":"error","error":"overloaded"}'), "http_5xx", "prometheus"),
    ("trickled answers", Fault("trickle", every=0.3), "timeout", "prometheus"),
    ("answers delayed 5 s", Fault("delay", delay=5.0), "timeout", "prometheus"),
    ("connections closed", Fault("close"), "unreachable", "prometheus"),
    ("200 garbage", Fault("body", body=b"\xff\xfe<html>"), "bad_response", "prometheus"),
    ("matrix instead of a vector", Fault("body", body=b'{"status":"success","data":{"resultType":"matrix",'
                                                        b'"result":[]}}'), "bad_response", "prometheus"),
    ("completions alone wrong-shaped", Fault("body", body=b'{"status":"success","data":{"resultType":"vector",'
                                                          b'"result":[{"metric":{}}]}}',
                                             match="request_success_total"), "bad_response", "queries"),
]


@pytest.mark.parametrize(("fault", "proxy_fault", "kind", "what"), PROMETHEUS_ROWS, ids=[r[0] for r in PROMETHEUS_ROWS])
def test_prometheus_fault_keeps_every_recommendation(world: World, fault: str, proxy_fault: Fault, kind: str,
                                                     what: str) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    before, mark = s.counter(kind), s.mark()
    world.proxy.set(proxy_fault)
    try:
        seen = _watch(world, ROW_S)
    finally:
        world.proxy.set(None)
    _no_decrease(seen, baseline)
    assert s.counter(kind) > before
    problems = [e for e in s.events(mark) if e["level"] in ("warning", "error")]
    # One line for the fault, not one per query or per cycle (the per-model demand line is the loop's).
    observation = [e for e in problems if e["event"] == "observation_problem"
                   and not str(e.get("what")).startswith("demand:")]
    assert [e["what"] for e in observation] == [what], observation
    assert not [e for e in problems if e["event"].endswith("_failed")], problems  # no traceback
    _recovered(world, mark)
    assert s.proc.poll() is None


def test_prometheus_down_keeps_every_recommendation(world: World) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    mark = s.mark()
    port, workdir = world.prometheus.port, world.prometheus.config.parent
    world.prometheus.stop()
    try:
        seen = _watch(world, ROW_S)
    finally:
        world.prometheus = start_prometheus(workdir, [world.target], port=port)
    _no_decrease(seen, baseline)
    downs = [e for e in s.events(mark) if e["event"] == "observation_problem"
             and e.get("what") in ("prometheus", "fast_path")]
    assert [e["what"] for e in downs] == ["prometheus"] and downs[0]["kinds"] == ["unreachable"]
    _recovered(world, mark)


def test_prometheus_restart_warm_up_does_not_lower_recommendations(world: World) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    mark = s.mark()
    port, workdir = world.prometheus.port, world.prometheus.config.parent
    world.prometheus.stop()
    time.sleep(ROW_S)  # an outage of half a rate window, then the same Prometheus (and TSDB) again
    world.prometheus = start_prometheus(workdir, [world.target], port=port)
    # Prometheus marks every series stale when it stops, and v2.42's scrape manager starts its targets only at
    # its 5 s reload tick: outage, start-up and the first two scrapes can outlast stale_after, and then the
    # answer is UNAVAILABLE (which holds the fleet), never a smaller number.
    for _ in range(12):  # the first rate() windows after the restart, checked as they pass
        _no_decrease(_watch(world, 0.5), baseline, unavailable_holds=True)
    # Fresh means planned after the restart: one answer alone can still be the last one from before the outage,
    # a moment short of stale_after (the race this test lost under a loaded full suite).
    _recovered(world, mark)
    eventually(lambda: all(isinstance(a, int) for a in _watch(world, 0.5)[A40]), timeout=30,
               what="fresh answers after the warm-up")
    _no_decrease(_watch(world, 0.5), baseline)


def test_fast_path_wakes_an_idle_model_while_cycle_queries_trickle(world: World) -> None:
    s = world.service
    assert s is not None
    eventually(lambda: s.stub.IsActive(ref(IDLE_MODEL, IDLE_VARIANT), timeout=3).result is False,
               what="idle model inactive")
    mark = s.mark()
    world.proxy.set(Fault("trickle", every=0.3, unless=WAITING_QUERY))
    try:
        time.sleep(0.5)  # cycle queries are stuck in their trickle
        world.exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0, waiting=3)
        # The cycle's queries cannot answer while they trickle: only the fast path can see the queue.
        eventually(lambda: s.stub.IsActive(ref(IDLE_MODEL, IDLE_VARIANT), timeout=3).result, timeout=10,
                   what="fast path sees the queue while the cycle trickles")
        events = s.events(mark)
        assert any(e["event"] == "demand_seen" for e in events)
        assert not any(e["event"] == "recovered" and e.get("what") == "queries" for e in events)
    finally:
        world.exporter.set_variant(NS, IDLE_MODEL, IDLE_VARIANT, 0)
        world.proxy.set(None)


# ------------------------------------------------------------------------------------------- profiles

BAD_FILES: list[tuple[str, bytes, str]] = [
    ("not UTF-8", b"\xff\xfe{}", "not UTF-8"),
    ("400-digit capacity cell", json.dumps({**json.loads((DATA / "aibrix" / f"{A40}.json").read_text()),
                                            "cost": 10**400}).encode(), "cost"),
    ("100,000-deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("fault", "raw", "words"), BAD_FILES, ids=[r[0] for r in BAD_FILES])
def test_in_use_profile_file_overwritten_keeps_the_last_good(world: World, fault: str, raw: bytes,
                                                             words: str) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    path = world.tmp / "profiles" / f"{A40}.json"
    good = path.read_bytes()
    mark = s.mark()
    path.write_bytes(raw)
    try:
        seen = _watch(world, 1.0)
    finally:
        path.write_bytes(good)
    _no_decrease(seen, baseline)
    said = [e for e in s.events(mark) if e.get("state") == "last_good"]
    assert len(said) == 1 and str(path) in said[0]["detail"] and words in said[0]["detail"], said
    eventually(lambda: any(e.get("what") == f"profile:{MODEL}/{A40}" and e["event"] == "recovered"
                           for e in s.events(mark)), what="profile recovered")


L4_FAULTS: list[tuple[str, Callable[[World], object], str]] = [
    ("file with mean null rows", lambda w: (w.tmp / "profiles" / f"{L4}.json").write_text(json.dumps({
        "format": "gpumix.profile/v1", "model": MODEL, "variant": L4, "cost_per_hour": 1.0,
        "grid": {"input_tokens": [128], "output_tokens": [128]}, "capacity_rps": [[1.0]],
        "rows": [{"input_tokens": 1, "output_tokens": 1, "request_rate": 1, "metric": "E2E", "mean": None}]})),
     "rows[0]: mean"),
    ("Redis hash at the profile key", lambda w: w.redis_client().hset(f"gpumix:profile:{MODEL}:{L4}",
                                                                      mapping={"a": "b"}), "holds a hash"),
    ("Redis list at the AIBrix key", lambda w: w.redis_client().rpush(f"aibrix:profile_{MODEL}_{L4}", "x"),
     "holds a list"),
]


@pytest.mark.parametrize(("fault", "write", "words"), L4_FAULTS, ids=[r[0] for r in L4_FAULTS])
def test_bad_profile_of_an_unprofiled_variant_is_named_and_isolated(world: World, fault: str,
                                                                    write: Callable[[World], object],
                                                                    words: str) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    write(world)
    try:
        def not_found() -> str | None:
            try:
                s.get_metrics(L4)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND and words in exc.details():
                    return str(exc.details())
            return None

        details = eventually(not_found, what=f"NOT_FOUND naming {words}")
        assert "invalid" in details
        assert sample(s.http("/metrics")[1], "gpumix_profile_status", model=MODEL, variant=L4, status="invalid") == 1
        _no_decrease(_watch(world, 1.0), baseline)  # the others plan on
    finally:
        (world.tmp / "profiles" / f"{L4}.json").unlink(missing_ok=True)
        client = world.redis_client()
        client.delete(f"gpumix:profile:{MODEL}:{L4}", f"aibrix:profile_{MODEL}_{L4}")
        client.close()


def test_in_use_redis_profile_replaced_by_a_hash_keeps_the_last_good(world: World) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    key = f"aibrix:profile_{MODEL}_{A100}"
    client = world.redis_client()
    good = client.get(key)
    mark = s.mark()
    client.delete(key)
    client.hset(key, mapping={"gpu": A100})
    try:
        seen = _watch(world, 1.0)
    finally:
        client.delete(key)
        client.set(key, good)
        client.close()
    _no_decrease(seen, baseline)
    said = [e for e in s.events(mark) if e.get("state") == "last_good"]
    assert len(said) == 1 and f"redis {key}: holds a hash" in said[0]["detail"], said


# ---------------------------------------------------------------------------------- start-up faults


def test_second_instance_on_the_same_grpc_port_is_refused(world: World) -> None:
    s = world.service
    assert s is not None
    out = gpumix("serve", "--prometheus", world.proxy.url, "--inventory", str(world.tmp / "inventory.yaml"),
                 "--profiles", str(world.tmp / "profiles"), "--grpc-port", str(s.grpc_port),
                 "--http-port", str(free_port()), "--interval", "0.5")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert lines == [f"gpumix serve: gRPC port 127.0.0.1:{s.grpc_port}: address already in use (another gpumix "
                     f"serve or program listens there; pick a free port)"], out.stderr
    assert "Traceback" not in out.stderr
    eventually(lambda: s.get_metrics(A40), what="the first instance still answers (alone: no port sharing)")


def test_both_ports_in_use_are_one_line_each(world: World) -> None:
    s = world.service
    assert s is not None
    out = gpumix("serve", "--prometheus", world.proxy.url, "--inventory", str(world.tmp / "inventory.yaml"),
                 "--profiles", str(world.tmp / "profiles"), "--grpc-port", str(s.grpc_port),
                 "--http-port", str(s.http_port), "--interval", "0.5")
    assert out.returncode == 2
    assert [line.split(":")[1].strip() for line in out.stderr.splitlines()] == ["gRPC port 127.0.0.1",
                                                                                "HTTP port 127.0.0.1"]


def test_http_port_in_use_is_one_line(world: World) -> None:
    s = world.service
    assert s is not None
    grpc_port = free_port()
    out = gpumix("serve", "--prometheus", world.proxy.url, "--inventory", str(world.tmp / "inventory.yaml"),
                 "--profiles", str(world.tmp / "profiles"), "--grpc-port", str(grpc_port),
                 "--http-port", str(s.http_port), "--interval", "0.5")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines() == [f"gpumix serve: HTTP port 127.0.0.1:{s.http_port}: address already in use "
                                       "(another gpumix serve or program listens there; pick a free port)"]
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", grpc_port))


CONFIG_ROWS: list[tuple[str, list[str], dict[str, str], str]] = [
    ("Prometheus port 99999", ["--prometheus", "http://127.0.0.1:99999"], {}, "prometheus: port must be"),
    ("Prometheus port 0", ["--prometheus", "http://127.0.0.1:0"], {}, "prometheus: port must be 1..65535"),
    ("Prometheus without a host", ["--prometheus", "http://:9090"], {}, "prometheus: no host"),
    ("Prometheus ftp", ["--prometheus", "ftp://h:21"], {}, "prometheus: must be a URL starting with http://"),
    ("Redis port 70000", ["--redis", "redis://127.0.0.1:70000"], {}, "redis: port must be"),
    ("Redis db not a number", ["--redis", "redis://127.0.0.1:6379/x"], {}, "redis: the path must be a database"),
    ("GPUMIX_QUERIES a list", [], {"GPUMIX_QUERIES": "[1, 2]"}, "queries (from $GPUMIX_QUERIES): must map"),
    ("GPUMIX_QUERIES not YAML", [], {"GPUMIX_QUERIES": "{waiting: [}"}, "queries (from $GPUMIX_QUERIES): not JSON"),
    ("GPUMIX_QUERIES unknown name", [], {"GPUMIX_QUERIES": '{"bogus": "up"}'}, "queries.bogus: unknown query"),
    ("GPUMIX_QUERIES empty PromQL", [], {"GPUMIX_QUERIES": '{"waiting": ""}'}, "non-empty PromQL"),
]


@pytest.mark.parametrize(("fault", "args", "env", "words"), CONFIG_ROWS, ids=[r[0] for r in CONFIG_ROWS])
def test_configuration_problems_are_reported_together(world: World, fault: str, args: list[str],
                                                      env: dict[str, str], words: str) -> None:
    base = {"--prometheus": world.proxy.url, "--inventory": str(world.tmp / "inventory.yaml"),
            "--profiles": str(world.tmp / "profiles")}
    given = dict(zip(args[::2], args[1::2], strict=True))
    flags = [x for k, v in {**base, **given, "--interval": "-1"}.items() for x in (k, v)]
    out = gpumix("serve", *flags, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert words in out.stderr, out.stderr
    assert "interval: must be > 0" in out.stderr  # every problem at once


# ---------------------------------------------------------------------------------------- restarts


def test_restart_with_garbage_in_the_state_hash(world: World) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    assert s.stop() == 0
    client = world.redis_client()
    try:
        client.hset("gpumix:state", mapping={f"{NS}/bogus": "[]", f"{NS}/huge": '{"replicas": 1e999}',
                                             f"{NS}/neg": '{"history": [[1, -4]]}', f"{NS}/text": b"\xff"})
        restarted = world.start()
        eventually(lambda: restarted.get_metrics(A40), what="answers after the restart")
        events = restarted.events()
        skipped = sorted(e["variant"] for e in events if e["event"] == "state_entry_skipped")
        assert skipped == [f"{NS}/bogus", f"{NS}/huge", f"{NS}/neg", f"{NS}/text"]
        assert any(e["event"] == "state_restored" for e in events)
        assert not [e for e in events if e["event"].endswith("_failed")]
        _no_decrease(_watch(world, 1.0), baseline)
    finally:
        client.hdel("gpumix:state", f"{NS}/bogus", f"{NS}/huge", f"{NS}/neg", f"{NS}/text")
        client.close()


def test_killed_service_restarts_from_its_saved_state(world: World) -> None:
    s = world.service
    assert s is not None
    baseline = _baseline(world)
    s.stop(sig=9)
    # Demand falls while it is down: the HPA still holds 2 inside its window, and the new process knows it.
    world.exporter.set_variant(NS, MODEL, A40, 2, rps=2.0)
    try:
        restarted = world.start()
        eventually(lambda: restarted.get_metrics(A40), what="answers after SIGKILL")
        assert restarted.gauge(A40, "gpumix_held_replicas") == baseline[A40]
    finally:
        world.exporter.set_variant(NS, MODEL, A40, 2, rps=6.0)


# ---------------------------------------------------------------------------------------- benchmark


def test_benchmark_against_nothing_fails_fast_naming_the_connection(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    done = gpumix("benchmark", "--url", url, "--model", "m", "--rates", "1,2,4", "--requests", "20", "--out",
                  str(out), "--no-progress", timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{url}/v1/completions did not answer a 1-token test request (connection)" in done.stderr
    assert "Cannot connect" in done.stderr and "nothing was measured" in done.stderr
    assert "prompt_tokens" not in done.stderr
    assert not out.exists() or out.read_text() == ""
    assert time.monotonic() - began < 30

