"""Prometheus's instant-vector answers (`GET /api/v1/query`, resultType "vector"): the body decoded and its
shape checked in one pass, or a `QueryFailed` that says what is wrong with it.

At 1,000 models a cycle's eleven answers hold ~64,000 samples (8 MB of JSON). Decoding them with `json` into
dicts and then checking every sample's shape cost 0.77 s of the cycle's one core; msgspec decodes straight
into typed `Sample`s and refuses a wrong shape while it decodes (0.055 s for the same answers). Only an answer
msgspec refuses goes through the slow pass, whose one job is to name the first thing that is wrong.

What Prometheus sends (docs "HTTP API", "Instant vectors"): `{"status": "success", "data": {"resultType":
"vector", "result": [{"metric": {label: value}, "value": [unix_time, "sample as a string"]}]}}`; errors
carry `"status": "error"`, `errorType` and `error`. Sample values are strings because "NaN", "+Inf" and
"-Inf" are legal (the caller decides what they mean).
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec


class QueryFailed(Exception):
    """A query that got no usable answer: `kind` is what the counters and logs call it."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class Sample(msgspec.Struct, frozen=True, gc=False):
    """One element of an instant vector. `gc=False`: a sample holds only strings and numbers, so tens of
    thousands of them a cycle need not be tracked by the cyclic garbage collector."""

    metric: dict[str, str]
    value: tuple[float, str]  # (evaluation time, the sample as Prometheus formats it)

    @property
    def number(self) -> float | None:
        """The sample as a finite, non-negative number (what every gpumix query counts); None otherwise."""
        try:
            v = float(self.value[1])
        except (ValueError, OverflowError):
            return None
        return v if 0.0 <= v < math.inf else None


Samples = list[Sample]


class _Data(msgspec.Struct):
    result_type: str = msgspec.field(name="resultType")
    result: Samples


class _Answer(msgspec.Struct):
    status: str
    data: _Data | None = None


_DECODER = msgspec.json.Decoder(_Answer)


def decode(status: int, body: bytes) -> Samples:
    """The samples of an instant-vector answer, or QueryFailed naming what is wrong. A bad sample *value* is
    not a wrong shape: it is the caller's invalid sample. A wrong shape fails the whole query."""
    if status == 200:
        try:
            answer = _DECODER.decode(body)
        except msgspec.MsgspecError:
            answer = None
        if (answer is not None and answer.status == "success" and answer.data is not None
                and answer.data.result_type == "vector" and _numeric_le(answer.data.result)):
            return answer.data.result
    return _explain(status, body)


def _numeric_le(result: Samples) -> bool:
    """Every histogram bucket's `le` is a number ("+Inf" included)."""
    try:
        for s in result:
            le = s.metric.get("le")
            if le is not None:
                float(le)
    except ValueError:
        return False
    return True


def _explain(status: int, body: bytes) -> Samples:
    """The slow pass for an answer the typed decoder refused: raises QueryFailed naming the first problem.
    An answer that turns out well formed (a value msgspec would not take, say a number where Prometheus
    sends a string) is returned as samples, with its value in Prometheus's string form."""

    def bad(problem: str) -> QueryFailed:
        return QueryFailed("bad_response", f"HTTP {status}: {problem}")

    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
        if status == 200:
            raise bad(f"not JSON ({_snippet(body)})") from None
    if status >= 300:
        error = doc.get("error") if isinstance(doc, dict) else None
        detail = str(error)[:300] if error else _snippet(body)
        kind = "http_5xx" if status >= 500 else "http_4xx" if status >= 400 else "bad_response"
        raise QueryFailed(kind, f"HTTP {status}: {detail}")
    if not isinstance(doc, dict):
        raise bad(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("status") != "success":
        raise bad(f"status {doc.get('status')!r}: {str(doc.get('error', ''))[:300]}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise bad("no 'data' object")
    if data.get("resultType") != "vector":
        raise bad(f"resultType {data.get('resultType')!r}, expected 'vector' (an instant vector query)")
    result = data.get("result")
    if not isinstance(result, list):
        raise bad(f"data.result must be a list, got {type(result).__name__}")
    samples = []
    for i, sample in enumerate(result):
        if not isinstance(sample, dict):
            raise bad(f"result[{i}] must be an object, got {type(sample).__name__}")
        labels = sample.get("metric")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise bad(f"result[{i}].metric must be an object of string labels")
        value = sample.get("value")
        if not isinstance(value, list) or len(value) != 2:
            raise bad(f"result[{i}].value must be [time, \"value\"], got {_snippet(repr(value).encode())}")
        if "le" in labels:
            try:
                float(labels["le"])
            except ValueError:
                raise bad(f"result[{i}].metric.le is not a number: {labels['le'][:40]!r}") from None
        samples.append(Sample(labels, (_time(value[0]), _text(value[1]))))
    return samples


def _time(t: Any) -> float:
    try:
        return float(t)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _snippet(body: bytes) -> str:
    text = body[:120].decode("utf-8", "replace")
    return repr(text) + (f" ... {len(body)} bytes" if len(body) > 120 else "")
