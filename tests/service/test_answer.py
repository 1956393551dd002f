"""What gpumix answers KEDA (scaler/answer.py), one table per call: trigger metadata, GetMetricSpec,
GetMetrics. The servicer and the replay's in-process scaler both answer with these functions."""

from __future__ import annotations

import dataclasses

import pytest

from optimizer.hpa import desired_replicas
from optimizer.ids import ModelId, VariantId
from scaler.answer import Code, Trigger, TriggerError, metric_spec, metric_value, parse_trigger
from scaler.table import ModelView, Published, VariantView

NS, MODEL = "llm", "m"
VID = VariantId(NS, "m-l4")
NOW = 10_000.0
STALE_AFTER = 60.0

# ------------------------------------------------------------------------------------------ trigger metadata

TRIGGERS = [
    # (metadata, ScaledObject namespace, (variant, model, target) or the problem's words)
    ({"model": "m", "variant": "v"}, "llm", (VariantId("llm", "v"), "m", 1.0)),
    ({"model": "m", "variant": "v", "namespace": "other"}, "llm", (VariantId("other", "v"), "m", 1.0)),
    ({"model": "m", "variant": "v", "target": "0.5"}, "llm", (VariantId("llm", "v"), "m", 0.5)),
    ({"modelFromEnv": "m", "variantFromEnv": "v"}, "llm", (VariantId("llm", "v"), "m", 1.0)),  # KEDA resolved
    ({"model": "m", "variant": "v", "scalerAddress": "x:1", "enableTLS": "true"}, "llm",
     (VariantId("llm", "v"), "m", 1.0)),
    ({"model": "m"}, "llm", "'variant'"),
    ({"variant": "v"}, "llm", "'model'"),
    ({"model": " ", "variant": "v"}, "llm", "'model'"),
    ({"model": "m", "variant": "v"}, "", "'namespace' is required"),
    ({"model": "m", "variant": "v", "colour": "blue"}, "llm", "'colour'"),
    ({"model": "m", "modelFromEnv": "n", "variant": "v"}, "llm", "disagree"),
    ({"model": "m", "variant": "v", "target": "x"}, "llm", "'target'"),
    ({"model": "m", "variant": "v", "target": "0"}, "llm", "'target'"),
    ({"model": "m", "variant": "v", "target": "1e-300"}, "llm", "'target'"),  # the HPA would get 0 milli-units
    ({"model": "m", "variant": "v", "target": "1e300"}, "llm", "'target'"),  # overflows KEDA's int64
    ({"model": "m", "variant": "v", "target": "nan"}, "llm", "'target'"),
]


@pytest.mark.parametrize("meta, namespace, want", TRIGGERS)
def test_parse_trigger(meta: dict[str, str], namespace: str, want: object) -> None:
    if isinstance(want, str):
        with pytest.raises(TriggerError) as err:
            parse_trigger(meta, namespace, default_target=1.0)
        assert want in str(err.value)
    else:
        assert parse_trigger(meta, namespace, default_target=1.0) == Trigger(*want)  # type: ignore[misc]


def test_every_problem_is_reported_together() -> None:
    with pytest.raises(TriggerError) as err:
        parse_trigger({"colour": "blue", "target": "-1"}, "", default_target=1.0)
    assert len(err.value.problems) == 5  # unknown key, model, variant, namespace, target


# ------------------------------------------------------------------------------------------ answers


def published(**view: object) -> Published:
    base = VariantView(VID, MODEL, "ok", recommendation=3, decided_at=NOW - 10, current=3)
    return Published(variants={VID: dataclasses.replace(base, **view)},  # type: ignore[arg-type]
                     models={ModelId(NS, MODEL): ModelView(ModelId(NS, MODEL))})


TRIG = Trigger(VID, MODEL, 1.0)

ANSWERS = [
    # (case, trigger, published, code)
    ("fresh recommendation", TRIG, published(), Code.OK),
    ("unknown variant", Trigger(VariantId(NS, "m-a100"), MODEL, 1.0), published(), Code.NOT_FOUND),
    ("unknown model", Trigger(VID, "other", 1.0), published(), Code.NOT_FOUND),
    ("no usable profile", TRIG, published(profile_status="invalid"), Code.NOT_FOUND),
    ("no recommendation yet", TRIG, published(recommendation=None, decided_at=None), Code.UNAVAILABLE),
    ("restored, never decided from data", TRIG, published(decided_at=None), Code.UNAVAILABLE),
    ("stale recommendation", TRIG, published(decided_at=NOW - STALE_AFTER - 1), Code.UNAVAILABLE),
    ("just within stale_after", TRIG, published(decided_at=NOW - STALE_AFTER), Code.OK),
]


@pytest.mark.parametrize("case, trig, table, code", ANSWERS, ids=[a[0] for a in ANSWERS])
def test_metric_value_codes(case: str, trig: Trigger, table: Published, code: Code) -> None:
    answer = metric_value(trig, table, NOW, STALE_AFTER)
    assert answer.code is code
    if code is not Code.OK:
        assert answer.message  # every refusal says why


def test_metric_spec_refuses_what_metric_value_refuses_for_identity() -> None:
    assert metric_spec(Trigger(VariantId(NS, "nope"), MODEL, 1.0), published()).code is Code.NOT_FOUND
    assert metric_spec(TRIG, published(profile_status="missing")).code is Code.NOT_FOUND
    assert metric_spec(TRIG, published(recommendation=None, decided_at=None)).code is Code.OK  # spec needs no data


def test_metric_name_must_be_this_triggers() -> None:
    assert metric_value(TRIG, published(), NOW, STALE_AFTER, "s0-gpumix-llm-m-l4").ok  # KEDA's s<index>- prefix
    assert metric_value(TRIG, published(), NOW, STALE_AFTER, "gpumix-llm-other").code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("recommendation, current, tol_up, tol_down, lands", [
    (3, 3, 0.1, 0.1, 3),
    (11, 10, 0.1, 0.1, 12),  # +10 % is inside the up band: the nearest reachable count above
    (11, 10, 0.0, 0.0, 11),  # no band (tolerance 0 in force): exact
    (9, 10, 0.1, 0.1, 9),  # down by one is reachable below the 0.9 band edge
    (19, 20, 0.1, 0.1, 20),  # not reachable going down: stay, never below the plan
    (19, 20, 0.1, 0.0, 19),  # a zero down-tolerance makes it reachable
    (21, 20, 0.0, 0.1, 21),  # the up-tolerance alone decides going up
    (0, 4, 0.1, 0.1, 0),
])
def test_reported_value_lands_the_hpa_with_its_tolerance_per_direction(
        recommendation: int, current: int, tol_up: float, tol_down: float, lands: int) -> None:
    table = published(recommendation=recommendation, current=current, tolerance_up=tol_up, tolerance_down=tol_down)
    answer = metric_value(TRIG, table, NOW, STALE_AFTER)
    tolerance = tol_up if recommendation >= current else tol_down
    assert desired_replicas(answer.value, 1.0, current, tolerance) == lands
