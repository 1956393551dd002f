"""What gpumix reports to KEDA for one variant, as pure functions: the metric's name, and the value that
lands the HPA on the recommendation. The gRPC servicer (scaler/keda.py) and the replay's in-process
scaler (sim/hpa_emulator.py) both answer with these, so replay measures what the service would do."""

from __future__ import annotations

import math
import re

from optimizer.hpa import DEFAULT_TOLERANCE, metric_value

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def metric_name(namespace: str, variant: str) -> str:
    """`gpumix-<namespace>-<variant>`, lower-case and path-safe (it ends up in an external metrics URL)."""
    return _UNSAFE.sub("-", f"gpumix-{namespace}-{variant}".lower()).strip("-")


def report_value(
    desired: int,
    current: int | None,
    target: float,
    tolerance_up: float = DEFAULT_TOLERANCE,
    tolerance_down: float = DEFAULT_TOLERANCE,
) -> float:
    """The one value that makes the HPA (AverageValue target, its tolerance in the direction of the move)
    land on `desired`."""
    if desired <= 0:
        return 0.0  # scale-to-zero is KEDA's (IsActive false); the HPA itself stops at its minimum
    tolerance = tolerance_up if current is None or desired >= current else tolerance_down
    value, _ = metric_value(desired, current, target, tolerance)
    return max(0.0, value)


def legacy_int(value: float) -> int:
    """The deprecated int64 field, for KEDA releases without the float one: ceil keeps the HPA on the same
    count (rounding could land one below)."""
    return math.ceil(value - 1e-9)


def legacy_target(target: float) -> int:
    """The deprecated int64 targetSize, for KEDA releases without targetSizeFloat (< 2.17)."""
    return max(1, round(target))
