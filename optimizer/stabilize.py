"""Between the plan and the published recommendation: what the HPA's windows will do anyway, and when a
smaller fleet is really enough.

- The HPA scales down to the *highest* recommendation inside its scale-down window. Those replicas are
  running and paid for until the window passes, so the planner treats them as a lower bound (capacity to
  use) instead of buying a different type on top: `held_replicas`.
- A variant scales down only when the smaller count still carries its load with a margin below the target
  utilisation; otherwise it keeps the smallest count that does. This is what stops 2 ↔ 1 flapping under a
  steady load that sits near a replica boundary: `hysteresis`.
- `min_replicas` (AIBrix's `model.aibrix.ai/min_replicas`) is a floor in whole replicas, with or without
  traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from optimizer.hpa import in_window


def held_replicas(history: Iterable[tuple[float, int]], now: float, window_s: float) -> int:
    """Highest recommendation in force at any time within the last `window_s` seconds: the HPA's
    scale-down stabilization keeps at least this many. A recommendation stays in force until the next
    one, so the value published before the window opened counts too. Which entries fall inside the window
    is the HPA's own rule (`optimizer.hpa.in_window`), so both sides agree on the boundary."""
    if window_s <= 0:
        return 0
    in_force_at_start = 0
    held = 0
    for t, n in sorted(history):
        if not in_window(t, now, window_s):
            in_force_at_start = n
        elif t <= now:
            held = max(held, n)
    return max(held, in_force_at_start)


def prune(history: Iterable[tuple[float, int]], now: float, keep_s: float) -> list[tuple[float, int]]:
    """The history `held_replicas` needs for windows up to `keep_s`: every entry newer than the cutoff, and
    the one in force at the cutoff (the last before it), which a window opening there still counts."""
    ordered = sorted(history)
    cutoff = now - keep_s
    older = [entry for entry in ordered if entry[0] <= cutoff]
    return older[-1:] + [entry for entry in ordered if entry[0] > cutoff]


def hysteresis(
    planned: Mapping[str, int],
    busy: Mapping[str, float],
    previous: Mapping[str, int],
    utilization: float,
    margin: float = 0.1,
) -> dict[str, int]:
    """Final counts: going up is taken as planned; going down from p to n only when the variant's work
    (`busy`, replica-equivalents) fits in n replicas at utilisation u·(1 − margin); otherwise the smallest
    count between n and p that does."""
    out: dict[str, int] = {}
    limit = utilization * (1.0 - margin)
    for variant, n in planned.items():
        p = previous.get(variant)
        if p is None or n >= p:
            out[variant] = n
            continue
        need = math.ceil(busy.get(variant, 0.0) / limit - 1e-9) if limit > 0 else p
        out[variant] = min(p, max(n, need))
    return out
