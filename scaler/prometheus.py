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

from optimizer.cycle import ModelSeries, VariantSeries
from optimizer.estimate import LengthFacts
from optimizer.ids import VariantId
from scaler import logs
from scaler.config import Config

log = logs.get("gpumix.prometheus")

ModelKey = tuple[str, str]  # (namespace, model)
DeploymentKey = tuple[str, str]  # (namespace, deployment)

# Without these, demand cannot be estimated at all; the rest refine it or feed dashboards.
REQUIRED = ("completions", "waiting")
CYCLE_QUERIES = (
    "completions", "waiting", "running", "prompt_histogram", "generation_histogram", "prompt_tokens",
    "generation_tokens", "replicas", "ready_replicas", "freshness", "coverage",
)


@dataclass
class VariantFacts:
    completions_rps: float | None = None
    waiting: float | None = None
    running: float | None = None
    newest_sample: float | None = None
    invalid_samples: int = 0
    samples_in_window: float | None = None  # the least-covered pod's sample count over the rate window


@dataclass
class ModelFacts:
    variants: dict[str, VariantFacts] = field(default_factory=dict)
    prompt_histogram: list[tuple[float, float]] = field(default_factory=list)
    generation_histogram: list[tuple[float, float]] = field(default_factory=list)
    prompt_tokens_rps: float | None = None
    generation_tokens_rps: float | None = None
    seen: set[str] = field(default_factory=set)  # which queries had series for this model

    def variant(self, name: str) -> VariantFacts:
        return self.variants.setdefault(name, VariantFacts())

    @property
    def completions_rps(self) -> float:
        return sum(v.completions_rps or 0.0 for v in self.variants.values())

    @property
    def waiting(self) -> float:
        return sum(v.waiting or 0.0 for v in self.variants.values())

    def series(self, namespace: str, window_s: float, scrape_interval_s: float) -> ModelSeries:
        """The cycle core's view: per variant, what was reported and how much of the rate window it covers."""
        variants = {}
        for name, f in self.variants.items():
            coverage = None
            if f.samples_in_window is not None and window_s > 0:
                coverage = min(1.0, f.samples_in_window * scrape_interval_s / window_s)
            variants[VariantId(namespace, name)] = VariantSeries(
                f.completions_rps, f.waiting, f.running, f.newest_sample, f.invalid_samples, coverage)
        lengths = LengthFacts(tuple(self.prompt_histogram), tuple(self.generation_histogram),
                              self.prompt_tokens_rps, self.generation_tokens_rps)
        return ModelSeries(variants, lengths)


@dataclass
class Observation:
    at: float
    models: dict[ModelKey, ModelFacts]
    replicas: dict[DeploymentKey, int]
    ready_replicas: dict[DeploymentKey, int]
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
    obs = Observation(at=at, models={}, replicas={}, ready_replicas={}, errors=dict(errors))

    def facts(labels: Mapping[str, str]) -> ModelFacts:
        key = (labels.get(c.namespace_label, ""), labels.get(c.model_label, ""))
        return obs.models.setdefault(key, ModelFacts())

    def samples(name: str) -> list[tuple[Mapping[str, str], float]]:
        out = []
        for sample in results.get(name, []):
            value = _finite_value(sample)
            labels = sample.get("metric", {})
            if value is None:
                obs.invalid_samples += 1
                on_error("invalid_sample")
                if c.variant_label in labels and c.model_label in labels:
                    variant(labels).invalid_samples += 1
                continue
            out.append((labels, value))
        return out

    def variant(labels: Mapping[str, str]) -> VariantFacts:
        return facts(labels).variant(labels.get(c.variant_label, ""))

    for name in ("completions", "waiting", "running", "freshness", "coverage"):
        for labels, v in samples(name):
            f = variant(labels)
            if name == "completions":
                f.completions_rps = (f.completions_rps or 0.0) + v
            elif name == "waiting":
                f.waiting = (f.waiting or 0.0) + v
            elif name == "running":
                f.running = (f.running or 0.0) + v
            elif name == "freshness":
                f.newest_sample = max(f.newest_sample or 0.0, v)
            else:
                f.samples_in_window = v if f.samples_in_window is None else min(f.samples_in_window, v)
            facts(labels).seen.add(name)
    for name, attr in (("prompt_histogram", "prompt_histogram"), ("generation_histogram", "generation_histogram")):
        for labels, v in samples(name):
            le = labels.get("le")
            if le is None:
                continue
            getattr(facts(labels), attr).append((float(le), v))
            facts(labels).seen.add(name)
    for name in ("prompt_tokens", "generation_tokens"):
        for labels, v in samples(name):
            f = facts(labels)
            setattr(f, f"{name}_rps", v)
            f.seen.add(name)
    for name, target in (("replicas", obs.replicas), ("ready_replicas", obs.ready_replicas)):
        for labels, v in samples(name):
            target[(labels.get("namespace", ""), labels.get("deployment", ""))] = round(v)  # type: ignore[index]
    return obs

