"""KEDA's ExternalScaler over grpc.aio, plus grpc.health.v1 and reflection, optionally TLS / mutual TLS.

Handlers only read the Table (scaler/loop.py): no I/O, no waiting for a cycle. Errors follow KEDA's
failure accounting (see shared reference): INVALID_ARGUMENT names the bad metadata key, NOT_FOUND for a
model/variant the service does not know or cannot plan (no profile), UNAVAILABLE when the recommendation
is missing or older than `stale_after` (KEDA's fallback counts it). IsActive never fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scaler import logs, protogen
from scaler.config import Config
from scaler.loop import Table, VariantView
from scaler.metric import legacy_int, metric_name, report_value

protogen.ensure()
from proto import externalscaler_pb2 as pb  # noqa: E402  (generated just above when missing or stale)
from proto import externalscaler_pb2_grpc as pb_grpc  # noqa: E402

log = logs.get("gpumix.keda")

SERVICE = "externalscaler.ExternalScaler"
REQUIRED_KEYS = ("model", "variant")
OPTIONAL_KEYS = ("namespace", "target")
# Keys KEDA itself may put in the trigger metadata (address, TLS switches): accepted and ignored.
KEDA_KEYS = ("scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey", "tlsCertFile")
KNOWN_KEYS = frozenset(REQUIRED_KEYS + OPTIONAL_KEYS + KEDA_KEYS)
_PREFIX = re.compile(r"^s\d+-")


class BadRequest(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Trigger:
    namespace: str
    model: str
    variant: str
    target: float

    @property
    def metric(self) -> str:
        return metric_name(self.namespace, self.variant)


class ExternalScaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    def __init__(self, table: Table, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.config = config
        self.clock = clock
        self.open_streams = 0

    # -- request → trigger

    def trigger(self, ref: pb.ScaledObjectRef) -> Trigger:
        meta = dict(ref.scalerMetadata)
        unknown = sorted(k for k in meta if k not in KNOWN_KEYS)
        if unknown:
            raise BadRequest(grpc.StatusCode.INVALID_ARGUMENT,
                             f"unknown trigger metadata key {unknown[0]!r} (known: model, variant, namespace, target)")
        for key in REQUIRED_KEYS:
            if not meta.get(key, "").strip():
                raise BadRequest(grpc.StatusCode.INVALID_ARGUMENT, f"trigger metadata key {key!r} is required")
        namespace = meta.get("namespace", "").strip() or ref.namespace
        if not namespace:
            raise BadRequest(grpc.StatusCode.INVALID_ARGUMENT,
                             "trigger metadata key 'namespace' is required when the ScaledObject has none")
        target = self.config.target
        if "target" in meta:
            try:
                target = float(meta["target"])
            except ValueError:
                target = math.nan
            if not math.isfinite(target) or target <= 0:
                raise BadRequest(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"trigger metadata key 'target' must be a positive number, got {meta['target']!r}")
        return Trigger(namespace, meta["model"].strip(), meta["variant"].strip(), target)

    def view(self, trig: Trigger) -> VariantView:
        snap = self.table.snapshot
        view = snap.variants.get((trig.namespace, trig.variant))
        if view is None or view.model != trig.model:
            known_model = any(m.model == trig.model and m.namespace == trig.namespace for m in snap.models.values())
            what = (f"variant {trig.variant!r} of model {trig.model!r}" if known_model
                    else f"model {trig.model!r}")
            raise BadRequest(grpc.StatusCode.NOT_FOUND, f"{what} is not known in namespace {trig.namespace!r}")
        if view.profile_status != "ok":
            raise BadRequest(grpc.StatusCode.NOT_FOUND,
                             f"variant {trig.variant!r} has no usable profile ({view.profile_status}): "
                             f"gpumix does not scale it. {view.profile_detail}")
        return view

    # -- rpcs

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        try:
            trig = self.trigger(request)
            self.view(trig)
        except BadRequest as exc:
            await context.abort(exc.code, exc.message)
        spec = pb.MetricSpec(metricName=trig.metric, targetSize=max(1, round(trig.target)), targetSizeFloat=trig.target)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        try:
            trig = self.trigger(request.scaledObjectRef)
            asked = _PREFIX.sub("", request.metricName.lower())
            if request.metricName and asked != trig.metric:
                raise BadRequest(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"metricName {request.metricName!r} is not this trigger's metric {trig.metric!r}")
            view = self.view(trig)
            if view.replicas is None or view.decided_at is None:
                raise BadRequest(grpc.StatusCode.UNAVAILABLE,
                                 f"no recommendation yet for {trig.variant!r}: {view.reason or 'waiting for data'}")
            age = self.clock() - view.decided_at
            if age > self.config.stale_after_s:
                raise BadRequest(grpc.StatusCode.UNAVAILABLE,
                                 f"recommendation for {trig.variant!r} is {age:.0f} s old (stale_after "
                                 f"{self.config.stale_after_s:.0f} s): {view.reason}")
        except BadRequest as exc:
            await context.abort(exc.code, exc.message)
        value = report_value(view.replicas, view.current, trig.target, view.tolerance_up, view.tolerance_down)
        return pb.GetMetricsResponse(metricValues=[
            pb.MetricValue(metricName=trig.metric, metricValue=legacy_int(value), metricValueFloat=value)
        ])

    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:
        return pb.IsActiveResponse(result=self._active(request))

    def _active(self, request: pb.ScaledObjectRef) -> bool:
        try:
            trig = self.trigger(request)
        except BadRequest:
            return False  # IsActive never errors: KEDA would discard the poll's metrics
        return self.table.is_active(trig.namespace, trig.model, trig.variant)

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.IsActiveResponse]:
        """Pushes `true` whenever the variant becomes active (KEDA ignores `false`, so only the initial
        state and transitions are sent). Wakes on every Table change; a heartbeat re-sends the state so
        proxies do not time the stream out. Ends cleanly when the client goes away (task cancelled)."""
        self.open_streams += 1
        try:
            last: bool | None = None
            heartbeat = max(30.0, self.config.interval * 2)
            since = time.monotonic()
            while True:
                changed = self.table.changed()
                active = self._active(request)
                if active != last or time.monotonic() - since >= heartbeat:
                    yield pb.IsActiveResponse(result=active)
                    last, since = active, time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=heartbeat)
        finally:
            self.open_streams -= 1


def _credentials(config: Config) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    pair = [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
    if config.tls_client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=Path(config.tls_client_ca).read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int
    scaler: ExternalScaler
    health: health.aio.HealthServicer

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start(table: Table, config: Config, port: int | None = None) -> GrpcServer:
    server = grpc.aio.server(options=[
        # Long-lived StreamIsActive streams: allow client keepalive pings, do not cap connection age.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_time_ms", 60_000),
        # gRPC sets SO_REUSEPORT by default: a second instance on the same port would then start and
        # silently take a share of KEDA's calls. Off, the second one fails to bind.
        ("grpc.so_reuseport", 0),
    ])
    scaler = ExternalScaler(table, config)
    pb_grpc.add_ExternalScalerServicer_to_server(scaler, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    address = f"{config.bind}:{config.grpc_port if port is None else port}"
    creds = _credentials(config)
    bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if bound == 0:  # older grpcio report a failed bind by returning 0 rather than raising
        raise RuntimeError(f"failed to bind to address {address}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc_listening", address=f"{config.bind}:{bound}", tls=creds is not None,
             mtls=config.tls_client_ca is not None)
    return GrpcServer(server, bound, scaler, health_servicer)
