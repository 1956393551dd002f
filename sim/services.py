"""Real Redis and Prometheus servers on loopback, each in its own temporary directory, for the demo and
the integration tests. Nothing is faked: these are the Debian `redis-server` and `prometheus` binaries.

    redis = start_redis(workdir)                       # redis.url, redis.stop()
    prom = start_prometheus(workdir, ["127.0.0.1:9400"])  # prom.url, prom.reload(targets), prom.stop()
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise ServiceError(f"{name} is not installed: run `make setup` (it installs the Debian package)")
    return path


def _wait(check: object, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not become ready in {timeout}s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        _stop(self.proc)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    port = port or free_port()
    log = workdir / "redis.log"
    proc = subprocess.Popen(
        [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait(ready, "redis-server", proc, log)
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, proc)


@dataclass
class PrometheusServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    config: Path
    scrape_interval: str

    def reload(self, targets: Sequence[str], jobs: dict[str, Sequence[str]] | None = None) -> None:
        """Replace the scrape targets and ask the running server to re-read its configuration."""
        _write_config(self.config, targets, self.scrape_interval, jobs)
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        _stop(self.proc)


def _write_config(
    path: Path, targets: Sequence[str], interval: str, jobs: dict[str, Sequence[str]] | None
) -> None:
    all_jobs = {"targets": list(targets), **{k: list(v) for k, v in (jobs or {}).items()}}
    lines = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}", "scrape_configs:"]
    for job, tgts in all_jobs.items():
        if not tgts:
            continue
        lines += [
            f"- job_name: {job}",
            f"  scrape_interval: {interval}",
            f"  scrape_timeout: {interval}",
            "  honor_labels: true",
            "  static_configs:",
            f"  - targets: [{', '.join(repr(t) for t in tgts)}]",
        ]
    path.write_text("\n".join(lines) + "\n")


def start_prometheus(
    workdir: Path,
    targets: Sequence[str] = (),
    *,
    scrape_interval: str = "1s",
    port: int | None = None,
    jobs: dict[str, Sequence[str]] | None = None,
) -> PrometheusServer:
    port = port or free_port()
    config = workdir / "prometheus.yml"
    _write_config(config, targets, scrape_interval, jobs)
    (workdir / "data").mkdir(exist_ok=True)
    log = workdir / "prometheus.log"
    proc = subprocess.Popen(
        [_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
         "--storage.tsdb.retention.time=1d", "--log.level=warn"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=0.5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    _wait(ready, "prometheus", proc, log)
    return PrometheusServer(url, port, proc, config, scrape_interval)
