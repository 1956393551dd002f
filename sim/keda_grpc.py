"""KEDA's side of the wire: calls a real external scaler (`gpumix serve`) over a real gRPC channel exactly as
KEDA does, and drives ScaledObjectEmulators against a fleet on the wall clock.

- `GrpcExternalScaler`: GetMetricSpec, GetMetrics, IsActive with KEDA's 3 s deadline, plaintext h2c, one
  channel per scaler address; a status error becomes `ScalerCallError` (the emulator counts it like KEDA).
- `StreamIsActive` (trigger type `external-push`): a thread per ScaledObject holds the stream open and
  reconnects with KEDA's backoff (`sim.keda_emulator.StreamBackoff`: 2 s doubling to 60 s, reset only when a
  stream ends cleanly, from KEDA 2.18); every message goes to the driver at once.
- `KedaDriver`: one thread running every due poll / HPA sync of every ScaledObject, reading and setting the
  Deployment's replicas through callables (the real-time fleet's `replicas` / `set_replicas`).

The client stubs are scaler._proto, generated from proto/externalscaler.proto at build time (scaler/protogen.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from optimizer.defaults import KEDA_GRPC_TIMEOUT_S
from scaler import logs
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from sim.keda_emulator import (
    CURRENT_KEDA,
    Event,
    KedaVersion,
    MetricSpec,
    MetricValue,
    ScaledObjectEmulator,
    ScaledObjectRef,
    ScaledObjectSpec,
    ScalerCallError,
    StreamBackoff,
)

log = logs.get("gpumix.sim.keda")



def _ref(ref: ScaledObjectRef) -> Any:
    return pb.ScaledObjectRef(name=ref.name, namespace=ref.namespace, scalerMetadata=dict(ref.scaler_metadata))


class GrpcExternalScaler:
    def __init__(self, address: str, timeout_s: float = KEDA_GRPC_TIMEOUT_S,
                 keda_version: KedaVersion = CURRENT_KEDA) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.ExternalScalerStub(self.channel)
        self.keda_version = keda_version
        self.calls: dict[str, int] = {"GetMetricSpec": 0, "GetMetrics": 0, "IsActive": 0, "StreamIsActive": 0}
        self.stream_waits: list[float] = []  # every reconnect wait, in order (tests read the backoff)
        self._lock = threading.Lock()

    def _call(self, name: str, fn: Callable[..., Any], request: Any) -> Any:
        with self._lock:
            self.calls[name] += 1
        try:
            return fn(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise ScalerCallError(code.name if code else "UNKNOWN", str(details)) from None

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        resp = self._call("GetMetricSpec", self.stub.GetMetricSpec, _ref(ref))
        return [MetricSpec(s.metricName, int(s.targetSize), float(s.targetSizeFloat)) for s in resp.metricSpecs]

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        req = pb.GetMetricsRequest(scaledObjectRef=_ref(ref), metricName=metric_name)
        resp = self._call("GetMetrics", self.stub.GetMetrics, req)
        return [MetricValue(v.metricName, int(v.metricValue), float(v.metricValueFloat)) for v in resp.metricValues]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        return bool(self._call("IsActive", self.stub.IsActive, _ref(ref)).result)

    def hold_stream(self, ref: ScaledObjectRef, on_message: Callable[[bool], None], stop: threading.Event) -> None:
        """StreamIsActive until `stop`, reconnecting as KEDA's runStreamIsActive does. Blocks; run it in a
        thread."""
        backoff = StreamBackoff(self.keda_version)
        while not stop.is_set():
            with self._lock:
                self.calls["StreamIsActive"] += 1
            call = self.stub.StreamIsActive(_ref(ref))
            cancel = threading.Thread(target=lambda c=call: (stop.wait(), c.cancel()), daemon=True)
            cancel.start()
            clean = False
            try:
                for msg in call:
                    on_message(bool(msg.result))
                clean = True  # the server ended the stream with status OK (io.EOF on KEDA's side)
            except grpc.RpcError as e:
                if stop.is_set():
                    return
                code = e.code() if hasattr(e, "code") else None
                log.info("stream_is_active_lost", scaled_object=ref.name, code=code.name if code else None,
                         retry_in_s=backoff.retry_s)
            wait = backoff.after_end(clean)
            with self._lock:
                self.stream_waits.append(wait)
            if stop.wait(wait):
                return

    def close(self) -> None:
        self.channel.close()


class KedaDriver:
    """KEDA + HPA for a set of ScaledObjects on the wall clock, in a background thread."""

    def __init__(
        self,
        specs: Iterable[ScaledObjectSpec],
        scaler: GrpcExternalScaler,
        get_replicas: Callable[[str], int],
        set_replicas: Callable[[str, int], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[ScaledObjectSpec, Event], None] | None = None,
        keda_version: KedaVersion = CURRENT_KEDA,
    ) -> None:
        self.scaler = scaler
        self.get_replicas = get_replicas
        self.set_replicas = set_replicas
        self.clock = clock
        self.t0 = clock()
        self.emulators = {s.name: ScaledObjectEmulator(s, scaler, created_at=0.0, keda_version=keda_version)
                          for s in specs}
        if on_event is not None:
            for emu in self.emulators.values():
                emu.listeners.append(lambda e, spec=emu.spec: on_event(spec, e))
        self._pushes: queue.Queue[tuple[str, bool]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def now(self) -> float:
        return self.clock() - self.t0

    def start(self) -> KedaDriver:
        main = threading.Thread(target=self._run, name="gpumix-keda-driver", daemon=True)
        self._threads.append(main)
        for emu in self.emulators.values():
            if emu.spec.trigger_type == "external-push":
                name = emu.spec.name
                t = threading.Thread(
                    target=self.scaler.hold_stream,
                    args=(emu.ref, lambda active, n=name: self._pushes.put((n, active)), self._stop),
                    name=f"gpumix-keda-stream-{name}", daemon=True)
                self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def _step(self) -> None:
        now = self.now()
        while True:
            try:
                name, active = self._pushes.get_nowait()
            except queue.Empty:
                break
            emu = self.emulators[name]
            cur = self.get_replicas(emu.spec.deployment)
            new = emu.push(active, now, cur)
            if new != cur:
                self.set_replicas(emu.spec.deployment, new)
        for emu in self.emulators.values():
            if emu.next_due() <= now:
                cur = self.get_replicas(emu.spec.deployment)
                new = emu.advance(now, cur)
                if new != cur:
                    self.set_replicas(emu.spec.deployment, new)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as e:  # keep driving; the demo and tests read `errors`
                self.errors.append(repr(e))
                log.exception("keda_driver_step_failed")
            due = min((e.next_due() for e in self.emulators.values()), default=self.now() + 1.0)
            wait = max(0.0, min(0.5, due - self.now()))
            try:
                item = self._pushes.get(timeout=wait) if wait > 0 else None
            except queue.Empty:
                item = None
            if item is not None:
                self._pushes.put(item)  # handled (in order) by the next step, at once

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
