"""Shared pieces of the service tests: a generated gRPC client (as KEDA would call), polling, ports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 20.0, every: float = 0.2, what: str = "") -> T:
    """Poll until `check` returns something truthy (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    for _ in range(int(timeout / every) + 2):
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the condition may raise until the service is there
            last_exc = exc
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what or check}: last error {last_exc!r}")


def ref(model: str, variant: str, namespace: str = "llm", **extra: str) -> pb.ScaledObjectRef:
    meta = {"scalerAddress": "gpumix.gpumix-system.svc:9090", "model": model, "variant": variant, **extra}
    return pb.ScaledObjectRef(name=f"{variant}-so", namespace=namespace, scalerMetadata=meta)


__all__ = ["eventually", "pb", "pb_grpc", "ref"]
