"""The simulated fleet in real time: the discrete-event engine (sim/engine.py) advanced by the wall clock,
seen from outside exactly as a Kubernetes vLLM fleet is seen by Prometheus and by clients.

One aiohttp server per fleet serves:
- `/metrics`: for every serving or draining pod, vLLM V1 series (`vllm:num_requests_running`,
  `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, `vllm:request_success_total{finished_reason}`,
  `vllm:prompt_tokens_total`, `vllm:generation_tokens_total` and the histograms `vllm:request_prompt_tokens`,
  `vllm:request_generation_tokens`, `vllm:time_to_first_token_seconds`, the per-token latency histogram,
  `vllm:e2e_request_latency_seconds`, `vllm:request_queue_time_seconds`) labelled `model_name`, `namespace`,
  `pod`, `variant`, named as the chosen vLLM release names them (vllm/v1/metrics/loggers.py,
  PrometheusStatLogger): "0.12" (current, the default) `vllm:inter_token_latency_seconds` only; "0.10"
  `vllm:time_per_output_token_seconds` only, and the KV cache also as the deprecated
  `vllm:gpu_cache_usage_perc`. For every pod that holds a GPU (starting pods too), DCGM's
  `DCGM_FI_DEV_GPU_UTIL` (%) with the exporter's labels (`gpu`, `UUID`, `modelName`, `namespace`, `pod`,
  `container`; no variant, as the real exporter); a MIG slice has no GPU_UTIL in DCGM, only
  `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (a ratio, with `GPU_I_ID` / `GPU_I_PROFILE`). Per variant
  kube-state-metrics' `kube_deployment_spec_replicas`,
  `kube_deployment_status_replicas`, `kube_deployment_status_replicas_ready`.
- `/v1/completions`, `/v1/chat/completions` (streaming SSE and not; `stream_options.include_usage`),
  `/v1/models`, `/health`: each request is submitted into the engine and its tokens are paced from
  `Fleet.progress`, so a client sees the simulated TTFT and TPOT. Like vLLM with `ignore_eos`, a request
  produces exactly `max_tokens` tokens; the prompt length is its word count (one token per word; chat adds
  a few template tokens per message).

Everything touching the engine holds one lock, so a driver thread (the KEDA emulator, a trace replayer)
can call `set_replicas` / `submit` while the server runs in its own event loop (`ServerThread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from optimizer.perfmodel import accelerator
from sim.engine import Completion, Fleet, Request, Snapshot, Usage
from sim.fleet import FleetSpec

# Bucket bounds as vLLM's own (vllm/v1/metrics/loggers.py): latency buckets reach minutes because queueing
# under overload does; token buckets are 1-2-5 steps up to the longest context.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)

VLLM_RELEASES = ("0.10", "0.12")
UTIL_WINDOW_S = 5.0  # DCGM reports a duty cycle over a short sampling window
CHAT_TEMPLATE_TOKENS = 4  # per message, roughly what a chat template adds
_WORDS = ("the", "model", "serves", "tokens", "on", "mixed", "GPUs", "at", "low", "cost", "and", "meets", "its",
          "latency", "goal")


class Histogram:
    """Cumulative-bucket histogram in Prometheus' sense."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, weight: int = 1) -> None:
        """`weight` observations of `value` (a request's mean TPOT stands for each of its tokens)."""
        if weight <= 0 or not math.isfinite(value):
            return
        i = next((k for k, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[i] += weight
        self.sum += value * weight
        self.count += weight

    def lines(self, name: str, labels: str) -> Iterator[str]:
        running = 0
        for b, c in zip(self.bounds, self.counts, strict=False):
            running += c
            yield f'{name}_bucket{{{labels},le="{_fmt(b)}"}} {running}'
        yield f'{name}_bucket{{{labels},le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {_fmt(self.sum)}"
        yield f"{name}_count{{{labels}}} {self.count}"


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{float(v):.1f}"
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items())


@dataclass
class PodStats:
    """What a vLLM server records at request completion."""

    variant: str
    success: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    prompt_tokens: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    generation_tokens: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(TPOT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def record(self, c: Completion) -> None:
        self.success[c.reason or "length"] += 1
        self.prompt_tokens.observe(c.prompt_tokens)
        self.generation_tokens.observe(c.output_tokens)
        if c.ttft is not None:
            self.ttft.observe(c.ttft)
        if c.tpot is not None and c.output_tokens > 1:
            self.tpot.observe(c.tpot, c.output_tokens - 1)
        self.e2e.observe(c.e2e)
        if c.queue_time is not None:
            self.queue.observe(c.queue_time)


def _gpu_uuid(pod: str, gpu: int) -> str:
    return "GPU-" + str(uuid.UUID(bytes=hashlib.md5(f"{pod}/{gpu}".encode()).digest()))


def _gpu_model_name(acc: str) -> str:
    base = acc.split("/")[0]
    return f"NVIDIA {base}"


class RealtimeFleet:
    """The engine on a wall clock (seconds since construction, or since `clock`'s origin), thread-safe."""

    def __init__(self, spec: FleetSpec, *, seed: int = 0, routing: str = "least-outstanding",
                 clock: Callable[[], float] = time.monotonic, vllm: str = "0.12") -> None:
        if vllm not in VLLM_RELEASES:
            raise ValueError(f"vllm: one of {', '.join(VLLM_RELEASES)}, got {vllm!r}")
        self.spec = spec
        self.vllm = vllm
        self.clock = clock
        self.t0 = clock()
        self.engine = Fleet(spec, seed=seed, routing=routing, start=0.0)
        self.lock = threading.RLock()
        self.pods: dict[str, PodStats] = {}
        self.watched: set[int] = set()  # requests whose completion a client still wants to read
        self.completed: deque[Completion] = deque(maxlen=100_000)  # for summaries (demo, tests)
        self.dropped = 0
        self.submitted = 0
        self._busy: dict[str, deque[tuple[float, float]]] = {}
        self.listeners: list[Callable[[Completion], None]] = []
        self._gpu_name = {v.name: _gpu_model_name(v.accelerator) for v in spec.variants}
        self._gpus = {v.name: v.gpus for v in spec.variants}
        # A MIG slice: "<GPU>/<profile>" in the catalog's naming.
        self._mig = {v.name: v.accelerator.split("/", 1)[1] for v in spec.variants if "/" in v.accelerator}
        for v in spec.variants:
            with contextlib.suppress(Exception):  # catalog names are nicer when known
                self._gpu_name[v.name] = _gpu_model_name(accelerator(v.accelerator).name)

    # -- clock and engine -----------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock() - self.t0

    def _advance(self) -> float:
        """Bring the engine to now and record what finished; call with the lock held."""
        t = max(self.now(), self.engine.now)
        for c in self.engine.advance(t):
            if c.dropped or c.pod is None:
                self.dropped += int(c.dropped)
            else:
                stats = self.pods.get(c.pod)
                if stats is None:
                    stats = self.pods[c.pod] = PodStats(c.variant or "")
                stats.record(c)
            self.completed.append(c)
            if c.request_id not in self.watched:
                self.engine.forget(c.request_id)
            for listener in self.listeners:
                listener(c)
        return t

    def tick(self) -> Snapshot:
        with self.lock:
            t = self._advance()
            snap = self.engine.snapshot(t)
            alive = set()
            for r in snap.replicas:
                alive.add(r.pod)
                samples = self._busy.setdefault(r.pod, deque())
                samples.append((t, r.busy_seconds))
                while len(samples) > 2 and samples[1][0] <= t - UTIL_WINDOW_S:
                    samples.popleft()
            for pod in list(self._busy):
                if pod not in alive:
                    del self._busy[pod]
                    self.pods.pop(pod, None)
            return snap

    def set_replicas(self, variant: str, n: int) -> None:
        with self.lock:
            t = self._advance()
            self.engine.set_replicas(variant, n, t)

    def replicas(self, variant: str) -> int:
        with self.lock:
            self._advance()
            return self.engine.replicas(variant)

    def snapshot(self) -> Snapshot:
        with self.lock:
            return self.engine.snapshot(self._advance())

    def usage(self) -> Usage:
        with self.lock:
            return self.engine.usage(self._advance())

    def submit(self, prompt_tokens: int, output_tokens: int, *, watch: bool = False) -> int:
        with self.lock:
            t = self._advance()
            rid = self.engine.submit(Request(int(prompt_tokens), int(output_tokens)), t)
            self.submitted += 1
            if watch:
                self.watched.add(rid)
            return rid

    def progress(self, rid: int) -> tuple[int, bool, Completion | None]:
        with self.lock:
            self._advance()
            tokens, done = self.engine.progress(rid)
            return tokens, done, self.engine.completion(rid) if done else None

    def release(self, rid: int) -> None:
        with self.lock:
            self.watched.discard(rid)
            self.engine.forget(rid)

    # -- exposition -----------------------------------------------------------------------------------
    def utilization(self, pod: str) -> float:
        """Duty cycle in percent over the last UTIL_WINDOW_S (from the engine's busy time)."""
        samples = self._busy.get(pod)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        if t1 - t0 <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (b1 - b0) / (t1 - t0)))

    def render_metrics(self) -> str:
        snap = self.tick()
        spec = self.spec
        ns = spec.namespace
        out: list[str] = []
        gauges: dict[str, list[str]] = defaultdict(list)
        counters: dict[str, list[str]] = defaultdict(list)
        hists: dict[str, list[str]] = defaultdict(list)
        dcgm: list[str] = []
        prof: list[str] = []
        tpot_name = "vllm:time_per_output_token_seconds" if self.vllm == "0.10" else "vllm:inter_token_latency_seconds"
        with self.lock:
            for r in snap.replicas:
                gpus = self._gpus.get(r.variant, 1)
                util = self.utilization(r.pod)
                for g in range(gpus):
                    lab = _labels(gpu=str(g), UUID=_gpu_uuid(r.pod, g), modelName=self._gpu_name[r.variant],
                                  namespace=ns, pod=r.pod, container="vllm")
                    profile = self._mig.get(r.variant)
                    if profile is None:
                        dcgm.append(f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} {_fmt(round(util, 1))}")
                    else:
                        mig_lab = f'{lab},{_labels(GPU_I_ID=str(g + 1), GPU_I_PROFILE=profile)}'
                        prof.append(f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{mig_lab}}} {_fmt(round(util / 100, 3))}")
                if r.state not in ("serving", "draining"):
                    continue  # a starting pod's vLLM server is not up yet: nothing to scrape
                lab = _labels(model_name=spec.model, namespace=ns, pod=r.pod, variant=r.variant)
                gauges["vllm:num_requests_running"].append(f"{{{lab}}} {r.running}")
                gauges["vllm:num_requests_waiting"].append(f"{{{lab}}} {r.waiting}")
                gauges["vllm:kv_cache_usage_perc"].append(f"{{{lab}}} {_fmt(r.kv_usage)}")
                if self.vllm == "0.10":
                    gauges["vllm:gpu_cache_usage_perc"].append(f"{{{lab}}} {_fmt(r.kv_usage)}")
                counters["vllm:prompt_tokens_total"].append(f"{{{lab}}} {r.prompt_tokens}")
                counters["vllm:generation_tokens_total"].append(f"{{{lab}}} {r.generation_tokens}")
                stats = self.pods.get(r.pod) or PodStats(r.variant)
                reasons = dict(stats.success) or {"length": 0}
                for reason, n in sorted(reasons.items()):
                    rl = _labels(model_name=spec.model, namespace=ns, pod=r.pod, variant=r.variant,
                                 finished_reason=reason)
                    counters["vllm:request_success_total"].append(f"{{{rl}}} {n}")
                for name, h in (("vllm:request_prompt_tokens", stats.prompt_tokens),
                                ("vllm:request_generation_tokens", stats.generation_tokens),
                                ("vllm:time_to_first_token_seconds", stats.ttft),
                                (tpot_name, stats.tpot),
                                ("vllm:e2e_request_latency_seconds", stats.e2e),
                                ("vllm:request_queue_time_seconds", stats.queue)):
                    hists[name].extend(h.lines(name, lab))
        for name, rows in gauges.items():
            out += [f"# TYPE {name} gauge", *(name + row for row in rows)]
        for name, rows in counters.items():
            out += [f"# TYPE {name} counter", *(name + row for row in rows)]
        for name, rows in hists.items():
            out += [f"# TYPE {name} histogram", *rows]
        if dcgm:
            out += ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge", *dcgm]
        if prof:
            out += ["# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge", *prof]
        for metric, attr in (("kube_deployment_spec_replicas", "replicas"),
                             ("kube_deployment_status_replicas", "replicas"),
                             ("kube_deployment_status_replicas_ready", "ready")):
            out.append(f"# TYPE {metric} gauge")
            for vname, vs in snap.variants.items():
                out.append(f"{metric}{{{_labels(namespace=ns, deployment=vname)}}} {getattr(vs, attr)}")
        return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------------
