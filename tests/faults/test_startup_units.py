"""Start-up rules checked in-process: no port sharing between gRPC servers, GPUMIX_QUERIES parsed (JSON or
YAML) and merged over the file's queries, URL rules. (The same faults through the `gpumix serve` command are
in test_serve_faults.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler import keda
from scaler.config import Config, ConfigError, load
from scaler.table import Table


async def test_a_second_grpc_server_cannot_share_the_port() -> None:
    first = await keda.start(Table(), Config(grpc_port=0))
    try:
        with pytest.raises(RuntimeError, match="bind"):
            await keda.start(Table(), Config(grpc_port=first.port))
    finally:
        await first.stop(0)


def _load(tmp_path: Path, env: dict[str, str], file_text: str = "") -> Config:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("models: []\n")
    config = None
    if file_text:
        config = tmp_path / "gpumix.yaml"
        config.write_text(file_text)
    return load(str(config) if config else None, {"inventory": str(inventory), "profiles": str(tmp_path)},
                {"GPUMIX_PROMETHEUS": "http://127.0.0.1:9090", **env})


QUERIES = [
    ("JSON", '{"waiting": "sum(q_waiting)"}', {"waiting": "sum(q_waiting)"}),
    ("YAML", "waiting: sum(q_waiting)\nrunning: sum(q_running)",
     {"waiting": "sum(q_waiting)", "running": "sum(q_running)"}),
]


@pytest.mark.parametrize(("fmt", "text", "want"), QUERIES, ids=[q[0] for q in QUERIES])
def test_gpumix_queries_is_parsed_and_used(tmp_path: Path, fmt: str, text: str, want: dict[str, str]) -> None:
    config = _load(tmp_path, {"GPUMIX_QUERIES": text}, "queries:\n  kv_cache: avg(from_file)\n  waiting: x\n")
    assert dict(config.queries) == {"kv_cache": "avg(from_file)", **want}
    assert config.query("waiting") == "sum(q_waiting)"


URLS = [
    ("http://127.0.0.1:99999", "port must be a number in 1..65535"),
    ("http://127.0.0.1:0", "port must be 1..65535, got 0"),
    ("http://127.0.0.1:x", "port must be a number"),
    ("http://:9090", "no host"),
    ("127.0.0.1:9090", "must be a URL starting with http:// or https://"),
    ("http://a b:9090", "no host"),
]


@pytest.mark.parametrize(("url", "words"), URLS, ids=[u[0] for u in URLS])
def test_prometheus_url_is_checked(tmp_path: Path, url: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"GPUMIX_PROMETHEUS": url, "GPUMIX_REDIS": "redis://h:123456"})
    text = str(err.value)
    assert words in text and "redis: port must be" in text  # every problem at once
