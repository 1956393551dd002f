"""KEDA's ExternalScaler wire contract: `externalscaler_pb2` and `externalscaler_pb2_grpc`, generated at build
time from proto/externalscaler.proto by scaler/protogen.py (never committed, never generated at run time)."""

from __future__ import annotations

import importlib
from types import ModuleType

_STUBS = ("externalscaler_pb2", "externalscaler_pb2_grpc")


def __getattr__(name: str) -> ModuleType:
    # `from scaler._proto import externalscaler_pb2` asks for the attribute before importing the submodule;
    # importing it here lets a missing file say how to get it instead of a bare "cannot import name".
    if name not in _STUBS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise ImportError(f"{__name__}.{name} has not been generated: in a source checkout run `make proto` "
                          "(or `pip install -e .`); a built wheel always contains it") from None