# HTTP


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"object": "error", "message": message, "type": kind, "code": status}, status=status)


def _token_text(i: int) -> str:
    return " " + _WORDS[i % len(_WORDS)]


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int | str:
    """Prompt length in tokens, or an error message naming the bad field."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: must be a non-empty list"
        total = 0
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                return f"messages[{i}]: must be an object"
            content = m.get("content", "")
            if isinstance(content, list):  # OpenAI content parts
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                return f"messages[{i}].content: must be a string"
            total += len(content.split()) + CHAT_TEMPLATE_TOKENS
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # token ids
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return "prompt: must be a string or a list of token ids"
    return max(1, len(prompt.split()))


class RealtimeServer:
    """aiohttp application around a RealtimeFleet. `await start(port)`, `await stop()`."""

    def __init__(self, fleet: RealtimeFleet, *, tick_s: float = 0.05, poll_s: float = 0.01) -> None:
        self.fleet = fleet
        self.tick_s = tick_s
        self.poll_s = poll_s
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_post("/v1/chat/completions", self.chat_completions)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.streams = 0
        self._ticker: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        # Open streams get a second to finish on shutdown, not aiohttp's default minute.
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.runner:
            await self.runner.cleanup()

    async def _tick_loop(self) -> None:
        # Keeps the engine, the utilisation samples and the completion records current between scrapes.
        while True:
            self.fleet.tick()
            await asyncio.sleep(self.tick_s)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.fleet.render_metrics(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.fleet.spec.model, "object": "model", "created": 0, "owned_by": "gpumix-sim"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body: not valid JSON", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "request body: must be a JSON object", "BadRequestError")
        model = body.get("model")
        if model != self.fleet.spec.model:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        prompt = _prompt_tokens(body, chat)
        if isinstance(prompt, str):
            return _error(400, prompt, "BadRequestError")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, f"max_tokens: must be an integer >= 1, got {max_tokens!r}", "BadRequestError")
        stream = bool(body.get("stream", False))
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        rid = self.fleet.submit(prompt, max_tokens, watch=True)
        req_id = f"{'chatcmpl' if chat else 'cmpl'}-{rid:08x}{uuid.uuid4().hex[:16]}"
        created = int(time.time())
        try:
            if stream:
                return await self._stream(request, rid, req_id, created, chat, prompt, include_usage)
            return await self._whole(rid, req_id, created, chat, prompt)
        finally:
            self.fleet.release(rid)

    def _poll_interval(self) -> float:
        # Many open streams each polling at 100 Hz would starve the loop; back off as they grow.
        return min(0.05, max(self.poll_s, 0.0005 * self.streams))

    async def _wait(self, rid: int) -> Completion | None:
        while True:
            _, done, c = self.fleet.progress(rid)
            if done:
                return c
            await asyncio.sleep(self._poll_interval())

    async def _whole(self, rid: int, req_id: str, created: int, chat: bool, prompt: int) -> web.Response:
        c = await self._wait(rid)
        if c is None or c.dropped:
            why = c.reason if c else "lost"
            status = 400 if why == "too-long" else 503
            return _error(status, f"request not served: {why}", "ServiceUnavailableError")
        text = "".join(_token_text(i) for i in range(c.output_tokens))
        usage = {"prompt_tokens": prompt, "completion_tokens": c.output_tokens,
                 "total_tokens": prompt + c.output_tokens}
        model = self.fleet.spec.model
        if chat:
            return web.json_response({"id": req_id, "object": "chat.completion", "created": created, "model": model,
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                   "finish_reason": "length"}], "usage": usage})
        return web.json_response({"id": req_id, "object": "text_completion", "created": created, "model": model,
                                  "choices": [{"index": 0, "text": text, "logprobs": None,
                                               "finish_reason": "length"}], "usage": usage})

    async def _stream(self, request: web.Request, rid: int, req_id: str, created: int, chat: bool, prompt: int,
                      include_usage: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        model = self.fleet.spec.model
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, *, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            payload = {"id": req_id, "object": kind, "created": created, "model": model, "choices": [choice]}
            return f"data: {json.dumps(payload)}\n\n".encode()

        self.streams += 1
        try:
            if chat:
                await resp.write(chunk(None, None, role=True))
            sent = 0
            c: Completion | None = None
            while True:
                tokens, done, c = self.fleet.progress(rid)
                if done and (c is None or c.dropped):
                    why = c.reason if c else "lost"
                    err = {"error": {"object": "error", "message": f"request not served: {why}",
                                     "type": "ServiceUnavailableError", "code": 503}}
                    await resp.write(f"data: {json.dumps(err)}\n\n".encode())
                    await resp.write(b"data: [DONE]\n\n")
                    return resp
                while sent < tokens:
                    last = done and sent == tokens - 1
                    await resp.write(chunk(_token_text(sent), "length" if last else None))
                    sent += 1
                if done:
                    break
                await asyncio.sleep(self._poll_interval())
            if include_usage:
                usage = {"id": req_id, "object": kind, "created": created, "model": model, "choices": [],
                         "usage": {"prompt_tokens": prompt, "completion_tokens": sent,
                                   "total_tokens": prompt + sent}}
                await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.streams -= 1


class ServerThread:
    """Runs a RealtimeServer in its own thread and event loop, for synchronous drivers (demo, tests).

    `run(coro)` executes a coroutine on the server's loop (e.g. a trace replayer)."""

    def __init__(self, fleet: RealtimeFleet, port: int = 0, **kw: Any) -> None:
        self.fleet = fleet
        self.server = RealtimeServer(fleet, **kw)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._port = port
        self.thread = threading.Thread(target=self._main, name="gpumix-sim-realtime", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start(self._port))
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"simulated fleet server did not start: {self._error}") from self._error
        return self

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
