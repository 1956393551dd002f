"""Load generator for profiling: drives one OpenAI-compatible endpoint (vLLM, the simulator, anything that
streams `/v1/completions` or `/v1/chat/completions`) and measures what one replica can do.

A run is a list of points. A point is one request shape (input, output tokens) under one load: an offered
rate with Poisson or constant arrivals (open loop, what `aibrix_benchmark` does), or a fixed number of
requests in flight (closed loop, what AutoFit's batch-size model wants). Per request we measure TTFT, TPOT
(mean gap between output tokens after the first), E2E and token counts; per point the throughput and
mean/P50/P90/P99. One JSON line per point goes to the output file as soon as the point ends, so Ctrl-C
keeps everything finished and a re-run skips it.

Failures of the server are data, not crashes: HTTP errors, timeouts, refused connections and malformed
streams are counted per point by kind. The only host ever contacted is the one in `url`: redirects are not
followed and proxy settings from the environment are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import json
import math
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from optimizer.profile import BenchmarkRow, parse_benchmark_row

FORMAT = "gpumix.benchmark/v1"
API_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
ARRIVALS = ("poisson", "constant")
# Words that common BPE tokenizers (Llama, GPT) encode as one token each after a space; the calibration
# request corrects whatever difference remains for the server's own tokenizer and chat template.
_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than "
    "first been its who now people my made over did down only way find use may water long little very after "
    "words called just where most know get through back much go good new write our me man too any day same "
    "right look think also around another came come work three must because does part"
)
_WORDS = tuple(_WORD_TEXT.split())


class BenchmarkError(ValueError):
    """Bad benchmark input (URL, grid, trace, output file); names what is wrong."""


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Point:
    """One measurement: a request shape under one load. Exactly one of `rate` and `concurrency` is set,
    except for a trace replay, where the trace sets both shapes and arrival times."""

    input_tokens: int
    output_tokens: int
    rate: float | None = None
    concurrency: int | None = None
    arrival: str = "poisson"
    requests: int = 100
    trace: str | None = None

    @property
    def mode(self) -> str:
        if self.trace is not None:
            return "trace"
        return "concurrency" if self.concurrency is not None else self.arrival

    @property
    def label(self) -> str:
        if self.trace is not None:
            load = f"trace {self.trace}"
        elif self.concurrency is not None:
            load = f"c={self.concurrency}"
        else:
            load = f"{self.rate:g} req/s {self.arrival}"
        return f"in={self.input_tokens} out={self.output_tokens} {load}"


def point_key(model: str, api: str, input_tokens: int, output_tokens: int, mode: str,
              rate: float | None, concurrency: int | None, trace: str | None) -> tuple[Any, ...]:
    """What makes two measurements the same point, for resumption."""
    return (model, api, int(input_tokens), int(output_tokens), mode,
            None if rate is None else round(float(rate), 6), concurrency, trace)


def grid_points(inputs: Sequence[int], outputs: Sequence[int], *, rates: Sequence[float] = (),
                concurrencies: Sequence[int] = (), arrival: str = "poisson", requests: int = 100) -> list[Point]:
    """The sweep: every (input, output) cell at every load, lightest load first within a cell."""
    problems: list[str] = []
    if not inputs or any(n < 1 for n in inputs):
        problems.append(f"input lengths must be positive token counts, got {list(inputs)}")
    if not outputs or any(n < 1 for n in outputs):
        problems.append(f"output lengths must be positive token counts, got {list(outputs)}")
    if bool(rates) == bool(concurrencies):
        problems.append("give either request rates or concurrencies (not both, not neither)")
    if any(not math.isfinite(r) or r <= 0 for r in rates):
        problems.append(f"rates must be positive req/s, got {list(rates)}")
    if any(c < 1 for c in concurrencies):
        problems.append(f"concurrencies must be positive integers, got {list(concurrencies)}")
    if arrival not in ARRIVALS:
        problems.append(f"arrival must be one of {', '.join(ARRIVALS)}, got {arrival!r}")
    if requests < 1:
        problems.append(f"requests per point must be positive, got {requests}")
    if problems:
        raise BenchmarkError("; ".join(problems))
    points: list[Point] = []
    for i in inputs:
        for o in outputs:
            points += [Point(i, o, rate=float(r), arrival=arrival, requests=requests) for r in sorted(rates)]
            points += [Point(i, o, concurrency=c, requests=requests) for c in sorted(concurrencies)]
    return points


@dataclass(frozen=True)
class TraceRequest:
    at: float  # seconds after the first request
    input_tokens: int
    output_tokens: int


def load_trace(path: str | Path, *, limit: int, speedup: float = 1.0, max_tokens: int = 8192) -> list[TraceRequest]:
    """Azure LLM trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`) or Mooncake-style JSONL
    (`timestamp` in ms, `input_length`, `output_length`). At most `limit` requests, time divided by
    `speedup`, lengths clipped to `max_tokens`."""
    path = Path(path)
    if limit < 1 or not speedup > 0:
        raise BenchmarkError(f"{path}: limit must be ≥ 1 and speedup > 0")
    try:
        text = path.read_text()
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read trace: {exc}") from exc
    raw: list[tuple[float, int, int]] = []
    try:
        if path.suffix == ".csv":
            for n, rec in enumerate(csv.DictReader(text.splitlines()), start=2):
                if len(raw) >= limit:
                    break
                try:
                    ts = _parse_timestamp(rec["TIMESTAMP"])
                    raw.append((ts, int(rec["ContextTokens"]), int(rec["GeneratedTokens"])))
                except (KeyError, ValueError) as exc:
                    raise BenchmarkError(f"{path}: line {n}: need TIMESTAMP, ContextTokens, GeneratedTokens "
                                         f"({exc})") from exc
        else:
            for n, line in enumerate(text.splitlines(), start=1):
                if len(raw) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    raw.append((float(rec["timestamp"]) / 1000.0, int(rec["input_length"]), int(rec["output_length"])))
                except (KeyError, ValueError, TypeError) as exc:
                    raise BenchmarkError(f"{path}: line {n}: need timestamp, input_length, output_length "
                                         f"({exc})") from exc
    except csv.Error as exc:
        raise BenchmarkError(f"{path}: not a CSV trace: {exc}") from exc
    if not raw:
        raise BenchmarkError(f"{path}: no requests in trace")
    t0 = min(r[0] for r in raw)
    return sorted(
        (TraceRequest((ts - t0) / speedup, max(1, min(i, max_tokens)), max(1, min(o, max_tokens)))
         for ts, i, o in raw),
        key=lambda r: r.at,
    )


def _parse_timestamp(value: str) -> float:
    from datetime import datetime

    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    # The Azure trace has 7 fractional digits, one more than datetime accepts.
    if "." in value:
        head, frac = value.split(".", 1)
        value = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(value).timestamp()


# ------------------------------------------------------------------------------------------ the client


@dataclass
class RequestResult:
    ok: bool
    error: str | None = None
    sent: float = 0.0  # seconds after the point started
    e2e: float = 0.0
    ttft: float | None = None
    tpot: float | None = None
    gaps: list[float] = field(default_factory=list)  # inter-token latencies
    input_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = False
    detail: str = ""  # what went wrong, in the client's or the server's words (not written per request)


def endpoint_url(url: str, api: str) -> str:
    """The one URL requests go to: `url` as given, completed with the API path if it stops short."""
    if api not in API_PATHS:
        raise BenchmarkError(f"api must be one of {', '.join(API_PATHS)}, got {api!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchmarkError(f"--url must be an http(s) URL with a host, got {url!r}")
    base = url.rstrip("/")
    path = API_PATHS[api]
    if base.endswith(path):
        return base
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + path


class OpenAIClient:
    """Streams one request at a time per call; the session's connector bounds connections."""

    def __init__(self, session: aiohttp.ClientSession, url: str, model: str, *, api: str = "completions",
                 timeout: float = 120.0, ignore_eos: bool = True, api_key: str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.session = session
        self.url = endpoint_url(url, api)
        self.model = model
        self.api = api
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.ignore_eos = ignore_eos
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.clock = clock

    def body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
        }
        if self.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension: always produce max_tokens
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    async def send(self, prompt: str, max_tokens: int, *, origin: float = 0.0) -> RequestResult:
        start = self.clock()
        result = RequestResult(ok=False, sent=start - origin)
        try:
            async with self.session.post(self.url, json=self.body(prompt, max_tokens), headers=self.headers,
                                         timeout=self.timeout, allow_redirects=False) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    result.error = f"http_{resp.status}"
                    result.detail = f"HTTP {resp.status}: {body[:200].decode('utf-8', 'replace')}"
                else:
                    await self._read_stream(resp, start, result)
        except TimeoutError:
            result.error = "timeout"
            result.detail = f"no complete answer within {self.timeout.total:g} s (--timeout)"
        except aiohttp.ClientConnectionError as exc:
            result.error = "connection"
            result.detail = f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientPayloadError as exc:
            result.error = "malformed_stream"
            result.detail = f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientError as exc:
            result.error = "client_error"
            result.detail = f"{type(exc).__name__}: {exc}"
        if result.error is not None and not result.detail:
            result.detail = result.error.replace("_", " ")
        result.e2e = self.clock() - start
        return result

    async def _read_stream(self, resp: aiohttp.ClientResponse, start: float, result: RequestResult) -> None:
        token_times: list[float] = []
        chunks = 0
        done = False
        async for raw in resp.content:
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith(":") or not line.startswith("data:"):
                continue  # SSE comments, event names, blank separators
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                result.error = "malformed_stream"
                return
            if not isinstance(chunk, dict):
                result.error = "malformed_stream"
                return
            if "error" in chunk:
                result.error = "server_error"
                return
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                result.input_tokens = int(usage.get("prompt_tokens") or 0)
                result.output_tokens = int(usage.get("completion_tokens") or 0)
                result.usage_reported = True
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                result.error = "malformed_stream"
                return
            for choice in choices[:1]:
                text = _choice_text(choice, self.api)
                if text is None:
                    result.error = "malformed_stream"
                    return
                if text:
                    chunks += 1
                    token_times.append(self.clock())
        if not done:
            result.error = "malformed_stream"  # ended without [DONE]: cut off
            return
        if not token_times:
            result.error = "no_tokens"
            return
        if not result.usage_reported:
            result.output_tokens = chunks
        result.ttft = token_times[0] - start
        result.gaps = [b - a for a, b in itertools.pairwise(token_times)]
        if result.output_tokens > 1:
            # A chunk may carry several tokens; the token count, not the chunk count, is the divisor.
            result.tpot = (token_times[-1] - token_times[0]) / (result.output_tokens - 1)
        result.ok = True


def _choice_text(choice: Any, api: str) -> str | None:
    if not isinstance(choice, dict):
        return None
    if api == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else None


# --------------------------------------------------------------------------------------------- prompts


class Prompts:
    """Prompts of a wanted token count. Each is a distinct random word sequence, so a prefix cache cannot
    turn a prefill benchmark into a cache benchmark. The word count for each length is calibrated once
    against the server's reported `usage.prompt_tokens` (tokenizer and chat template included)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.words_for: dict[int, int] = {}
        self.calibrated: dict[int, int | None] = {}  # length → prompt tokens the server reported
        self.failed: dict[int, str] = {}  # length → why its calibration request failed

    def make(self, input_tokens: int) -> str:
        n = self.words_for.get(input_tokens, input_tokens)
        return " ".join(self.rng.choice(_WORDS) for _ in range(max(1, n)))

    async def calibrate(self, client: OpenAIClient, input_tokens: int, attempts: int = 4) -> int | None:
        if input_tokens in self.calibrated:
            return self.calibrated[input_tokens]
        n = input_tokens
        reported: int | None = None
        for _ in range(attempts):
            self.words_for[input_tokens] = n
            probe = await client.send(self.make(input_tokens), 1)
            if not probe.ok:
                self.failed[input_tokens] = f"{probe.error}: {probe.detail}"
                break
            if not probe.usage_reported or probe.input_tokens <= 0:
                break
            reported = probe.input_tokens
            if reported == input_tokens:
                break
            n = max(1, n + input_tokens - reported)
        self.calibrated[input_tokens] = reported
        return reported


# ---------------------------------------------------------------------------------------- running points


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "P50": float(np.percentile(arr, 50)),
        "P90": float(np.percentile(arr, 90)),
        "P99": float(np.percentile(arr, 99)),
    }


def summarize(point: Point, results: Sequence[RequestResult], *, model: str, api: str, seed: int,
              complete: bool, not_sent: int = 0, started: float = 0.0) -> dict[str, Any]:
    """One JSON line for one point. Throughput is over the span from the first send to the last finish."""
    ok = [r for r in results if r.ok]
    errors = Counter(r.error or "unknown" for r in results if not r.ok)
    if not_sent:
        errors["not_sent"] += not_sent
    span = max((r.sent + r.e2e for r in results), default=0.0)
    out_tokens = sum(r.output_tokens for r in ok)
    row: dict[str, Any] = {
        "format": FORMAT,
        "model": model,
        "api": api,
        "mode": point.mode,
        "input_tokens": point.input_tokens,
        "output_tokens": point.output_tokens,
        "request_rate": point.rate,
        "concurrency": point.concurrency,
        "trace": point.trace,
        "seed": seed,
        "requests": point.requests,
        "sent": len(results),
        "completed": len(ok),
        "errors": dict(sorted(errors.items())),
        "complete": complete,
        "started": started,
        "duration_s": span,
        "tput_rps": len(ok) / span if span > 0 else 0.0,
        "tokens_per_s": out_tokens / span if span > 0 else 0.0,
        # Little's law from the client side: time-average number of requests in flight.
        "mean_concurrency": sum(r.e2e for r in results) / span if span > 0 else 0.0,
        "input_tokens_measured": float(np.mean([r.input_tokens for r in ok])) if ok else None,
        "output_tokens_measured": float(np.mean([r.output_tokens for r in ok])) if ok else None,
        "latency": {},
    }
    for name, values in (
        ("TTFT", [r.ttft for r in ok if r.ttft is not None]),
        ("TPOT", [r.tpot for r in ok if r.tpot is not None]),
        ("E2E", [r.e2e for r in ok]),
        ("ITL", [g for r in ok for g in r.gaps]),
    ):
        stats = _stats(values)
        if stats is not None:
            row["latency"][name] = stats
    return row


def row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return point_key(row["model"], row["api"], row["input_tokens"], row["output_tokens"], row["mode"],
                     row.get("request_rate"), row.get("concurrency"), row.get("trace"))


def to_aibrix_rows(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The same point as `aibrix_benchmark` JSON lines: TPUT (req/s), TT (output tokens/s), then E2E, TTFT,
    TPOT with mean/P50/P90/P99. A closed-loop point has no offered rate; its measured throughput stands in,
    which makes AIBrix's "sustained ≥ 90 % of offered" test hold by construction."""
    rate = row.get("request_rate")
    if rate is None:
        rate = row["tput_rps"]
    base = {
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "request_rate": rate,
        "seed": row.get("seed", 0),
        "model": row["model"],
        "samples": row["completed"],
    }
    out = [
        {**base, "metric": "TPUT", "mean": row["tput_rps"]},
        {**base, "metric": "TT", "mean": row["tokens_per_s"]},
    ]
    for name in ("E2E", "TTFT", "TPOT"):
        stats = row.get("latency", {}).get(name)
        if stats is not None:
            out.append({**base, "metric": name, **stats})
    return out


def rows_to_benchmark_rows(row: Mapping[str, Any]) -> list[BenchmarkRow]:
    return [parse_benchmark_row(r) for r in to_aibrix_rows(row)]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Our JSON lines from an earlier run (empty if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{path}: line {n}: not JSON ({exc}); fix or move the file") from exc
        if not isinstance(row, dict) or row.get("format") != FORMAT:
            raise BenchmarkError(f"{path}: line {n}: not a {FORMAT} row; write to a new file")
        rows.append(row)
    return rows


@dataclass
class Run:
    """Progress of a whole run, for the command to report."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Point] = field(default_factory=list)
    interrupted: bool = False
    calibration: dict[int, int | None] = field(default_factory=dict)
    calibration_failed: dict[int, str] = field(default_factory=dict)
    aborted: str | None = None  # why the run stopped early: every request of a point failed

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Measured points with any failure: not complete, measured again by the next run."""
        return [r for r in self.rows if r["errors"]]


class Unreachable(BenchmarkError):
    """The endpoint answered nothing usable to the preflight request: nothing was measured."""


class Benchmark:
    def __init__(self, url: str, model: str, *, api: str = "completions", seed: int = 0,
                 max_connections: int = 64, request_timeout: float = 120.0, point_timeout: float = 600.0,
                 ignore_eos: bool = True, api_key: str | None = None, calibrate: bool = True) -> None:
        endpoint_url(url, api)  # fail on a bad URL before any work
        if max_connections < 1:
            raise BenchmarkError(f"max connections must be ≥ 1, got {max_connections}")
        self.url = url
        self.model = model
        self.api = api
        self.seed = seed
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.point_timeout = point_timeout
        self.ignore_eos = ignore_eos
        self.api_key = api_key
        self.calibrate = calibrate
        self.stop = asyncio.Event()

    def key(self, point: Point) -> tuple[Any, ...]:
        return point_key(self.model, self.api, point.input_tokens, point.output_tokens, point.mode,
                         point.rate, point.concurrency, point.trace)

    async def preflight(self, client: OpenAIClient) -> None:
        """One tiny request before any point: an endpoint that cannot answer it fails the run at once, with
        the connection's own words, instead of after every point has timed out."""
        probe = await client.send("hello", 1)
        if not probe.ok:
            raise Unreachable(f"{client.url} did not answer a 1-token test request ({probe.error}): {probe.detail}")

    async def run(self, points: Sequence[Point], out: str | Path, *, aibrix_out: str | Path | None = None,
                  trace: Sequence[TraceRequest] = (), progress: bool = False,
                  on_row: Callable[[dict[str, Any]], None] | None = None) -> Run:
        """Measure every point not already in `out` (complete rows only), appending one line per point.
        A point is complete only when no request failed and it was not interrupted; a point whose every
        request failed stops the run (`Run.aborted`). Raises Unreachable when the preflight fails."""
        from tqdm import tqdm

        done = {row_key(r) for r in read_rows(out) if r.get("complete")}
        run = Run()
        todo = []
        for p in points:
            (run.skipped if self.key(p) in done else todo).append(p)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.stop.set)
        connector = aiohttp.TCPConnector(limit=self.max_connections)
        bar = tqdm(total=sum(p.requests for p in todo), unit="req", disable=not progress, dynamic_ncols=True)
        try:
            async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
                client = OpenAIClient(session, self.url, self.model, api=self.api, timeout=self.request_timeout,
                                      ignore_eos=self.ignore_eos, api_key=self.api_key)
                prompts = Prompts(self.seed)
                if todo:
                    await self.preflight(client)
                for point in todo:
                    if self.stop.is_set():
                        run.interrupted = True
                        break
                    bar.set_postfix_str(point.label)
                    if self.calibrate:
                        lengths = {r.input_tokens for r in trace} if point.trace else {point.input_tokens}
                        for n in sorted(lengths)[:64]:  # a trace has many lengths; calibrate the first few
                            await prompts.calibrate(client, n)
                    started = time.time()
                    results, not_sent = await self._measure(client, prompts, point, trace, bar)
                    complete = not self.stop.is_set() and not not_sent and all(r.ok for r in results)
                    row = summarize(point, results, model=self.model, api=self.api, seed=self.seed,
                                    complete=complete, not_sent=not_sent, started=started)
                    _append(out, [row])
                    if aibrix_out is not None and complete:
                        _append(aibrix_out, to_aibrix_rows(row))
                    run.rows.append(row)
                    if on_row is not None:
                        on_row(row)
                    if self.stop.is_set():
                        run.interrupted = True
                        break
                    if results and not any(r.ok for r in results):
                        first = next(r for r in results if r.error)
                        kinds = ", ".join(f"{k}: {n}" for k, n in row["errors"].items())
                        run.aborted = (f"every request of point {point.label} failed ({kinds}); first: "
                                       f"{first.detail}")
                        break
                run.calibration = dict(prompts.calibrated)
                run.calibration_failed = dict(prompts.failed)
        finally:
            bar.close()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        return run

    async def _measure(self, client: OpenAIClient, prompts: Prompts, point: Point,
                       trace: Sequence[TraceRequest], bar: Any) -> tuple[list[RequestResult], int]:
        loop = asyncio.get_running_loop()
        origin = client.clock()
        deadline = loop.time() + self.point_timeout
        results: list[RequestResult] = []

        async def one(input_tokens: int, output_tokens: int) -> None:
            sent_at = client.clock()
            try:
                res = await client.send(prompts.make(input_tokens), output_tokens, origin=origin)
            except asyncio.CancelledError:
                # Cut off by the point's deadline or Ctrl-C: counted, not silently dropped.
                results.append(RequestResult(ok=False, error="cancelled", sent=sent_at - origin,
                                             e2e=client.clock() - sent_at))
                raise
            results.append(res)
            bar.update(1)

        if point.concurrency is not None:
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while sent < point.requests and not self.stop.is_set() and loop.time() < deadline:
                    sent += 1
                    await one(point.input_tokens, point.output_tokens)

            workers = [asyncio.create_task(worker()) for _ in range(point.concurrency)]
            await self._wait(workers, deadline)
            return results, point.requests - sent

        if point.trace is not None:
            schedule = [(r.at, r.input_tokens, r.output_tokens) for r in trace[: point.requests]]
        else:
            assert point.rate is not None
            rng = np.random.default_rng([self.seed, point.input_tokens, point.output_tokens])
            if point.arrival == "poisson":
                gaps = rng.exponential(1.0 / point.rate, size=point.requests)
                gaps[0] = 0.0
            else:
                gaps = np.full(point.requests, 1.0 / point.rate)
                gaps[0] = 0.0
            schedule = [(float(t), point.input_tokens, point.output_tokens) for t in np.cumsum(gaps)]
        start = loop.time()
        tasks: list[asyncio.Task[None]] = []
        for at, i, o in schedule:
            delay = start + at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), min(delay, max(0.0, deadline - loop.time())))
            if self.stop.is_set() or loop.time() >= deadline:
                break
            tasks.append(asyncio.create_task(one(i, o)))
        await self._wait(tasks, deadline)
        return results, len(schedule) - len(tasks)

    async def _wait(self, tasks: list[asyncio.Task[None]], deadline: float) -> None:
        """Wait for in-flight requests until the point's deadline or Ctrl-C; the rest are cancelled."""
        loop = asyncio.get_running_loop()
        pending = {t for t in tasks if not t.done()}
        while pending and not self.stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            stop_task = asyncio.ensure_future(self.stop.wait())
            _, pending = await asyncio.wait(pending | {stop_task}, timeout=remaining,
                                            return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stop_task)
            stop_task.cancel()
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _append(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with Path(path).open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()


def iter_benchmark_rows(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict[str, Any] | BenchmarkRow]]:
    """Lines of either format, tagged with their line numbers: our point rows (dicts) or AIBrix rows."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{source}: line {n}: not JSON ({exc})") from exc
        if isinstance(item, dict) and item.get("format") == FORMAT:
            yield n, item
        else:
            try:
                yield n, parse_benchmark_row(item)
            except ValueError as exc:
                raise BenchmarkError(f"{source}: line {n}: {exc}") from exc
