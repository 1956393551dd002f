"""Two `gpumix serve --ha redis` processes against a real Redis and a real Prometheus scraping the test
exporter: what the failover test and bench/bench_failover.py both drive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from scaler.leader import LOCK_KEY
from scaler.store import STATE_KEY
from sim.services import PrometheusServer, RedisServer, free_port, start_prometheus, start_redis
from tests.conftest import DATA, REPO
from tests.service.exporter import FleetExporter
from tests.service.helpers import eventually, pb, pb_grpc, ref

NS = "llm"
MODEL = "llama2-7b"
A40 = "simulator-llama2-7b-a40"
VARIANT = f"{NS}/{A40}"
INVENTORY = f"""
models:
- name: {MODEL}
  namespace: {NS}
  variants:
  - {{name: {A40}, max_replicas: 8}}
"""


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    log: Path
    channel: grpc.Channel = field(init=False)
    stub: pb_grpc.ExternalScalerStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pb_grpc.ExternalScalerStub(self.channel)

    def metric(self) -> float | None:
        """What KEDA would get from this replica for the variant (None: an error, e.g. UNAVAILABLE)."""
        try:
            r = self.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(MODEL, A40),
                                                          metricName=f"s0-gpumix-{NS}-{A40}"), timeout=1)
        except grpc.RpcError:
            return None
        return float(r.metricValues[0].metricValueFloat)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Pair:
    def __init__(self, tmp: Path, lease_s: float = 2.0, interval_s: float = 0.5,
                 redis_server: RedisServer | None = None) -> None:
        self.tmp, self.lease_s, self.interval_s = tmp, lease_s, interval_s
        (tmp / "inventory.yaml").write_text(INVENTORY)
        profiles = tmp / "profiles"
        profiles.mkdir()
        shutil.copy(DATA / "aibrix" / f"{A40}.json", profiles)
        self.exporter = FleetExporter("v1")
        self.exporter.set_variant(NS, MODEL, A40, 2, rps=6.0)
        target = self.exporter.start()
        (tmp / "prom").mkdir()
        self.prometheus: PrometheusServer = start_prometheus(tmp / "prom", [target])
        self.own_redis = redis_server is None
        if redis_server is None:
            (tmp / "redis").mkdir()
            redis_server = start_redis(tmp / "redis")
        self.redis_server = redis_server
        self.redis = redis.Redis.from_url(redis_server.url)
        self.replicas: list[Replica] = []

    def start_replica(self) -> Replica:
        grpc_port = free_port()
        log = self.tmp / f"serve-{grpc_port}.log"
        env = {**os.environ, "GPUMIX_LOG_FORMAT": "json", "GPUMIX_RATE_WINDOW": "5s", "GPUMIX_FAST_INTERVAL": "0.5",
               "GPUMIX_STALE_AFTER": "30", "GPUMIX_MAX_SAMPLE_AGE": "10", "GPUMIX_PROMETHEUS_TIMEOUT": "1"}
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", self.prometheus.url,
             "--redis", self.redis_server.url, "--inventory", str(self.tmp / "inventory.yaml"),
             "--profiles", str(self.tmp / "profiles"), "--grpc-port", str(grpc_port),
             "--http-port", str(free_port()), "--interval", str(self.interval_s),
             "--ha", "redis", "--ha-lease", str(self.lease_s)],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO,
        )
        replica = Replica(proc, grpc_port, log)
        self.replicas.append(replica)
        return replica

    def leader_pid(self) -> int | None:
        raw = self.redis.get(LOCK_KEY)
        if raw is None:
            return None
        identity = raw.decode().rsplit("#", 1)[0]
        return int(identity.rsplit("-", 1)[1])

    def leader(self) -> Replica | None:
        pid = self.leader_pid()
        return next((r for r in self.replicas if r.proc.pid == pid and r.proc.poll() is None), None)

    def published(self) -> dict[str, object] | None:
        raw = self.redis.hget(STATE_KEY, VARIANT)
        return None if raw is None else json.loads(raw)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a leader has planned the variant from fresh data and every replica answers with it."""
        eventually(lambda: self.leader() is not None, timeout=timeout, what="a leader")
        eventually(lambda: (p := self.published()) is not None and p.get("replicas") == 2, timeout=timeout,
                   what="2 replicas published")
        for r in self.replicas:
            eventually(lambda r=r: r.metric() is not None, timeout=timeout, what=f"replica {r.grpc_port} answers")

    def kill_leader(self) -> tuple[Replica, float]:
        leader = self.leader()
        assert leader is not None
        killed_at = time.time()
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        leader.channel.close()
        self.replicas.remove(leader)
        return leader, killed_at

    def close(self) -> None:
        for r in self.replicas:
            r.stop()
        self.redis.close()
        self.prometheus.stop()
        if self.own_redis:
            self.redis_server.stop()
        self.exporter.stop()
