"""gpumix's own telemetry: the counters the control loop bumps, and the prometheus-client collector that
`/metrics` serves from them and from the published Table snapshot.

The collector only reads (the snapshot is an immutable value swapped atomically; counters are plain numbers
written by the loop on the same event loop), so a scrape never waits for a cycle and never changes state.
Every per-model and per-variant series carries `namespace`: the same model name may live in two namespaces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from optimizer.calibrate import GAUGE_HELP, Gauge

if TYPE_CHECKING:
    from scaler.table import ModelView, Table, VariantView

PROFILE_STATUSES = ("ok", "missing", "invalid")


class Histogram:
    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.BOUNDS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs ending with +Inf. The bounds are written as gpumix always wrote them
        (1, not 1.0), so the bucket series stay the same ones across the move to prometheus-client."""
        out, cumulative = [], 0
        for bound, count in zip((*self.BOUNDS, math.inf), self.counts, strict=True):
            cumulative += count
            out.append((_bound(bound), float(cumulative)))
        return out


def _bound(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Counters:
    """Keys of `solver_fallback` and `solve_seconds` are "<namespace>/<model>"."""

    observation_errors: dict[str, int] = field(default_factory=dict)
    solver_fallback: dict[str, int] = field(default_factory=dict)
    solve_seconds: dict[str, Histogram] = field(default_factory=dict)
    cycle_seconds: Histogram = field(default_factory=Histogram)

    def error(self, kind: str) -> None:
        self.observation_errors[kind] = self.observation_errors.get(kind, 0) + 1


VARIANT_LABELS = ["namespace", "model", "variant"]
MODEL_LABELS = ["namespace", "model"]

_PER_VARIANT: tuple[tuple[str, str, Callable[[VariantView], int | None]], ...] = (
    ("gpumix_desired_replicas", "published recommendation per variant", lambda v: v.recommendation),
    ("gpumix_current_replicas", "replicas the variant runs, as last observed", lambda v: v.current),
    ("gpumix_held_replicas", "replicas the HPA holds inside its scale-down window", lambda v: v.held),
)
_PER_MODEL: tuple[tuple[str, str, Callable[[ModelView], float | None]], ...] = (
    ("gpumix_plan_cost_per_hour", "cost of the planned mix per hour", lambda m: m.cost_per_hour),
    ("gpumix_plan_coverage", "share of demand the plan serves (0..1)", lambda m: m.coverage),
    ("gpumix_demand_rps", "estimated demand, requests per second", lambda m: m.demand_rps),
    ("gpumix_data_age_seconds", "age of the newest sample behind the demand", lambda m: m.data_age),
)


def _model_labels(key: str) -> list[str]:
    namespace, _, model = key.partition("/")
    return [namespace, model]


def _calibration(rows: Sequence[Gauge]) -> Iterator[Metric]:
    """The calibration's gauges (optimizer.calibrate.gauges), one family per name."""
    families: dict[str, GaugeMetricFamily] = {}
    for name, labels, value in rows:
        family = families.get(name)
        if family is None:
            family = families[name] = GaugeMetricFamily(name, GAUGE_HELP.get(name, name), labels=list(labels))
        family.add_metric(list(labels.values()), value)
    yield from families.values()


class TableCollector(Collector):
    """gpumix_* families from the Table as it is at scrape time."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def collect(self) -> Iterator[Metric]:
        table = self.table
        snap, counters = table.published, table.counters
        up = GaugeMetricFamily("gpumix_up", "1 while the service runs")
        up.add_metric([], 1)
        yield up
        for name, help_text, replicas in _PER_VARIANT:
            family = GaugeMetricFamily(name, help_text, labels=VARIANT_LABELS)
            for v in snap.variants.values():
                if (count := replicas(v)) is not None:
                    family.add_metric([v.namespace, v.model, v.variant], count)
            yield family
        status = GaugeMetricFamily("gpumix_profile_status",
                                   "1 for the variant's current profile status (ok|missing|invalid)",
                                   labels=[*VARIANT_LABELS, "status"])
        for v in snap.variants.values():
            for s in PROFILE_STATUSES:
                status.add_metric([v.namespace, v.model, v.variant, s], 1 if v.profile_status == s else 0)
        yield status
        for name, help_text, getter in _PER_MODEL:
            family = GaugeMetricFamily(name, help_text, labels=MODEL_LABELS)
            for m in snap.models.values():
                if (value := getter(m)) is not None:
                    family.add_metric([m.namespace, m.model], value)
            yield family
        waiting = GaugeMetricFamily("gpumix_waiting_requests", "requests waiting in vLLM queues (fast path)",
                                    labels=MODEL_LABELS)
        for m in snap.models.values():
            waiting.add_metric([m.namespace, m.model], table.waiting.get(m.id, 0.0))
        yield waiting
        yield from _calibration(snap.calibration)
        buckets = GaugeMetricFamily("gpumix_demand_bucket_rps", "estimated demand per (input, output) length bucket",
                                    labels=[*MODEL_LABELS, "input_tokens", "output_tokens"])
        for m in snap.models.values():
            for input_tokens, output_tokens, rps in m.buckets:
                buckets.add_metric([m.namespace, m.model, str(input_tokens), str(output_tokens)], rps)
        yield buckets
        solve = HistogramMetricFamily("gpumix_solve_seconds", "time to plan, per model", labels=MODEL_LABELS)
        for key, hist in sorted(counters.solve_seconds.items()):
            solve.add_metric(_model_labels(key), hist.buckets(), hist.sum)
        yield solve
        fallback = CounterMetricFamily("gpumix_solver_fallback", "plans that used the greedy fallback",
                                       labels=MODEL_LABELS)
        for key, count in sorted(counters.solver_fallback.items()):
            fallback.add_metric(_model_labels(key), count)
        yield fallback
        errors = CounterMetricFamily("gpumix_observation_errors", "observation problems by kind", labels=["kind"])
        for kind, count in sorted(counters.observation_errors.items()):
            errors.add_metric([kind], count)
        yield errors
        cycle = HistogramMetricFamily("gpumix_cycle_seconds", "duration of one control cycle")
        cycle.add_metric([], counters.cycle_seconds.buckets(), counters.cycle_seconds.sum)
        yield cycle


def registry(table: Table) -> CollectorRegistry:
    """What /metrics serves: the Table's families plus the process, platform and GC metrics that the
    official client's default registry carries (process_*, python_info, python_gc_*)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TableCollector(table))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
