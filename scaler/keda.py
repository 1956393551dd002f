"""KEDA's ExternalScaler over grpc.aio, plus grpc.health.v1 and reflection, optionally TLS / mutual TLS.

Handlers only read the Table (scaler/table.py): no I/O, no waiting for a cycle. What they answer is decided
by scaler/answer.py (pure, shared with the replay): INVALID_ARGUMENT names the bad metadata keys, NOT_FOUND
for a model/variant the service does not know or cannot plan (no profile), UNAVAILABLE when the
recommendation is missing or older than `stale_after` (KEDA's fallback counts it). IsActive never fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scaler import logs
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.answer import Answer, Code, Trigger, TriggerError, is_active, metric_spec, metric_value, parse_trigger
from scaler.config import Config
from scaler.metric import legacy_int, legacy_target
from scaler.table import Table

log = logs.get("gpumix.keda")

SERVICE = "externalscaler.ExternalScaler"
_STATUS = {
    Code.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


class ExternalScaler(pb_grpc.ExternalScalerServicer):  # type: ignore[misc]
    """Maps scaler/answer.py's answers onto gRPC: every decision about what to answer lives there."""

    def __init__(self, table: Table, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.config = config
        self.clock = clock
        self.open_streams = 0
        self.stopping = asyncio.Event()

    def _trigger(self, ref: pb.ScaledObjectRef) -> Trigger | Answer:
        try:
            return parse_trigger(dict(ref.scalerMetadata), ref.namespace, self.config.target)
        except TriggerError as exc:
            return Answer(Code.INVALID_ARGUMENT, str(exc))

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, answer: Answer) -> None:
        await context.abort(_STATUS[answer.code], answer.message)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricSpecResponse:
        trig = self._trigger(request)
        answer = trig if isinstance(trig, Answer) else metric_spec(trig, self.table.published)
        if not answer.ok or isinstance(trig, Answer):
            await self._abort(context, answer)
            raise AssertionError("unreachable: abort raises")
        spec = pb.MetricSpec(metricName=trig.metric, targetSize=legacy_target(trig.target),
                             targetSizeFloat=trig.target)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        trig = self._trigger(request.scaledObjectRef)
        answer = trig if isinstance(trig, Answer) else metric_value(
            trig, self.table.published, self.clock(), self.config.stale_after_s, request.metricName)
        if not answer.ok or isinstance(trig, Answer):
            await self._abort(context, answer)
            raise AssertionError("unreachable: abort raises")
        return pb.GetMetricsResponse(metricValues=[
            pb.MetricValue(metricName=trig.metric, metricValue=legacy_int(answer.value),
                           metricValueFloat=answer.value)
        ])

    async def IsActive(self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext) -> pb.IsActiveResponse:
        return pb.IsActiveResponse(result=self._active(request))

    def _active(self, request: pb.ScaledObjectRef) -> bool:
        trig = self._trigger(request)
        if isinstance(trig, Answer):
            return False  # IsActive never errors: KEDA would discard the poll's metrics
        return is_active(trig, self.table.published, self.table.waiting)

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.IsActiveResponse]:
        """Pushes `true` whenever the variant becomes active (KEDA ignores `false`, so only the initial
        state and transitions are sent). Wakes on every Table change; a heartbeat re-sends the state so
        proxies do not time the stream out.

        On shutdown the stream ends cleanly (status OK) instead of being cancelled: KEDA resets its
        reconnect backoff (2 s doubling to 60 s) only after a clean end of stream (kedacore/keda
        pkg/scalers/external_scaler.go, runStreamIsActive), so a cancelled stream after each restart would
        leave scale-from-zero waiting up to a minute."""
        self.open_streams += 1
        try:
            last: bool | None = None
            heartbeat = max(30.0, self.config.interval * 2)
            since = time.monotonic()
            while not self.stopping.is_set():
                changed = self.table.changed()
                active = self._active(request)
                if active != last or time.monotonic() - since >= heartbeat:
                    yield pb.IsActiveResponse(result=active)
                    last, since = active, time.monotonic()
                stop = asyncio.ensure_future(self.stopping.wait())
                wake = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait((stop, wake), timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    wake.cancel()
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
        self.scaler.stopping.set()  # push streams end with OK before the server goes
        await asyncio.sleep(0)
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
