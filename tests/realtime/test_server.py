"""The real-time fleet seen from outside: a real Prometheus scrapes its /metrics, and real HTTP clients
(aiohttp, and gpumix benchmark's own OpenAI client) talk to its OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import urllib.parse
import urllib.request
from typing import Any

import aiohttp
import pytest

from scaler.benchmark import OpenAIClient
from sim.fleet import FleetSpec, load_fleet
from sim.realtime import RealtimeFleet, RealtimeServer, ServerThread
from sim.services import PrometheusServer

pytestmark = pytest.mark.integration


def quick_fleet(cold_start_s: float = 0.3) -> FleetSpec:
    spec = load_fleet()
    return dataclasses.replace(
        spec, variants=tuple(dataclasses.replace(v, cold_start_s=cold_start_s, initial_replicas=0)
                             for v in spec.variants))


def query(prom: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(fn: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_prometheus_scrapes_vllm_dcgm_and_kube_series(prometheus: PrometheusServer) -> None:
    spec = quick_fleet()
    l4, a100 = spec.variants[0].name, spec.variants[3].name
    fleet = RealtimeFleet(spec, seed=3)
    with ServerThread(fleet) as srv:
        fleet.set_replicas(l4, 2)
        fleet.set_replicas(a100, 1)
        wait_for(lambda: fleet.snapshot().variants[l4].ready == 2, "replicas ready")
        sizes = [(200, 20), (800, 40), (1500, 10), (50, 60), (300, 30), (1000, 25)]
        ids = [fleet.submit(p, o, watch=True) for p, o in sizes]
        wait_for(lambda: all(fleet.progress(i)[1] for i in ids), "requests done")
        prometheus.reload([srv.target])

        done = wait_for(lambda: query(prometheus, "sum(vllm:request_success_total)"), "success counter scraped")
        wait_for(lambda: float(query(prometheus, "sum(vllm:request_success_total)")[0]["value"][1]) == len(sizes),
                 "all completions counted")
        assert done

        gen = query(prometheus, "sum(vllm:generation_tokens_total)")
        assert float(gen[0]["value"][1]) == sum(o for _, o in sizes)
        prompt_count = query(prometheus, "sum(vllm:request_prompt_tokens_count)")
        assert float(prompt_count[0]["value"][1]) == len(sizes)
        prompt_sum = query(prometheus, "sum(vllm:request_prompt_tokens_sum)")
        assert float(prompt_sum[0]["value"][1]) == sum(p for p, _ in sizes)
        # Inter-token latency, as vLLM (0.12+ name) records it: one observation per generated token after the first.
        tpot_count = query(prometheus, "sum(vllm:inter_token_latency_seconds_count)")
        assert float(tpot_count[0]["value"][1]) == sum(o - 1 for _, o in sizes)
        q = query(prometheus, "histogram_quantile(0.5, sum by (le) (vllm:time_to_first_token_seconds_bucket))")
        assert 0 < float(q[0]["value"][1]) < 5

        pods_by_variant: dict[str, set[str]] = {}
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                     "vllm:prompt_tokens_total", "vllm:e2e_request_latency_seconds_bucket",
                     "vllm:request_queue_time_seconds_count", "vllm:request_generation_tokens_sum"):
            series = query(prometheus, name)
            assert series, name
            for s in series:
                m = s["metric"]
                assert m["model_name"] == spec.model and m["namespace"] == spec.namespace
                assert re.fullmatch(rf"{re.escape(m['variant'])}-[0-9a-f]{{10}}-[a-z0-9]{{5}}", m["pod"]), m
                pods_by_variant.setdefault(m["variant"], set()).add(m["pod"])
        assert {k: len(v) for k, v in pods_by_variant.items()} == {l4: 2, a100: 1}
        reasons = {s["metric"]["finished_reason"] for s in query(prometheus, "vllm:request_success_total")}
        assert reasons == {"length"}

        dcgm = query(prometheus, "DCGM_FI_DEV_GPU_UTIL")
        assert len(dcgm) == 3
        for s in dcgm:
            m = s["metric"]
            assert {"gpu", "UUID", "modelName", "namespace", "pod", "container"} <= set(m)
            assert "variant" not in m
            assert m["UUID"].startswith("GPU-") and m["modelName"].startswith("NVIDIA ")
            assert 0.0 <= float(s["value"][1]) <= 100.0
        assert {s["metric"]["pod"] for s in dcgm} == set().union(*pods_by_variant.values())

        replicas = {s["metric"]["deployment"]: float(s["value"][1])
                    for s in query(prometheus, "kube_deployment_status_replicas")}
        assert replicas == {v.name: (2.0 if v.name == l4 else 1.0 if v.name == a100 else 0.0) for v in spec.variants}
        ready = query(prometheus, f'kube_deployment_status_replicas_ready{{deployment="{l4}"}}')
        assert float(ready[0]["value"][1]) == 2.0

        # Scale the L4s to zero: their pods' series go away, as a deleted pod's would.
        fleet.set_replicas(l4, 0)
        wait_for(lambda: not query(prometheus, f'vllm:num_requests_running{{variant="{l4}"}}'), "l4 series gone")
        wait_for(lambda: query(prometheus, f'kube_deployment_status_replicas{{deployment="{l4}"}} == 0'),
                 "l4 replicas 0")


async def read_sse(resp: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], list[float], bool]:
    chunks: list[dict[str, Any]] = []
    times: list[float] = []
    done = False
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        chunks.append(json.loads(data))
        times.append(time.monotonic())
    return chunks, times, done


@pytest.fixture()
async def server() -> Any:
    spec = quick_fleet(cold_start_s=0.0)
    fleet = RealtimeFleet(spec, seed=1)
    fleet.set_replicas(spec.variants[0].name, 1)
    srv = RealtimeServer(fleet)
    await srv.start()
    yield srv
    await srv.stop()


async def test_completions_stream_tokens_paced_by_the_engine(server: RealtimeServer) -> None:
    model = server.fleet.spec.model
    async with aiohttp.ClientSession() as s:
        body = {"model": model, "prompt": "def add ( a , b ) :", "max_tokens": 12, "stream": True,
                "stream_options": {"include_usage": True}}
        async with s.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            chunks, times, done = await read_sse(resp)
    assert done
    text_chunks = [c for c in chunks if c["choices"]]
    assert len(text_chunks) == 12
    assert all(c["object"] == "text_completion" and c["choices"][0]["text"] for c in text_chunks)
    assert [c["choices"][0]["finish_reason"] for c in text_chunks] == [None] * 11 + ["length"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20}
    # Tokens come out as the engine produces them, not in one burst at the end.
    assert times[-1] > times[0]
    assert len(server.fleet.watched) == 0  # the request's record was released


async def test_chat_stream_and_non_stream_and_errors(server: RealtimeServer) -> None:
    model = server.fleet.spec.model
    async with aiohttp.ClientSession() as s:
        body = {"model": model, "messages": [{"role": "user", "content": "write a sort"}], "max_tokens": 5,
                "stream": True}
        async with s.post(server.url + "/v1/chat/completions", json=body) as resp:
            chunks, _, done = await read_sse(resp)
        assert done
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        content = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
        assert len(content) == 5 and all(content)
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)

        async with s.post(server.url + "/v1/completions", json={"model": model, "prompt": "a b", "max_tokens": 4}
                          ) as resp:
            whole = await resp.json()
        assert whole["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
        assert len(whole["choices"][0]["text"].split()) == 4

        async with s.post(server.url + "/v1/chat/completions",
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
                          ) as resp:
            chat = await resp.json()
        assert chat["object"] == "chat.completion" and chat["usage"]["completion_tokens"] == 3

        async with s.post(server.url + "/v1/completions", json={"model": "nope", "prompt": "x"}) as resp:
            assert resp.status == 404
            assert "nope" in (await resp.json())["message"]
        async with s.post(server.url + "/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 0}
                          ) as resp:
            assert resp.status == 400
            assert "max_tokens" in (await resp.json())["message"]
        async with s.post(server.url + "/v1/chat/completions", json={"model": model, "messages": []}) as resp:
            assert resp.status == 400
            assert "messages" in (await resp.json())["message"]
        async with s.get(server.url + "/v1/models") as resp:
            assert (await resp.json())["data"][0]["id"] == model


async def test_gpumix_benchmark_client_measures_the_simulated_replica(server: RealtimeServer) -> None:
    """The profiling tool's own client gets the engine's latencies back: with one request alone on an idle
    replica, TPOT is the engine's a·1 + c and TTFT is one prefill iteration (plus polling granularity)."""
    fleet = server.fleet
    perf = fleet.spec.variants[0].perf
    async with aiohttp.ClientSession() as s:
        client = OpenAIClient(s, server.url, fleet.spec.model, api="completions")
        result = await client.send(" ".join(["word"] * 64), 24)
    assert result.ok, result.error
    assert (result.input_tokens, result.output_tokens) == (64, 24)
    assert result.tpot is not None and result.ttft is not None
    completion = next(c for c in fleet.completed if c.output_tokens == 24)
    assert completion.tpot is not None and completion.ttft is not None
    # The client sees what the engine decided, within the server's polling (10 ms) and loop jitter.
    assert result.tpot == pytest.approx(completion.tpot, rel=0.25, abs=0.01)
    assert result.ttft == pytest.approx(completion.ttft, abs=0.1)
    assert completion.tpot == pytest.approx(perf.tpot(1, 64 + 12), rel=0.2)


async def test_request_dropped_when_no_replica_gets_an_error_event() -> None:
    spec = dataclasses.replace(quick_fleet(cold_start_s=0.0), max_queue_s=0.3)
    fleet = RealtimeFleet(spec)
    srv = RealtimeServer(fleet)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            body = {"model": spec.model, "prompt": "x y", "max_tokens": 3, "stream": True}
            async with s.post(srv.url + "/v1/completions", json=body) as resp:
                chunks, _, done = await asyncio.wait_for(read_sse(resp), 10)
        assert done
        assert "error" in chunks[-1] and "no-replica" in chunks[-1]["error"]["message"]
        assert fleet.dropped == 1
    finally:
        await srv.stop()
