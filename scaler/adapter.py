"""HTTP side: Prometheus exposition of gpumix's own metrics, AIBrix-compatible per-Deployment replicas, and
probes. Like the gRPC handlers, every handler only reads the Table.

    /metrics                          gpumix_* gauges, counters and histograms from prometheus-client
                                      (scaler/telemetry.py), process metrics, OpenMetrics when asked for
    /metrics/{namespace}/{deployment} vllm:deployment_replicas{model_name="<model>"} <whole replicas>
    /healthz                          alive
    /readyz                           planned at least once and the last plan is within stale_after
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from optimizer.ids import VariantId
from scaler import logs, telemetry
from scaler.answer import is_fresh
from scaler.config import Config
from scaler.table import Table

log = logs.get("gpumix.adapter")

# The AIBrix endpoint stays the Prometheus text format 0.0.4 that AIBrix's and KEDA's metrics-api scrapers read.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def make_app(table: Table, config: Config, clock: Callable[[], float] = time.time) -> web.Application:
    registry = telemetry.registry(table)

    async def metrics(request: web.Request) -> web.Response:
        # The official client picks the format from Accept: OpenMetrics for scrapers that ask, text 0.0.4 else.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

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
