"""Shared pieces of the service tests: a generated gRPC client (as KEDA would call), polling, ports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

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


# The fleet `gpumix serve` runs against in the integration and fault suites: a planned model on three
# variants (one without a profile) and a model that stays idle.
NS, MODEL = "llm", "llama2-7b"
A100, A40, L4 = "simulator-llama2-7b-a100", "simulator-llama2-7b-a40", "llama2-7b-l4"
IDLE_MODEL, IDLE_VARIANT = "idle-7b", "idle-7b-a40"
INVENTORY = f"""
models:
- name: {MODEL}
  namespace: {NS}
  variants:
  - {{name: {A100}, max_replicas: 8}}
  - {{name: {A40}, max_replicas: 8}}
  - {{name: {L4}, max_replicas: 8}}
- name: {IDLE_MODEL}
  namespace: {NS}
  variants:
  - {{name: {IDLE_VARIANT}, max_replicas: 4}}
"""


__all__ = ["eventually", "pb", "pb_grpc", "ref"]


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` whose labels include `labels`, parsed from a text
    exposition the way Prometheus reads it (so number formatting and label order do not matter)."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` with these labels (None when there is none)."""
    found = samples(text, name, **labels)
    assert len(found) <= 1, f"{name}{labels}: {len(found)} samples match"
    return found[0][1] if found else None
