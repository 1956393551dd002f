"""Observation: a fixed handful of aggregated PromQL queries per cycle → per-model facts → Demand.

Every query is aggregated `by` namespace/model(/variant) over the whole fleet, so the number of queries per
cycle is constant in the number of variants (`Observer.queries_sent` counts them for the benchmark). Queries
run concurrently in worker threads (prometheus-api-client is blocking) at one evaluation timestamp.

What can go wrong is classified, logged once per change of state, and counted: `unreachable`, `timeout`,
`http_5xx`, `http_4xx` (usually bad PromQL), `empty` (query answered nothing), `invalid_sample` (NaN, Inf,
negative), `stale` (newest sample older than max_sample_age). A model whose facts are missing gets no
demand this cycle (None): the decision then keeps its last recommendation, so missing data never shrinks a
fleet.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from optimizer.demand import Demand, from_buckets, from_histograms
from optimizer.profile import Grid
from scaler import logs
from scaler.config import Config

log = logs.get("gpumix.prometheus")

ModelKey = tuple[str, str]  # (namespace, model)
DeploymentKey = tuple[str, str]  # (namespace, deployment)

# Without these, demand cannot be estimated at all; the rest refine it or feed dashboards.
REQUIRED = ("completions", "waiting")
CYCLE_QUERIES = (
    "completions", "waiting", "running", "prompt_histogram", "generation_histogram", "prompt_tokens",
    "generation_tokens", "ttft_p99", "tpot_p99", "gpu_util", "replicas", "ready_replicas", "freshness",
    "kv_cache",
)


@dataclass
class ModelFacts:
    completions_rps: float = 0.0
    completions_by_variant: dict[str, float] = field(default_factory=dict)
    waiting: float = 0.0
    running: float = 0.0
    prompt_histogram: list[tuple[float, float]] = field(default_factory=list)
    generation_histogram: list[tuple[float, float]] = field(default_factory=list)
    prompt_tokens_rps: float | None = None
    generation_tokens_rps: float | None = None
    ttft_p99: float | None = None
    tpot_p99: float | None = None
    newest_sample: float | None = None  # unix time of the freshest sample
    seen: set[str] = field(default_factory=set)  # which queries had series for this model


@dataclass
class Observation:
    at: float
    models: dict[ModelKey, ModelFacts]
    replicas: dict[DeploymentKey, int]
    ready_replicas: dict[DeploymentKey, int]
    gpu_util: dict[DeploymentKey, float]
    kv_cache: dict[DeploymentKey, float]
    errors: dict[str, str]  # query name -> error kind (only failed queries)
    invalid_samples: int = 0

    @property
    def complete(self) -> bool:
        """The required queries answered (possibly with no series)."""
        return not any(q in self.errors for q in REQUIRED)


class StateLog:
    """Logs a condition only when it changes (not every cycle it persists)."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def report(self, key: str, state: str, level: str = "warning", **kw: Any) -> bool:
        if self._last.get(key) == state:
            return False
        previous = self._last.get(key)
        self._last[key] = state
        if state == "ok":
            if previous is not None:
                log.info("recovered", what=key, was=previous, **kw)
        else:
            getattr(log, level)("observation_problem", what=key, state=state, **kw)
        return True


def _classify(exc: BaseException) -> str:
    # With retries off, urllib3 reports a read timeout as a ConnectionError wrapping ReadTimeoutError.
    if isinstance(exc, requests.Timeout) or "TimeoutError" in str(exc):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "unreachable"
    if isinstance(exc, PrometheusApiClientException):
        text = str(exc)
        return "http_5xx" if "Code 5" in text else "http_4xx"
    return "error"


