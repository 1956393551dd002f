"""IsActive, the rule KEDA scales 0 ↔ 1 by: one row per situation."""

from __future__ import annotations

import pytest

from scaler.loop import ModelView, Snapshot, Table, VariantView

NS, MODEL = "llm", "m"


def _table(recs: dict[str, int | None], current: dict[str, int], waiting: float) -> Table:
    table = Table()
    idle = all((r or 0) == 0 for r in recs.values()) and not any(current.values())
    table.snapshot = Snapshot(
        variants={(NS, v): VariantView(NS, MODEL, v, "ok", replicas=r, current=current.get(v, 0))
                  for v, r in recs.items()},
        models={(NS, MODEL): ModelView(NS, MODEL, first_responder="l4", idle=idle)},
    )
    table.waiting = {(NS, MODEL): waiting}
    return table


@pytest.mark.parametrize(
    "recs, current, waiting, active",
    [
        ({"l4": 0, "a100": 0}, {}, 0, set()),  # idle and quiet
        ({"l4": 0, "a100": 0}, {}, 3, {"l4"}),  # idle model sees a queue: wake only its first responder
        ({"l4": 0, "a100": 2}, {}, 3, {"a100"}),  # the plan already wants a100: nothing else is woken
        ({"l4": 0, "a100": 0}, {"a100": 1}, 3, set()),  # a replica is still up: the next plan decides
        ({"l4": 1, "a100": 0}, {}, 0, {"l4"}),
        ({"l4": None, "a100": None}, {"a100": 2}, 0, {"a100"}),  # nothing published yet: keep what runs
    ],
)
def test_is_active(recs: dict[str, int | None], current: dict[str, int], waiting: float, active: set[str]) -> None:
    table = _table(recs, current, waiting)
    assert {v for v in recs if table.is_active(NS, MODEL, v)} == active
