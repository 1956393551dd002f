"""HTTP side: Prometheus exposition of gpumix's own metrics, AIBrix-compatible per-Deployment replicas, and
probes. Like the gRPC handlers, every handler only reads the Table.

    /metrics                          gpumix_* gauges, counters and histograms (contract in the brief)
    /metrics/{namespace}/{deployment} vllm:deployment_replicas{model_name="<model>"} <whole replicas>
    /healthz                          alive
    /readyz                           planned at least once and the last plan is within stale_after
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from optimizer.ids import VariantId
from scaler import logs
from scaler.answer import is_fresh
from scaler.config import Config
from scaler.table import Table, VariantView
from scaler.telemetry import Histogram

log = logs.get("gpumix.adapter")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def histogram(self, name: str, hist: Histogram, **labels: object) -> None:
        cumulative = 0
        for bound, count in zip((*Histogram.BOUNDS, math.inf), hist.counts, strict=True):
            cumulative += count
            self.sample(f"{name}_bucket", cumulative, **labels, le=_num(bound))
        self.sample(f"{name}_sum", hist.sum, **labels)
        self.sample(f"{name}_count", hist.count, **labels)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(table: Table, now: float) -> str:
    snap = table.published
    out = Exposition()
    out.family("gpumix_up", "gauge", "1 while the service runs")
    out.sample("gpumix_up", 1)
    per_variant: Iterable[tuple[str, str, Callable[[VariantView], int | None]]] = (
        ("gpumix_desired_replicas", "published recommendation per variant", lambda v: v.recommendation),
        ("gpumix_current_replicas", "replicas the variant runs, as last observed", lambda v: v.current),
        ("gpumix_held_replicas", "replicas the HPA holds inside its scale-down window", lambda v: v.held),
    )
    for name, help_text, replicas in per_variant:
        out.family(name, "gauge", help_text)
        for v in snap.variants.values():
            if (count := replicas(v)) is not None:
                out.sample(name, count, namespace=v.namespace, model=v.model, variant=v.variant)
    out.family("gpumix_profile_status", "gauge", "1 for the variant's current profile status (ok|missing|invalid)")
    for v in snap.variants.values():
        for status in ("ok", "missing", "invalid"):
            out.sample("gpumix_profile_status", 1 if v.profile_status == status else 0,
                       model=v.model, variant=v.variant, status=status)
    per_model: Iterable[tuple[str, str, Callable[..., float | None]]] = (
        ("gpumix_plan_cost_per_hour", "cost of the planned mix per hour", lambda m: m.cost_per_hour),
        ("gpumix_plan_coverage", "share of demand the plan serves (0..1)", lambda m: m.coverage),
        ("gpumix_demand_rps", "estimated demand, requests per second", lambda m: m.demand_rps),
        ("gpumix_data_age_seconds", "age of the newest sample behind the demand", lambda m: m.data_age),
    )
    for name, help_text, getter in per_model:
        out.family(name, "gauge", help_text)
        for m in snap.models.values():
            value = getter(m)
            if value is not None:
                out.sample(name, value, model=m.model)
    out.family("gpumix_waiting_requests", "gauge", "requests waiting in vLLM queues (fast path)")
    for m in snap.models.values():
        out.sample("gpumix_waiting_requests", table.waiting.get(m.id, 0.0), model=m.model)
    out.family("gpumix_demand_bucket_rps", "gauge", "estimated demand per (input, output) length bucket")
    for m in snap.models.values():
        for input_tokens, output_tokens, rps in m.buckets:
            out.sample("gpumix_demand_bucket_rps", rps, model=m.model, input_tokens=input_tokens,
                       output_tokens=output_tokens)
    counters = table.counters
    out.family("gpumix_solve_seconds", "histogram", "time to plan, per model")
    for model, hist in sorted(counters.solve_seconds.items()):
        out.histogram("gpumix_solve_seconds", hist, model=model.partition("/")[2])
    out.family("gpumix_solver_fallback_total", "counter", "plans that used the greedy fallback")
    for model, count in sorted(counters.solver_fallback.items()):
        out.sample("gpumix_solver_fallback_total", count, model=model.partition("/")[2])
    out.family("gpumix_observation_errors_total", "counter", "observation problems by kind")
    for kind, count in sorted(counters.observation_errors.items()):
        out.sample("gpumix_observation_errors_total", count, kind=kind)
    out.family("gpumix_cycle_seconds", "histogram", "duration of one control cycle")
    out.histogram("gpumix_cycle_seconds", counters.cycle_seconds)
    return out.text()


def make_app(table: Table, config: Config, clock: Callable[[], float] = time.time) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(table, clock()).encode(), headers={"Content-Type": CONTENT_TYPE})

    async def deployment(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["deployment"]
        view = table.published.variants.get(VariantId(namespace, name))
        if view is None:
            return web.Response(status=404, text=f"deployment {namespace}/{name} is not known to gpumix\n")
        if view.profile_status != "ok":
            return web.Response(status=404, text=f"deployment {namespace}/{name} has no usable profile "
                                                 f"({view.profile_status}): gpumix does not scale it\n")
        if not is_fresh(view, clock(), config.stale_after_s):
            return web.Response(status=503, text=f"no fresh recommendation for {namespace}/{name}\n")
        assert view.recommendation is not None
        body = (
            "# HELP vllm:deployment_replicas replicas gpumix recommends for this deployment\n"
            "# TYPE vllm:deployment_replicas gauge\n"
            f'vllm:deployment_replicas{{model_name="{_escape(view.model)}"}} {view.recommendation}\n'
        )
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        planned = table.published.planned_at
        if planned is None:
            return web.Response(status=503, text="not ready: no plan yet\n")
        age = clock() - planned
        if age > config.stale_after_s:
            return web.Response(status=503, text=f"not ready: last plan {age:.0f} s ago\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/metrics/{namespace}/{deployment}", deployment)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(table: Table, config: Config, port: int | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(table, config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.bind, config.http_port if port is None else port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else (config.http_port if port is None else port)
    log.info("http_listening", address=f"{config.bind}:{bound}")
    return runner, int(bound)