def _finite_value(sample: Mapping[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


class Observer:
    def __init__(self, config: Config, on_error: Callable[[str], None] | None = None) -> None:
        self.config = config
        retry = Retry(total=0, connect=0, read=0, status=0, raise_on_status=False)
        self.client = PrometheusConnect(url=config.prometheus or "", disable_ssl=True, retry=retry,
                                        timeout=config.prometheus_timeout)  # type: ignore[arg-type]
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="promql")
        self.state = StateLog()
        self.queries_sent = 0
        self.on_error = on_error or (lambda kind: None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _query(self, name: str, at: float) -> list[dict[str, Any]]:
        self.queries_sent += 1
        timeout = f"{int(self.config.prometheus_timeout * 1000)}ms"
        result = self.client.custom_query(self.config.query(name), params={"time": f"{at:.3f}", "timeout": timeout})
        return list(result or [])

    async def run_queries(
        self, names: Sequence[str], at: float
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self.pool, self._query, name, at) for name in names]
        answers = await asyncio.gather(*futures, return_exceptions=True)
        results: dict[str, list[dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                kind = _classify(answer)
                errors[name] = kind
                self.state.report(f"query:{name}", kind, error=str(answer)[:300], query=self.config.query(name))
                self.on_error(kind)
            else:
                results[name] = answer
                if not answer and name in REQUIRED:
                    self.state.report(f"query:{name}", "empty", level="info", query=self.config.query(name))
                else:
                    self.state.report(f"query:{name}", "ok")
        return results, errors

    async def observe(self, at: float | None = None) -> Observation:
        at = time.time() if at is None else at
        results, errors = await self.run_queries(CYCLE_QUERIES, at)
        return parse_results(self.config, results, errors, at, self.on_error)

    async def waiting(self, at: float | None = None) -> dict[ModelKey, float] | None:
        """The fast path for scale-from-zero: one query, waiting requests per model."""
        at = time.time() if at is None else at
        results, errors = await self.run_queries(("waiting",), at)
        if errors:
            return None
        out: dict[ModelKey, float] = {}
        c = self.config
        for sample in results.get("waiting", []):
            labels = sample.get("metric", {})
            value = _finite_value(sample)
            if value is None:
                continue
            key = (labels.get(c.namespace_label, ""), labels.get(c.model_label, ""))
            out[key] = out.get(key, 0.0) + value
        return out


def parse_results(
    config: Config,
    results: Mapping[str, list[dict[str, Any]]],
    errors: Mapping[str, str],
    at: float,
    on_error: Callable[[str], None] = lambda kind: None,
) -> Observation:
    c = config
    obs = Observation(at=at, models={}, replicas={}, ready_replicas={}, gpu_util={}, kv_cache={}, errors=dict(errors))

    def facts(labels: Mapping[str, str]) -> ModelFacts:
        key = (labels.get(c.namespace_label, ""), labels.get(c.model_label, ""))
        return obs.models.setdefault(key, ModelFacts())

    def samples(name: str) -> list[tuple[Mapping[str, str], float]]:
        out = []
        for sample in results.get(name, []):
            value = _finite_value(sample)
            if value is None:
                obs.invalid_samples += 1
                on_error("invalid_sample")
                continue
            out.append((sample.get("metric", {}), value))
        return out

    for labels, v in samples("completions"):
        f = facts(labels)
        f.completions_rps += v
        variant = labels.get(c.variant_label, "")
        f.completions_by_variant[variant] = f.completions_by_variant.get(variant, 0.0) + v
        f.seen.add("completions")
    for name, attr in (("waiting", "waiting"), ("running", "running")):
        for labels, v in samples(name):
            f = facts(labels)
            setattr(f, attr, getattr(f, attr) + v)
            f.seen.add(name)
    for name, attr in (("prompt_histogram", "prompt_histogram"), ("generation_histogram", "generation_histogram")):
        for labels, v in samples(name):
            le = labels.get("le")
            if le is None:
                continue
            getattr(facts(labels), attr).append((float(le), v))
            facts(labels).seen.add(name)
    for name in ("prompt_tokens", "generation_tokens", "ttft_p99", "tpot_p99"):
        for labels, v in samples(name):
            f = facts(labels)
            attr = f"{name}_rps" if name.endswith("tokens") else name
            setattr(f, attr, v)
            f.seen.add(name)
    for labels, v in samples("freshness"):
        f = facts(labels)
        f.newest_sample = max(f.newest_sample or 0.0, v)
    for name, target in (("replicas", obs.replicas), ("ready_replicas", obs.ready_replicas)):
        for labels, v in samples(name):
            target[(labels.get("namespace", ""), labels.get("deployment", ""))] = round(v)  # type: ignore[index]
    for labels, v in samples("gpu_util"):
        obs.gpu_util[(labels.get(c.namespace_label, ""), labels.get("deployment", ""))] = v
    for labels, v in samples("kv_cache"):
        obs.kv_cache[(labels.get(c.namespace_label, ""), labels.get(c.variant_label, ""))] = v
    return obs


# ------------------------------------------------------------------------------------------ demand


@dataclass(frozen=True)
class Estimate:
    demand: Demand
    source: str  # "histograms", "token_rates" or "no_lengths"
    crosscheck: float | None  # histogram mean prompt length / token-rate mean prompt length


def histogram_mean(cumulative: Sequence[tuple[float, float]]) -> float | None:
    """Mean length from cumulative `le` buckets, each bin at its midpoint (the +Inf bin at its lower edge)."""
    bins = sorted(cumulative)
    total, weighted, prev_le, prev_count = 0.0, 0.0, 0.0, 0.0
    for le, count in bins:
        mass = count - prev_count
        if mass > 0:
            point = prev_le if not math.isfinite(le) else (prev_le + le) / 2
            weighted += mass * point
            total += mass
        if math.isfinite(le):
            prev_le = le
        prev_count = max(prev_count, count)
    return weighted / total if total > 0 else None


def _has_mass(hist: Sequence[tuple[float, float]]) -> bool:
    return any(count > 0 for _, count in hist)


def estimate_demand(key: str, facts: ModelFacts, grid: Grid, drain_time: float) -> Estimate:
    """DESIGN step 2: completions plus the queue to drain, spread over the grid by the length histograms;
    token rates give the lengths when histograms are missing, and cross-check them when both exist."""
    total = facts.completions_rps + facts.waiting / drain_time
    token_shape: tuple[float, float] | None = None
    if facts.completions_rps > 0 and facts.prompt_tokens_rps is not None and facts.generation_tokens_rps is not None:
        token_shape = (facts.prompt_tokens_rps / facts.completions_rps,
                       facts.generation_tokens_rps / facts.completions_rps)
    if _has_mass(facts.prompt_histogram) and _has_mass(facts.generation_histogram):
        demand = from_histograms(key, grid, facts.prompt_histogram, facts.generation_histogram, total)
        crosscheck = None
        hist_mean = histogram_mean(facts.prompt_histogram)
        if token_shape is not None and hist_mean is not None and token_shape[0] > 0:
            crosscheck = hist_mean / token_shape[0]
        return Estimate(demand, "histograms", crosscheck)
    if token_shape is not None:
        return Estimate(from_buckets(key, grid, [(token_shape[0], token_shape[1], total)]), "token_rates", None)
    # No lengths at all: the longest bucket, the conservative side.
    return Estimate(from_histograms(key, grid, [], [], total), "no_lengths", None)


def bucket_rates(demand: Demand) -> list[tuple[int, int, float]]:
    rows = []
    for i, out_t in enumerate(demand.grid.outputs):
        for j, in_t in enumerate(demand.grid.inputs):
            rps = float(demand.rates[i, j])
            if rps > 0:
                rows.append((in_t, out_t, rps))
    return rows

