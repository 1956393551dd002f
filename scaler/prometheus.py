"""Observation: a fixed handful of aggregated PromQL queries per cycle → per-model facts → Demand.

Every query is aggregated `by` namespace/model(/variant) over the whole fleet, so the number of queries per
cycle is constant in the number of variants (`Observer.queries_sent` counts them for the benchmark). Queries
run concurrently (aiohttp) at one evaluation timestamp, within one deadline for the whole batch.

What can go wrong is classified, logged once per change of state, and counted: `unreachable`, `timeout`,
`http_5xx`, `http_4xx` (usually bad PromQL), `bad_response` (not JSON, not an instant vector, missing
fields), `empty` (query answered nothing), `invalid_sample` (NaN, Inf,
negative), `stale` (newest sample older than max_sample_age). A model whose facts are missing gets no
demand this cycle (None): the decision then keeps its last recommendation, so missing data never shrinks a
fleet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from optimizer.cycle import ModelSeries, VariantSeries
from optimizer.estimate import LengthFacts
from optimizer.ids import VariantId
from scaler import logs
from scaler.config import Config
from scaler.vector import QueryFailed, Samples, decode

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
        found = self.variants.get(name)
        if found is None:
            found = self.variants[name] = VariantFacts()
        return found

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

    def current(self, key: str) -> str | None:
        return self._last.get(key)

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
    if isinstance(exc, QueryFailed):
        return exc.kind
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError):
        return "unreachable"  # refused, reset, closed mid-answer, DNS
    return "error"


def _describe(exc: BaseException, deadline: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no complete answer within {deadline:.3g} s (prometheus_timeout, total time per query and cycle)"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, QueryFailed) else f"{type(exc).__name__}: {text}"


class Observer:
    """Prometheus over aiohttp. Every batch of queries (a cycle's, or the fast path's one query) has one
    deadline for its total time, connection to last byte: a server trickling its answer costs the cycle
    `prometheus_timeout`, no more. The fast path opens its own connection with its own, shorter deadline,
    so it never waits behind a slow cycle query."""

    def __init__(self, config: Config, on_error: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.url = (config.prometheus or "").rstrip("/") + "/api/v1/query"
        self.deadline = config.prometheus_timeout
        self.fast_deadline = min(config.prometheus_timeout, max(1.0, config.fast_interval))
        # The fast path speaks of a problem only once a cycle batch begun after its failures started got
        # answers: counted in batches, not in fast-path attempts, because a cycle on a loaded machine can
        # outlast any fixed number of attempts, and an outage is the cycle's to report.
        self._cycle_batches = 0
        self._cycle_answered = 0  # the number of the latest cycle batch that got an answer
        self._fast_failing_after: int | None = None
        self.state = StateLog()
        self.queries_sent = 0
        self.on_error = on_error or (lambda kind: None)

    async def _query(self, session: aiohttp.ClientSession, name: str, at: float, deadline: float) -> Samples:
        self.queries_sent += 1
        params = {"query": self.config.query(name), "time": f"{at:.3f}", "timeout": f"{int(deadline * 1000)}ms"}
        # TLS certificates are not verified, as with prometheus-api-client's disable_ssl before.
        async with session.get(self.url, params=params, ssl=False) as resp:
            body = await resp.read()
            return decode(resp.status, body)

    async def _batch(self, names: Sequence[str], at: float, deadline: float) -> list[Samples | BaseException]:
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline

        async def one(session: aiohttp.ClientSession, name: str) -> Samples:
            async with asyncio.timeout_at(until):
                return await self._query(session, name, at, deadline)

        timeout = aiohttp.ClientTimeout(total=deadline)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await asyncio.gather(*(one(session, n) for n in names), return_exceptions=True)

    async def run_queries(
        self, names: Sequence[str], at: float, deadline: float | None = None, *, health: bool = True
    ) -> tuple[dict[str, Samples], dict[str, str]]:
        """Answers and error kinds by query name, within `deadline` (default prometheus_timeout) in total.
        A whole batch failing is one outage: one line when it starts, one when the answers come back.

        `health=False`: this batch does not speak for Prometheus as a whole (the evidence asks one query at
        a time: one slow or rejected query is not an outage, and its answer is no recovery from one the
        cycle saw). Its failures are reported per query instead."""
        deadline = self.deadline if deadline is None else deadline
        if health:
            self._cycle_batches += 1
        batch = self._cycle_batches
        answers = await self._batch(names, at, deadline)
        results: dict[str, Samples] = {}
        errors: dict[str, str] = {}
        failures: dict[str, BaseException] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, asyncio.CancelledError):
                raise answer
            if isinstance(answer, BaseException):
                failures[name] = answer
                errors[name] = _classify(answer)
                self.on_error(errors[name])
            else:
                results[name] = answer
        if not health:
            for name, exc in failures.items():
                self.state.report(f"query:{name}", f"failed: {errors[name]}", error=_describe(exc, deadline)[:300],
                                  query=self.config.query(name))
        elif failures and not results:
            first = next(iter(failures))
            self.state.report("prometheus", "down", kinds=sorted(set(errors.values())), queries=len(failures),
                              error=_describe(failures[first], deadline), url=self.url)
            return results, errors
        else:
            self._cycle_answered = max(self._cycle_answered, batch)
            self.state.report("prometheus", "ok")
            # Some queries failing (bad PromQL, one slow query, a partial outage): one line for the set of
            # failing queries while it stays the same, not one per query.
            failing = ", ".join(f"{name}: {errors[name]}" for name in failures)
            self.state.report("queries", failing or "ok", failing=sorted(failures),
                              errors={n: _describe(e, deadline)[:300] for n, e in failures.items()},
                              queries={n: self.config.query(n) for n in failures})
        for name, answer in results.items():
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
        """The fast path for scale-from-zero: one query, waiting requests per model, on its own connection
        within `fast_deadline`. None when it got no answer (counted every time; logged only when it fails
        for longer than a cycle while the cycle's own queries work)."""
        at = time.time() if at is None else at
        (answer,) = await self._batch(("waiting",), at, self.fast_deadline)
        if isinstance(answer, asyncio.CancelledError):
            raise answer
        if isinstance(answer, BaseException):
            kind = _classify(answer)
            self.on_error(kind)
            if self._fast_failing_after is None:
                self._fast_failing_after = self._cycle_batches
            # An outage is the cycle's to report (one line); the fast path speaks only of a problem of its
            # own: one that outlasts a whole cycle while the cycle's queries work.
            if self._cycle_answered > self._fast_failing_after and self.state.current("prometheus") != "down":
                self.state.report("fast_path", kind, error=_describe(answer, self.fast_deadline)[:300])
            return None
        self._fast_failing_after = None
        self.state.report("fast_path", "ok")
        out: dict[ModelKey, float] = {}
        c = self.config
        for sample in answer:
            labels = sample.metric
            value = sample.number
            if value is None:
                continue
            key = (labels.get(c.namespace_label, ""), labels.get(c.model_label, ""))
            out[key] = out.get(key, 0.0) + value
        return out


def parse_results(
    config: Config,
    results: Mapping[str, Samples],
    errors: Mapping[str, str],
    at: float,
    on_error: Callable[[str], None] = lambda kind: None,
) -> Observation:
    """The cycle's answers as facts per model and variant. One pass per query over its samples, with the
    model's facts looked up once per label set: at 1,000 models × 4 variants this is ~50,000 samples a cycle."""
    c = config
    ns_label, model_label, variant_label = c.namespace_label, c.model_label, c.variant_label
    obs = Observation(at=at, models={}, replicas={}, ready_replicas={}, errors=dict(errors))
    models = obs.models

    def facts(labels: Mapping[str, str]) -> ModelFacts:
        key = (labels.get(ns_label, ""), labels.get(model_label, ""))
        found = models.get(key)
        if found is None:
            found = models[key] = ModelFacts()
        return found

    def samples(name: str) -> list[tuple[Mapping[str, str], float]]:
        out: list[tuple[Mapping[str, str], float]] = []
        for sample in results.get(name, ()):
            labels = sample.metric
            value = sample.number
            if value is None:  # NaN, ±Inf and negative values are invalid samples
                obs.invalid_samples += 1
                on_error("invalid_sample")
                if variant_label in labels and model_label in labels:
                    facts(labels).variant(labels.get(variant_label, "")).invalid_samples += 1
                continue
            out.append((labels, value))
        return out

    for name in ("completions", "waiting", "running", "freshness", "coverage"):
        for labels, v in samples(name):
            mf = facts(labels)
            f = mf.variant(labels.get(variant_label, ""))
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
            mf.seen.add(name)
    for name in ("prompt_histogram", "generation_histogram"):
        for labels, v in samples(name):
            le = labels.get("le")
            if le is None:
                continue
            mf = facts(labels)
            (mf.prompt_histogram if name == "prompt_histogram" else mf.generation_histogram).append((float(le), v))
            mf.seen.add(name)
    for name in ("prompt_tokens", "generation_tokens"):
        for labels, v in samples(name):
            mf = facts(labels)
            if name == "prompt_tokens":
                mf.prompt_tokens_rps = v
            else:
                mf.generation_tokens_rps = v
            mf.seen.add(name)
    for name, target in (("replicas", obs.replicas), ("ready_replicas", obs.ready_replicas)):
        for labels, v in samples(name):
            target[(labels.get("namespace", ""), labels.get("deployment", ""))] = round(v)
    return obs
