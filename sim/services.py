"""Real Redis and Prometheus servers on loopback, each in its own temporary directory, for the demo and
the integration tests. Nothing is faked: these are the Debian `redis-server` and `prometheus` binaries.

    with local_redis() as redis_url, local_prometheus([f"127.0.0.1:{port}"]) as prom:
        ...   # prom.url, prom.reload(targets)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def local_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="gpumix-redis-") as d:
        server = start_redis(Path(d))
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def local_prometheus(
    targets: Sequence[str] = (), *, scrape_interval: str = "1s", jobs: dict[str, Sequence[str]] | None = None
) -> Iterator[PrometheusServer]:
    with tempfile.TemporaryDirectory(prefix="gpumix-prom-") as d:
        server = start_prometheus(Path(d), targets, scrape_interval=scrape_interval, jobs=jobs)
        try:
            yield server
        finally:
            server.stop()


def environment_ok() -> list[str]:
    """Missing binaries, for a clear message up front."""
    return [b for b in ("redis-server", "prometheus") if not (shutil.which(b) or os.path.exists(f"/usr/bin/{b}"))]
