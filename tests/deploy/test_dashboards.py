"""Every panel query and template variable of the Grafana dashboards, run against a real Prometheus that
scrapes the simulated vLLM fleet (sim/realtime.py: vLLM, DCGM and kube-state-metrics series) and a real
`gpumix serve` planning that fleet. A query that errors, or returns nothing, fails the test: a dashboard
panel that is empty on a healthy system is a broken panel."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.fleet import FLEETS_DIR, load_fleet
from sim.realtime import RealtimeFleet, ServerThread
from sim.services import PrometheusServer, free_port, start_prometheus
from tests.deploy.manifests import REPO

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RATE_WINDOW = "10s"  # what $__rate_interval becomes: several 1 s scrapes


def _get(prom: PrometheusServer, path: str, **params: str) -> Any:
    url = f"{prom.url}{path}?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:  # a PromQL error comes back as 400 with a message
        return json.load(exc)


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / 0.5) + 2):
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@dataclasses.dataclass
class Stack:
    prometheus: PrometheusServer
    model: str
    namespace: str
    variants: list[str]
    serve_log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    spec = load_fleet()
    # Two variants are enough to show a mix; short cold starts so pods serve within the test.
    spec = dataclasses.replace(spec, variants=tuple(
        dataclasses.replace(v, cold_start_s=0.3, initial_replicas=1 if i < 2 else 0)
        for i, v in enumerate(spec.variants[:3])))
    variants = [v.name for v in spec.variants]
    inventory = {"models": [{"name": spec.model, "namespace": spec.namespace, "variants": [
        {"name": v.name, "accelerator": v.accelerator, "max_replicas": 4} for v in spec.variants]}]}
    (tmp / "inventory.yaml").write_text(json.dumps(inventory))
    profiles = tmp / "profiles"
    profiles.mkdir()
    for v in spec.variants[:2]:  # the third variant has no profile: its status panel series is "missing"
        shutil.copy(FLEETS_DIR / "profiles" / f"{v.name}.json", profiles)
    fleet = RealtimeFleet(spec, seed=7)
    stop = threading.Event()
    with ServerThread(fleet) as sim:
        grpc_port, http_port = free_port(), free_port()
        (tmp / "prom").mkdir()
        prometheus = start_prometheus(tmp / "prom", [sim.target, f"127.0.0.1:{http_port}"])
        log = tmp / "serve.log"
        env = {**os.environ, "GPUMIX_LOG_FORMAT": "json", "GPUMIX_RATE_WINDOW": "5s", "GPUMIX_MAX_SAMPLE_AGE": "10"}
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/gpumix"), "serve", "--prometheus", prometheus.url,
             "--inventory", str(tmp / "inventory.yaml"), "--profiles", str(profiles),
             "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--interval", "1"],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO)

        def load() -> None:
            # A steady mix of short and long requests, bounded in count and time.
            sizes = [(200, 20), (900, 40), (60, 80), (1500, 10)]
            deadline = time.monotonic() + 120
            for i in range(3000):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                fleet.submit(*sizes[i % len(sizes)])
                time.sleep(0.05)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            yield Stack(prometheus, spec.model, spec.namespace, variants, log)
        finally:
            stop.set()
            loader.join(timeout=5)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            prometheus.stop()


def _substitute(expr: str, stack: Stack, variables: dict[str, str]) -> str:
    values = {
        "model": stack.model,
        "namespace": stack.namespace,
        # Grafana's multi-value form; Deployment names need no regex escaping (and PromQL strings reject \-).
        "variant": "(" + "|".join(stack.variants) + ")",
        "__rate_interval": RATE_WINDOW,
        "__interval": "1s",
        **variables,
    }
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def _panel_queries() -> list[tuple[str, str, str, dict[str, str]]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        textboxes = {v["name"]: v["query"] for v in dash["templating"]["list"] if v["type"] == "textbox"}
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.stem}: {panel['title']} [{t['refId']}]", t["expr"], path.stem, textboxes))
    return out


def _variable_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for v in json.loads(path.read_text())["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{path.stem}: ${v['name']}", v["query"]["query"]))
    return out


def test_dashboards_have_the_required_panels() -> None:
    exprs = " ".join(e for _, e, _, _ in _panel_queries())
    for needle in ("gpumix_demand_rps", "gpumix_demand_bucket_rps", "gpumix_desired_replicas",
                   "gpumix_current_replicas", "gpumix_plan_cost_per_hour", "gpumix_plan_coverage",
                   "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:time_to_first_token_seconds",
                   "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
                   'finished_reason!="abort"', "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                   "gpumix_solve_seconds", "gpumix_calibration_factor", "gpumix_headroom_utilization",
                   "gpumix_data_age_seconds", "gpumix_observation_errors_total", "label_replace"):
        assert needle in exprs, needle


def test_every_panel_query_returns_data(stack: Stack) -> None:
    prom = stack.prometheus
    # gpumix has planned at least once and its plan has been scraped.
    _wait(lambda: _get(prom, "/api/v1/query", query="gpumix_desired_replicas")["data"]["result"], 60,
          "gpumix_desired_replicas in Prometheus (see serve log " + str(stack.serve_log) + ")")
    pending = {name: (expr, tb) for name, expr, _, tb in _panel_queries()}
    failures: dict[str, str] = {}
    deadline = time.monotonic() + 60
    for _ in range(200):
        for name, (expr, textboxes) in list(pending.items()):
            body = _get(prom, "/api/v1/query", query=_substitute(expr, stack, textboxes))
            if body.get("status") != "success":
                failures[name] = f"error: {body.get('error')}"  # a PromQL error never heals: fail at once
                pending.pop(name)
            elif body["data"]["result"]:
                pending.pop(name)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    failures.update({name: f"no data: {_substitute(expr, stack, tb)}" for name, (expr, tb) in pending.items()})
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


def test_every_template_variable_has_values(stack: Stack) -> None:
    prom = stack.prometheus
    _wait(lambda: _get(prom, "/api/v1/query", query="gpumix_desired_replicas")["data"]["result"], 60,
          "gpumix metrics")
    for name, query in _variable_queries():
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query)
        assert m, f"{name}: unsupported variable query {query!r}"
        selector, label = m.group(1), m.group(2)
        selector = _substitute(selector or "", stack, {})
        body = _get(prom, f"/api/v1/label/{label}/values", **{"match[]": selector})
        assert body["status"] == "success", (name, body)
        assert body["data"], f"{name}: no values for {query!r} ({selector})"


def test_gpu_utilisation_is_attributed_to_variants(stack: Stack) -> None:
    """DCGM has no variant label; the dashboard's label_replace must recover exactly the fleet's variants."""
    (expr,) = [e for n, e, _, _ in _panel_queries() if "DCGM_FI_DEV_GPU_UTIL" in e]
    query = _substitute(expr, stack, {})
    result = _wait(lambda: _get(stack.prometheus, "/api/v1/query", query=query)["data"]["result"], 60,
                   "GPU utilisation by variant")
    running = {r["metric"]["variant"] for r in result}
    assert running and running <= set(stack.variants), running
    for r in result:
        assert 0.0 <= float(r["value"][1]) <= 100.0


def test_mig_slices_have_gpu_utilisation(tmp_path: Path) -> None:
    """DCGM reports no DCGM_FI_DEV_GPU_UTIL for a MIG slice, only DCGM_FI_PROF_GR_ENGINE_ACTIVE: the GPU panel
    must still show the MIG variant (the simulator exports what dcgm-exporter does)."""
    import sys

    sys.path.insert(0, str(REPO / "grafana"))
    from build import GPU_UTIL_BY_VARIANT

    spec = load_fleet()
    base = spec.variants[0]
    mig = dataclasses.replace(base, name=f"{spec.model}-a100-3g", accelerator="A100-40GB/3g.20gb",
                              cold_start_s=0.1, initial_replicas=1)
    full = dataclasses.replace(base, cold_start_s=0.1, initial_replicas=1)
    fleet = RealtimeFleet(dataclasses.replace(spec, variants=(full, mig)), seed=3)
    with ServerThread(fleet) as sim:
        prometheus = start_prometheus(tmp_path, [sim.target])
        try:
            stack = Stack(prometheus, spec.model, spec.namespace, [full.name, mig.name], tmp_path / "none.log")
            query = _substitute(GPU_UTIL_BY_VARIANT.split(" and on ")[0], stack, {})
            result = _wait(lambda: [r for r in _get(prometheus, "/api/v1/query", query=query)["data"]["result"]
                                    if r["metric"].get("variant") == mig.name], 60, "MIG utilisation")
            assert 0.0 <= float(result[0]["value"][1]) <= 100.0
        finally:
            prometheus.stop()
