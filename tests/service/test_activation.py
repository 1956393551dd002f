"""IsActive, the rule KEDA scales 0 ↔ 1 by: one row per situation."""

from __future__ import annotations

import pytest

from optimizer.ids import ModelId, VariantId
from scaler.answer import Trigger, is_active
from scaler.table import ModelView, Published, VariantView

NS, MODEL = "llm", "m"
MID = ModelId(NS, MODEL)


def _published(recs: dict[str, int | None], current: dict[str, int]) -> Published:
    idle = all((r or 0) == 0 for r in recs.values()) and not any(current.values())
    return Published(
        variants={VariantId(NS, v): VariantView(VariantId(NS, v), MODEL, "ok", recommendation=r,
                                                current=current.get(v, 0))
                  for v, r in recs.items()},
        models={MID: ModelView(MID, first_responder=VariantId(NS, "l4"), idle=idle)},
    )


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
    published = _published(recs, current)
    woken = {v for v in recs if is_active(Trigger(VariantId(NS, v), MODEL, 1.0), published, {MID: waiting})}
    assert woken == active
