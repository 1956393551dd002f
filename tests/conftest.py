"""Shared fixtures: real Redis and Prometheus servers on loopback (the Debian binaries, see sim/services.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.services import PrometheusServer, RedisServer, start_prometheus, start_redis

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database per test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server.url
    client.flushdb()
    client.close()


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A fresh Prometheus (1 s scrape) with no targets; call .reload([...]) to point it at exporters."""
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = start_prometheus(workdir)
    yield server
    server.stop()
