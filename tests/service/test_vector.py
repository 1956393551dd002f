"""scaler/vector.py: an instant-vector answer decodes to the same samples whichever pass reads it, and a
sample's number is what gpumix counts. (Wrong shapes and HTTP errors, end to end through a real Prometheus
and a fault proxy: tests/faults/test_prometheus_faults.py.)"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from scaler import vector
from scaler.vector import QueryFailed, Sample


def answer(result: Any, **extra: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}, **extra}).encode()


LABELS = {"namespace": "llm", "model_name": "m"}

# (case, body, samples decoded)
WELL_FORMED: list[tuple[str, bytes, list[Sample]]] = [
    ("one sample", answer([{"metric": LABELS, "value": [1.5, "2"]}]), [Sample(LABELS, (1.5, "2"))]),
    ("empty vector", answer([]), []),
    ("NaN and +Inf stay strings", answer([{"metric": {}, "value": [1, "NaN"]}, {"metric": {}, "value": [1, "+Inf"]}]),
     [Sample({}, (1.0, "NaN")), Sample({}, (1.0, "+Inf"))]),
    ("warnings and infos ignored", answer([{"metric": {}, "value": [1, "3"]}], warnings=["w"], infos=["i"]),
     [Sample({}, (1.0, "3"))]),
    ("histogram buckets", answer([{"metric": {"le": "+Inf"}, "value": [1, "4"]}, {"metric": {"le": "10"},
                                                                                 "value": [1, "1"]}]),
     [Sample({"le": "+Inf"}, (1.0, "4")), Sample({"le": "10"}, (1.0, "1"))]),
    # The slow pass: shapes the typed decoder refuses that are still instant vectors.
    ("value a number, not a string", answer([{"metric": {}, "value": [1, 2.5]}]), [Sample({}, (1.0, "2.5"))]),
    ("value null", answer([{"metric": {}, "value": [1, None]}]), [Sample({}, (1.0, "null"))]),
    ("time not a number", answer([{"metric": {}, "value": ["x", "1"]}]), [Sample({}, (math.nan, "1"))]),
]


@pytest.mark.parametrize(("case", "body", "samples"), WELL_FORMED, ids=[c for c, _, _ in WELL_FORMED])
def test_well_formed_answers_decode_to_samples(case: str, body: bytes, samples: list[Sample]) -> None:
    got = vector.decode(200, body)
    assert [s.metric for s in got] == [s.metric for s in samples]
    assert [s.value[1] for s in got] == [s.value[1] for s in samples]
    assert [s.value[0] for s in got] == pytest.approx([s.value[0] for s in samples], nan_ok=True)


# (case, status, body, error kind, words in the message): the fast pass must not accept what the slow one refuses
REFUSED: list[tuple[str, int, bytes, str, str]] = [
    ("le not a number", 200, answer([{"metric": {"le": "big"}, "value": [1, "1"]}]), "bad_response",
     "result[0].metric.le is not a number"),
    ("second sample's labels", 200,
     answer([{"metric": {}, "value": [1, "1"]}, {"metric": {"a": 1}, "value": [1, "1"]}]),
     "bad_response", "result[1].metric"),
    ("a success body under 503", 503, answer([]), "http_5xx", "HTTP 503"),
    ("status error", 200, b'{"status": "error", "errorType": "execution", "error": "too many samples"}',
     "bad_response", "too many samples"),
    ("matrix", 200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode(),
     "bad_response", "resultType 'matrix'"),
]


@pytest.mark.parametrize(("case", "status", "body", "kind", "words"), REFUSED, ids=[c for c, *_ in REFUSED])
def test_wrong_answers_are_refused_with_their_reason(case: str, status: int, body: bytes, kind: str,
                                                     words: str) -> None:
    with pytest.raises(QueryFailed) as failed:
        vector.decode(status, body)
    assert failed.value.kind == kind
    assert words in str(failed.value)


# (sample value, what gpumix counts): NaN, ±Inf, negative and unparsable values are invalid samples
NUMBERS: list[tuple[str, float | None]] = [
    ("2.5", 2.5), ("0", 0.0), ("1e3", 1000.0), ("NaN", None), ("+Inf", None), ("-Inf", None), ("-1", None),
    ("null", None), ("", None), ("1e999", None),
]


@pytest.mark.parametrize(("text", "number"), NUMBERS)
def test_sample_number(text: str, number: float | None) -> None:
    assert Sample({}, (0.0, text)).number == number
