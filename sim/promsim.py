"""Prometheus, as far as gpumix's default queries need it, over the simulator's samples: the replay's observer.

The replay must observe the fleet the way `gpumix serve` does — through Prometheus — or it measures a
different controller. So every cycle the simulated pods are *scraped* (sim/exposition.py: the series a
vLLM server and kube-state-metrics expose), stored per series, and the cycle's queries are evaluated with
Prometheus' semantics, answering in Prometheus' JSON shape, which `scaler.prometheus.parse_results` then reads
exactly as it reads a real server's answer. The rules follow Prometheus v2.42 (the Debian release the tests
run against):

- Scrape staleness: a series missing from a target's scrape gets a stale marker at that scrape
  (scrape/scrape.go, scrapeLoop.append → forEachStale); an instant selector returns the newest sample within
  the 5-minute lookback (promql/engine.go, defaultLookbackDelta) unless that sample is a stale marker.
- Range selectors take samples with rangeStart <= t <= rangeEnd and skip stale markers
  (promql/engine.go, matrixIterSlice).
- `rate()` / `increase()`: promql/functions.go, extrapolatedRate — counter resets added back, extrapolation
  to the range edges only within 1.1 average sample intervals (else half an interval), never below the
  counter's zero point; fewer than two samples give no result.
- `count_over_time`, `timestamp`: promql/functions.go, funcCountOverTime / funcTimestamp.
- `offset d`: the selector evaluated at t - d (promql/engine.go, the Offset of a VectorSelector).
- `min_over_time(timestamp(x)[R:15s])` (the evidence's pod age): a subquery's steps see the instant value of
  `timestamp(x)` at each 15 s step (promql/engine.go, SubqueryExpr); the minimum over them is x's first sample
  time within R (and the TSDB's retention), to the step.
- `max_over_time(x[R])` (the evidence's KV-cache peak): the largest sample in the range, as selected above
  (promql/functions.go, funcMaxOverTime).
- `a or b`: every series of a, and those of b whose label set a lacks (promql/engine.go, VectorOr).
- `sum by` / `max by` / `min by` / `avg by` over the result (promql/engine.go, aggregation).

Only the default query set (scaler/config.py) is evaluated, by name; a replay with custom PromQL would need a
real Prometheus (`make demo` runs one).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scaler import vector
from scaler.config import Config
from scaler.prometheus import CYCLE_QUERIES, Observation, parse_results

LOOKBACK_S = 300.0  # promql/engine.go defaultLookbackDelta
Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class _Series:
    points: list[tuple[float, float]] = field(default_factory=list)
    stale_at: float | None = None  # time of the stale marker after the last point


def _key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


class TSDB:
    def __init__(self, retention_s: float = 900.0) -> None:
        self.series: dict[SeriesKey, _Series] = {}
        self.by_name: dict[str, set[SeriesKey]] = defaultdict(set)
        self.retention_s = retention_s
        self._active: set[SeriesKey] = set()

    def scrape(self, t: float, samples: Iterable[Sample]) -> None:
        seen: set[SeriesKey] = set()
        for s in samples:
            key = _key(s.name, s.labels)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = _Series()
                self.by_name[s.name].add(key)
            series.points.append((t, float(s.value)))
            series.stale_at = None
            seen.add(key)
        for key in self._active - seen:
            self.series[key].stale_at = t
        self._active = seen
        cutoff = t - self.retention_s
        for key in [k for k, s in self.series.items() if s.points and s.points[-1][0] < cutoff]:
            del self.series[key]
            self.by_name[key[0]].discard(key)
        for s in self.series.values():
            while len(s.points) > 1 and s.points[0][0] < cutoff:
                s.points.pop(0)

    def instant(self, name: str, t: float) -> list[tuple[Labels, float, float]]:
        """(labels, value, sample time) of every series `name` has at t."""
        out = []
        for key in self.by_name.get(name, ()):
            s = self.series[key]
            pts = [p for p in s.points if p[0] <= t]
            if not pts or pts[-1][0] <= t - LOOKBACK_S:
                continue
            if s.stale_at is not None and pts[-1][0] < s.stale_at <= t:
                continue
            out.append((key[1], pts[-1][1], pts[-1][0]))
        return out

    def window(self, name: str, t: float, range_s: float) -> list[tuple[Labels, list[tuple[float, float]]]]:
        out = []
        for key in self.by_name.get(name, ()):
            pts = [p for p in self.series[key].points if t - range_s <= p[0] <= t]
            if pts:
                out.append((key[1], pts))
        return out


def extrapolated_rate(points: Sequence[tuple[float, float]], t: float, range_s: float, *,
                      is_rate: bool) -> float | None:
    if len(points) < 2:
        return None
    result = points[-1][1] - points[0][1]
    prev = points[0][1]
    for _, v in points[1:]:
        if v < prev:
            result += prev  # counter reset
        prev = v
    to_start = points[0][0] - (t - range_s)
    to_end = t - points[-1][0]
    sampled = points[-1][0] - points[0][0]
    if sampled <= 0:
        return None
    average = sampled / (len(points) - 1)
    if result > 0 and points[0][1] >= 0:
        to_start = min(to_start, sampled * (points[0][1] / result))
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    factor = interval / sampled
    if is_rate:
        factor /= range_s
    return result * factor


def _group(rows: Iterable[tuple[Labels, float]], by: Sequence[str], how: str) -> vector.Samples:
    groups: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(list)
    for labels, v in rows:
        d = dict(labels)
        groups[tuple((k, d[k]) for k in by if k in d)].append(v)
    agg: dict[str, Callable[[list[float]], float]] = {
        "sum": math.fsum, "max": max, "min": min, "avg": lambda xs: math.fsum(xs) / len(xs)}
    return [vector.Sample(dict(k), (0.0, repr(agg[how](vs)))) for k, vs in groups.items()]


def _or(*vectors: vector.Samples) -> vector.Samples:
    """`a or b or ...`: every series of a, then those of each next whose label set none before holds
    (promql/engine.go, VectorOr)."""
    answer: vector.Samples = []
    for samples in vectors:
        have = {tuple(sorted(r.metric.items())) for r in answer}
        answer += [r for r in samples if tuple(sorted(r.metric.items())) not in have]
    return answer


class SimPrometheus:
    """Answers the default cycle queries over a TSDB, as Prometheus' HTTP API would (JSON result vectors)."""

    def __init__(self, config: Config, tsdb: TSDB) -> None:
        self.config = config
        self.tsdb = tsdb
        self.window_s = config.rate_window_s
        c = config
        self.mv = (c.namespace_label, c.model_label, c.variant_label)
        self.m = (c.namespace_label, c.model_label)
        self.queries_sent = 0

    def _rate(self, name: str, t: float, *, is_rate: bool, range_s: float | None = None) -> list[tuple[Labels, float]]:
        range_s = self.window_s if range_s is None else range_s
        rows = []
        for labels, pts in self.tsdb.window(name, t, range_s):
            r = extrapolated_rate(pts, t, range_s, is_rate=is_rate)
            if r is not None:
                rows.append((labels, r))
        return rows

    def _evidence(self, name: str, t: float) -> vector.Samples:
        """The calibration's evidence queries (scaler/config.py, `evidence_*`)."""
        w = self.config.calibration_window_s
        pod = (*self.mv, "pod")
        latency = {"evidence_ttft": ("vllm:time_to_first_token_seconds_bucket",),
                   "evidence_tpot": ("vllm:inter_token_latency_seconds_bucket",
                                     "vllm:time_per_output_token_seconds_bucket"),
                   "evidence_e2e": ("vllm:e2e_request_latency_seconds_bucket",)}
        if name == "evidence_completed":
            return _group(self._rate("vllm:request_success_total", t, is_rate=False, range_s=w), pod, "sum")
        if name in latency:
            return _or(*(_group(self._rate(metric, t, is_rate=False, range_s=w), (*pod, "le"), "sum")
                         for metric in latency[name]))
        if name == "evidence_kv_peak":
            return _or(*(_group([(labels, max(v for _, v in pts)) for labels, pts in self.tsdb.window(metric, t, w)],
                                pod, "max")
                         for metric in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")))
        if name == "evidence_waiting_end":
            return _group(self._gauge("vllm:num_requests_waiting", t), self.mv, "sum")
        if name == "evidence_waiting_start":
            return _group(self._gauge("vllm:num_requests_waiting", t - w), self.mv, "sum")
        if name in ("evidence_prompt_histogram", "evidence_generation_histogram"):
            metric = "vllm:request_prompt_tokens_bucket" if name == "evidence_prompt_histogram" \
                else "vllm:request_generation_tokens_bucket"
            return _group(self._rate(metric, t, is_rate=False, range_s=w), (*self.mv, "le"), "sum")
        if name == "evidence_age":
            step = 15.0
            rows = []
            for labels, pts in self.tsdb.window("vllm:num_requests_running", t, self.config.calibration_age_range_s):
                first_step = math.ceil(pts[0][0] / step) * step  # steps are aligned to multiples of the step
                seen = max(ts for ts, _ in pts if ts <= first_step)  # timestamp() there: its newest sample
                rows.append((labels, t - seen))
            return _group(rows, pod, "min")
        return []

    def _gauge(self, name: str, t: float) -> list[tuple[Labels, float]]:
        return [(labels, v) for labels, v, _ in self.tsdb.instant(name, t)]

    def query(self, name: str, t: float) -> vector.Samples:
        self.queries_sent += 1
        ok_success = "vllm:request_success_total"
        if name == "completions":
            return _group(self._rate(ok_success, t, is_rate=True), self.mv, "sum")
        if name in ("waiting", "running"):
            return _group(self._gauge(f"vllm:num_requests_{name}", t), self.mv, "sum")
        if name in ("prompt_histogram", "generation_histogram"):
            metric = "vllm:request_prompt_tokens_bucket" if name == "prompt_histogram" \
                else "vllm:request_generation_tokens_bucket"
            return _group(self._rate(metric, t, is_rate=False), (*self.m, "le"), "sum")
        if name in ("prompt_tokens", "generation_tokens"):
            return _group(self._rate(f"vllm:{name}_total", t, is_rate=True), self.m, "sum")
        if name == "replicas":
            return _group(self._gauge("kube_deployment_status_replicas", t), ("namespace", "deployment"), "max")
        if name == "ready_replicas":
            return _group(self._gauge("kube_deployment_status_replicas_ready", t), ("namespace", "deployment"), "max")
        if name == "freshness":
            rows = [(labels, ts) for labels, _, ts in self.tsdb.instant("vllm:num_requests_waiting", t)]
            return _group(rows, self.mv, "max")
        if name.startswith("evidence_"):
            return self._evidence(name, t)
        if name == "coverage":
            rows = [(labels, float(len(pts))) for labels, pts in self.tsdb.window("vllm:num_requests_waiting", t,
                                                                                     self.window_s)]
            return _group(rows, self.mv, "min")
        return []  # dashboards' extras (latency quantiles, DCGM): not read by the decision

    def results(self, names: Iterable[str], t: float) -> dict[str, vector.Samples]:
        return {name: self.query(name, t) for name in names}


class SimObserver:
    """scaler.prometheus.Observer's interface (observe, waiting) over a SimPrometheus."""

    def __init__(self, config: Config, prometheus: SimPrometheus) -> None:
        self.config = config
        self.prometheus = prometheus

    @property
    def queries_sent(self) -> int:
        return self.prometheus.queries_sent

    async def observe(self, at: float | None = None) -> Observation:
        assert at is not None
        return parse_results(self.config, self.prometheus.results(CYCLE_QUERIES, at), {}, at)

    async def run_queries(self, names: Sequence[str], at: float, deadline: float | None = None, *,
                          health: bool = True) -> tuple[dict[str, vector.Samples], dict[str, str]]:
        return self.prometheus.results(names, at), {}

    async def waiting(self, at: float | None = None) -> dict[tuple[str, str], float] | None:
        assert at is not None
        obs = parse_results(self.config, self.prometheus.results(("waiting",), at), {}, at)
        return {key: facts.waiting for key, facts in obs.models.items()}

    def close(self) -> None:
        pass
