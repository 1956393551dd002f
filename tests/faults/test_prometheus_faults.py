"""Prometheus misbehaving, one row per fault, between the Observer and a real Prometheus (through
tests/faults/proxy.py): every fault becomes an error kind with a message naming it, within the deadline
(total time, not per read), logged once per outage and once on recovery; the fast path never waits behind
a slow cycle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from scaler.config import Config
from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.loop import Controller, StaticInventory
from scaler.prometheus import CYCLE_QUERIES, Observer
from scaler.store import ProfileStore, StateStore
from scaler.table import Table
from sim.services import start_prometheus
from tests.faults.proxy import Fault, FaultProxy
from tests.service.exporter import FleetExporter

pytestmark = pytest.mark.integration

DEADLINE = 0.5
WAITING_QUERY = Config().query("waiting")


def vector(result: Any, result_type: str = "vector") -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


SAMPLE = {"metric": {"namespace": "llm", "model_name": "m"}, "value": [1.0, "2"]}

# (fault, what the proxy does, error kind every query gets, words in the logged error)
FAULTS: list[tuple[str, Fault, str, str]] = [
    ("503 with Prometheus's error", Fault("status", status=503, body=b'{"status":"error","error":"overloaded"}'),
     "http_5xx", "overloaded"),
    ("500 with an HTML page", Fault("status", status=500, body=b"<html>oops</html>"), "http_5xx", "oops"),
    ("502 empty", Fault("status", status=502), "http_5xx", "HTTP 502"),
    ("422 execution error", Fault("status", status=422, body=b'{"status":"error","error":"query timed out"}'),
     "http_4xx", "query timed out"),
    ("301 redirect", Fault("status", status=301), "bad_response", "HTTP 301"),
    ("answer delayed past the deadline", Fault("delay", delay=5.0), "timeout", "within 0.5 s"),
    ("answer trickled a byte per 0.2 s", Fault("trickle", every=0.2), "timeout", "within 0.5 s"),
    ("connection closed unanswered", Fault("close"), "unreachable", "Disconnected"),
    ("connection reset", Fault("reset"), "unreachable", ""),
    ("answer cut short", Fault("truncate"), "unreachable", ""),
    ("200 garbage", Fault("body", body=b"\x00\xffgarbage"), "bad_response", "not JSON"),
    ("200 HTML", Fault("body", body=b"<html>login</html>"), "bad_response", "not JSON"),
    ("200 empty", Fault("body", body=b""), "bad_response", "not JSON"),
    ("JSON list", Fault("body", body=b"[]"), "bad_response", "expected a JSON object"),
    ("status error in a 200", Fault("body", body=b'{"status":"error","error":"bad"}'), "bad_response", "bad"),
    ("no data", Fault("body", body=b'{"status":"success"}'), "bad_response", "no 'data'"),
    ("a matrix, not a vector", Fault("body", body=vector([], "matrix")), "bad_response", "resultType"),
    ("a scalar", Fault("body", body=vector([1.0, "1"], "scalar")), "bad_response", "resultType"),
    ("result a string", Fault("body", body=vector("x")), "bad_response", "data.result must be a list"),
    ("sample a number", Fault("body", body=vector([1])), "bad_response", "result[0] must be an object"),
    ("sample without value", Fault("body", body=vector([{"metric": {}}])), "bad_response", "result[0].value"),
    ("value of three", Fault("body", body=vector([{"metric": {}, "value": [1, 2, 3]}])), "bad_response",
     "result[0].value"),
    ("label a number", Fault("body", body=vector([{"metric": {"namespace": 1}, "value": [1, "1"]}])),
     "bad_response", "string labels"),
    ("le not a number", Fault("body", body=vector([{"metric": {"le": "big"}, "value": [1, "1"]}])),
     "bad_response", "le is not a number"),
    ("100,000-deep nesting", Fault("body", body=b"[" * 100_000 + b"]" * 100_000), "bad_response", "not JSON"),
]


@pytest.fixture(scope="module")
def fleet_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    """One Prometheus scraping the exporter for the whole module (a fresh one per row costs seconds)."""
    exporter = FleetExporter("v1")
    exporter.set_variant("llm", "m", "m-a40", 2, rps=4.0, waiting=2)
    prometheus = start_prometheus(tmp_path_factory.mktemp("prom"), [exporter.start()])
    proxy = FaultProxy(prometheus.url).start()
    yield proxy
    proxy.stop()
    prometheus.stop()
    exporter.stop()


@pytest.fixture()
def fleet(fleet_proxy: FaultProxy) -> Iterator[FaultProxy]:
    fleet_proxy.set(None)
    yield fleet_proxy
    fleet_proxy.set(None)


def _observer(proxy: FaultProxy, kinds: list[str] | None = None) -> Observer:
    config = Config(prometheus=proxy.url, prometheus_timeout=DEADLINE, fast_interval=0.3, rate_window="5s")
    return Observer(config, on_error=(kinds.append if kinds is not None else None))


async def _wait_for_data(observer: Observer) -> None:
    for _ in range(80):
        obs = await observer.observe()
        if not obs.errors and ("llm", "m") in obs.models and "completions" in obs.models[("llm", "m")].seen:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("Prometheus never had the exporter's series")


@pytest.mark.parametrize(("fault", "proxy_fault", "kind", "words"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_is_named_bounded_and_logged_once(fleet: FaultProxy, fault: str, proxy_fault: Fault,
                                                           kind: str, words: str) -> None:
    kinds: list[str] = []
    observer = _observer(fleet, kinds)
    await _wait_for_data(observer)
    fleet.set(proxy_fault)
    loop = asyncio.get_running_loop()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            began = loop.time()
            obs = await observer.observe()
            # The deadline is total time: a trickled answer (minutes at 0.2 s a byte) ends the batch at it.
            assert loop.time() - began < DEADLINE * 4
            assert set(obs.errors) == set(CYCLE_QUERIES) and set(obs.errors.values()) == {kind}
            assert not obs.complete and not obs.models
        assert await observer.waiting() is None
        fleet.set(None)
        obs = await observer.observe()
    assert not obs.errors
    problems = [e for e in logs if e["log_level"] == "warning"]
    assert len(problems) == 1, problems  # one line for the outage, not one per query or per cycle
    assert problems[0]["what"] == "prometheus" and problems[0]["kinds"] == [kind]
    assert words in problems[0]["error"], problems[0]["error"]
    assert [e["was"] for e in logs if e["event"] == "recovered"] == ["down"]
    assert kinds.count(kind) == 3 * len(CYCLE_QUERIES) + 1


SAMPLE_FAULTS: list[tuple[str, str]] = [("not a number", "abc"), ("NaN", "NaN"), ("infinite", "+Inf"),
                                        ("negative", "-3"), ("1e999", "1e999")]


@pytest.mark.parametrize(("fault", "value"), SAMPLE_FAULTS, ids=[f[0] for f in SAMPLE_FAULTS])
async def test_bad_sample_values_are_counted_not_errors(fleet: FaultProxy, fault: str, value: str) -> None:
    kinds: list[str] = []
    observer = _observer(fleet, kinds)
    fleet.set(Fault("body", body=vector([{**SAMPLE, "value": [1.0, value]}])))
    obs = await observer.observe()
    assert not obs.errors and obs.invalid_samples == len(CYCLE_QUERIES)
    assert set(kinds) == {"invalid_sample"}


async def test_one_wrong_shaped_query_fails_alone(fleet: FaultProxy) -> None:
    observer = _observer(fleet)
    await _wait_for_data(observer)
    fleet.set(Fault("body", body=b"[]", match="prompt_tokens_total"))
    with structlog.testing.capture_logs() as logs:
        obs = await observer.observe()
    assert obs.errors == {"prompt_tokens": "bad_response"} and obs.complete
    (line,) = [e for e in logs if e["log_level"] == "warning"]
    assert line["what"] == "queries" and line["failing"] == ["prompt_tokens"]
    assert "expected a JSON object" in line["errors"]["prompt_tokens"]
    with structlog.testing.capture_logs() as logs:
        await observer.observe()  # the same set failing: nothing new to say
        fleet.set(Fault("trickle", every=0.2, unless=WAITING_QUERY))
        obs = await observer.observe()  # all but one query fail: still one line, naming them
        fleet.set(None)
        await observer.observe()
    lines = [e for e in logs if e["log_level"] == "warning"]
    assert len(lines) == 1 and len(lines[0]["failing"]) == len(CYCLE_QUERIES) - 1 and "waiting" not in obs.errors
    assert [e["what"] for e in logs if e["event"] == "recovered"] == ["queries"]


async def test_fast_path_does_not_wait_behind_a_slow_cycle(fleet: FaultProxy) -> None:
    """Every cycle query trickles (the cycle takes its whole deadline); the fast path's own query, on its
    own connection, answers meanwhile."""
    observer = Observer(Config(prometheus=fleet.url, prometheus_timeout=3.0, fast_interval=0.3, rate_window="5s"))
    await _wait_for_data(observer)
    fleet.set(Fault("trickle", every=0.2, unless=WAITING_QUERY))
    cycle = asyncio.create_task(observer.observe())
    await asyncio.sleep(0.2)  # the cycle's 14 queries are in flight
    waiting = await observer.waiting()
    assert not cycle.done()
    assert waiting == {("llm", "m"): 2.0}
    obs = await cycle
    assert set(obs.errors.values()) == {"timeout"} and "waiting" not in obs.errors


# (case, which queries fail, steps: "F" a fast-path attempt, "C" a cycle, "(" a cycle begun and left in
# flight, ")" that cycle awaited; how many fast_path warning lines)
FAST_PATH_VOICE: list[tuple[str, Fault, str, int]] = [
    ("outage: more fast attempts than a cycle's worth before the cycle reports", Fault("status", status=503),
     "FFFFFFFFFFCFF", 0),
    ("fast query alone failing, no cycle since", Fault("status", status=503, match=WAITING_QUERY), "FFFFFFFFFF", 0),
    ("fast query alone failing across an answered cycle", Fault("status", status=503, match=WAITING_QUERY),
     "FCF", 1),
    ("a cycle begun before the failures does not count", Fault("status", status=503, match=WAITING_QUERY),
     "(F)F", 0),
    ("a success in between starts the count again", Fault("status", status=503, match=WAITING_QUERY),
     "FCsF", 0),
]


@pytest.mark.parametrize(("case", "proxy_fault", "steps", "lines"), FAST_PATH_VOICE,
                         ids=[r[0] for r in FAST_PATH_VOICE])
async def test_the_fast_path_speaks_only_of_its_own_problem(fleet: FaultProxy, case: str, proxy_fault: Fault,
                                                           steps: str, lines: int) -> None:
    """An outage is one line, the cycle's; the fast path warns only when its query keeps failing after a
    cycle begun since its failures started got answers. Counted in cycles, not attempts: on a loaded machine
    a cycle can outlast any number of fast attempts ("s": the fault lifted for one fast attempt)."""
    observer = _observer(fleet)
    await _wait_for_data(observer)
    fleet.set(proxy_fault)
    in_flight: asyncio.Task[Any] | None = None
    with structlog.testing.capture_logs() as logs:
        for step in steps:
            if step == "F":
                assert await observer.waiting() is None
            elif step == "s":
                fleet.set(None)
                assert await observer.waiting() is not None
                fleet.set(proxy_fault)
            elif step == "C":
                await observer.observe()
            elif step == "(":
                in_flight = asyncio.create_task(observer.observe())
                await asyncio.sleep(0)  # the batch has begun
            else:
                assert in_flight is not None
                await in_flight
    fast = [e for e in logs if e["event"] == "observation_problem" and e.get("what") == "fast_path"]
    assert len(fast) == lines, fast


async def test_the_cycle_does_not_wait_behind_slow_calibration_evidence(fleet: FaultProxy, tmp_path: Path) -> None:
    """The evidence's queries (the heaviest gpumix sends) run on their own task: a cycle started while they
    trickle completes at once; evidence that failed leaves nothing to learn from, and evidence that arrived
    is one calibration step, used by the next cycle only."""
    config = Config(prometheus=fleet.url, prometheus_timeout=1.0, rate_window="5s", calibration_interval=2.0)
    inventory = Inventory((ModelInfo("m", "llm", (VariantInfo(name="m-a40", model="m", namespace="llm"),)),))
    controller = Controller(config, StaticInventory(inventory), Observer(config), ProfileStore(str(tmp_path), None),
                            StateStore(None), Table())
    await _wait_for_data(controller.observer)
    fleet.set(Fault("trickle", every=0.2, match=":15s]"))  # the evidence's pod-age subquery
    evidence = asyncio.create_task(controller.gather_evidence())
    await asyncio.sleep(0.2)
    await controller.cycle()
    assert not evidence.done() and controller.cycles == 1
    await evidence
    assert controller.evidence is None  # one query timed out: no step on half the evidence
    fleet.set(None)
    await controller.gather_evidence()
    assert controller.evidence is not None
    await controller.cycle()
    assert controller.evidence is None  # taken by that cycle: the next one waits for a new window


# (fault on the evidence's pod-age subquery alone, the error kind it gets)
EVIDENCE_FAULTS: list[tuple[str, Fault, str]] = [
    ("trickled past the deadline", Fault("trickle", every=0.2, match=":15s]"), "timeout"),
    ("rejected as bad PromQL", Fault("status", status=400, match=":15s]",
                                     body=b'{"status":"error","errorType":"bad_data","error":"parse error"}'),
     "http_4xx"),
    ("503", Fault("status", status=503, match=":15s]"), "http_5xx"),
]


@pytest.mark.parametrize(("fault", "proxy_fault", "kind"), EVIDENCE_FAULTS, ids=[f[0] for f in EVIDENCE_FAULTS])
async def test_one_failing_evidence_query_is_named_not_an_outage(fleet: FaultProxy, fault: str, proxy_fault: Fault,
                                                                 kind: str) -> None:
    """The evidence asks one query at a time: one of them failing is that query's problem, logged under its
    name, not "prometheus down"; and its answers coming back say nothing about an outage the cycle saw."""
    config = Config(prometheus=fleet.url, prometheus_timeout=1.0, rate_window="5s", calibration_interval=2.0)
    inventory = Inventory((ModelInfo("m", "llm", (VariantInfo(name="m-a40", model="m", namespace="llm"),)),))
    controller = Controller(config, StaticInventory(inventory), Observer(config), ProfileStore(None, None),
                            StateStore(None), Table())
    await _wait_for_data(controller.observer)
    fleet.set(proxy_fault)
    with structlog.testing.capture_logs() as logs:
        await controller.gather_evidence()
        await controller.cycle()  # the cycle's queries do not touch the pod-age subquery
        fleet.set(None)
        await controller.gather_evidence()
    assert controller.evidence is not None
    problems = [e for e in logs if e["event"] == "observation_problem"
                and (e["what"] in ("prometheus", "queries") or str(e["what"]).startswith("query:"))]
    assert [(e["what"], e["state"]) for e in problems] == [("query:evidence_age", f"failed: {kind}")], problems
    assert [e["what"] for e in logs if e["event"] == "recovered"] == ["query:evidence_age"]
