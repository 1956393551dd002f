"""`gpumix webhook` as a subprocess on loopback, over real HTTPS with a certificate made by
deploy/webhook/certs.sh, sent AdmissionReviews the way the API server sends them (POST /mutate?timeout=…,
JSON, the CA from caBundle, the Service's name checked against the certificate)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimizer.perfmodel import Calibration
from optimizer.profile import SLO, derive_profile
from scaler.webhook import INPUT_TOKENS, LOAD, MODEL, OUTPUT_TOKENS, RECOMMENDED, TPOT
from tests.deploy.manifests import REPO
from tests.service.kube_api import FakeApiServer
from tests.webhook.helpers import (
    admission_review,
    apply_response,
    gpu_resources,
    measured_rows,
    validate_pod,
    verify_response,
    vllm_pod,
)

pytestmark = pytest.mark.integration

CERTS = REPO / "deploy" / "webhook" / "certs.sh"
A100_80 = ["A100-80GB/1g.10gb", "A100-80GB/1g.20gb", "A100-80GB/2g.20gb", "A100-80GB/3g.40gb",
           "A100-80GB/4g.40gb", "A100-80GB/7g.80gb", "A100-80GB"]
SHORT = {INPUT_TOKENS: "384", OUTPUT_TOKENS: "256"}


def make_certs(directory: Path) -> Path:
    env = {**os.environ, "EXTRA_SANS": "IP:127.0.0.1"}
    subprocess.run(["bash", str(CERTS), "--out", str(directory)], check=True, env=env, capture_output=True,
                   timeout=60)
    return directory


class Webhook:
    def __init__(self, args: list[str], tls: Path) -> None:
        self.tls = tls
        env = {**os.environ, "GPUMIX_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scaler.cli", "webhook", "--tls-cert", str(tls / "tls.crt"),
             "--tls-key", str(tls / "tls.key"), "--port", "0", "--metrics-port", "0", *args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_for(lambda e: e.get("event") == "listening", 30)
        self.port, self.metrics_port = listening["https_port"], listening["metrics_port"]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "raw", "text": line}
            self.lines.put(event)

    def wait_for(self, match: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.log:
                if match(e):
                    return e
            try:
                self.log.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"webhook exited {self.proc.returncode}: {self.log}") from None
        raise AssertionError(f"not seen within {timeout}s; log: {self.log}")

    def context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca or self.tls / "ca.crt"))

    def post(self, body: Any, ca: Path | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}/mutate?timeout=10s", data=data,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context(ca)) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def admit(self, pod: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        review = admission_review(pod, **kw)
        status, answer = self.post(review)
        assert status == 200, answer
        response = verify_response(review, answer)
        patched = apply_response(pod, response)
        validate_pod(patched)
        return response, patched

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def counter(self, outcome: str, dry_run: bool = False) -> int:
        _, text = self.get("/metrics")
        key = f'gpumix_webhook_decisions_total{{outcome="{outcome}",dry_run="{str(dry_run).lower()}"}} '
        (line,) = [ln for ln in text.splitlines() if ln.startswith(key)]
        return int(line.split()[-1])

    def admissions(self, uid: str) -> list[dict[str, Any]]:
        self.wait_for(lambda e: e.get("event") == "admission" and e.get("uid") == uid, 10)
        return [e for e in self.log if e.get("event") == "admission" and e.get("uid") == uid]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `gpumix profile` file whose raw rows were measured on a full A100-80GB by a stack reaching 75 % of
    the datasheet bandwidth (a known answer; see tests/webhook/helpers.py)."""
    directory = tmp_path_factory.mktemp("profiles")
    rows = measured_rows(Calibration(bandwidth_efficiency=0.75), "A100-80GB", 384, 256)
    profile = derive_profile(rows, SLO(tpot=0.05), model="llama2-7b", variant="llama2-7b-a100",
                             accelerator="A100-80GB", cost_per_hour=3.67)
    (directory / "llama2-7b-a100.json").write_text(json.dumps(profile.to_json()))
    return directory


@pytest.fixture(scope="module")
def webhook(tls: Path, profiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    acc = tmp_path_factory.mktemp("acc") / "accelerators.yaml"
    acc.write_text(json.dumps({"accelerators": A100_80}))
    hook = Webhook(["--accelerators", str(acc), "--profiles", str(profiles)], tls)
    yield hook
    hook.stop()


@pytest.mark.parametrize(("load", "pick"), [(8, "A100-80GB/1g.20gb"), (16, "A100-80GB/3g.40gb"),
                                            (64, "A100-80GB")])
def test_autofit_example_end_to_end(webhook: Webhook, load: int, pick: str) -> None:
    """AutoFit's own example (TPOT 50 ms via the container env, as in their pod), calibrated by the profile's
    measured rows, over HTTPS; the patched pod is a valid Pod asking for the slice."""
    before = webhook.counter("patched")
    pod = vllm_pod({MODEL: "llama2-7b", LOAD: str(load), **SHORT}, env={"TPOT": "50"})
    review_uid = f"autofit-{load}"
    _, patched = webhook.admit(pod, uid=review_uid)
    resource = "nvidia.com/gpu" if pick == "A100-80GB" else f"nvidia.com/mig-{pick.split('/')[1]}"
    assert gpu_resources(patched) == {"limits": {resource: "1"}, "requests": {resource: "1"}}
    assert patched["metadata"]["annotations"][RECOMMENDED] == pick
    (line,) = webhook.admissions(review_uid)
    assert line["outcome"] == "patched" and line["pick"] == pick and line["basis"] == "measured on A100-80GB"
    assert line["namespace"] == "llm" and line["pod"] == "llama2-7b-5d9c7b8f4-" and line["dry_run"] is False
    assert webhook.counter("patched") == before + 1


def test_pass_through_dry_run_and_malformed_are_logged_and_counted(webhook: Webhook) -> None:
    counts = {k: webhook.counter(*k) for k in (("skipped", False), ("patched", True), ("malformed", False))}
    plain = vllm_pod({})
    response, patched = webhook.admit(plain, uid="plain")
    assert response == {"uid": "plain", "allowed": True} and patched == plain
    response, _ = webhook.admit(vllm_pod({MODEL: "llama2-7b", LOAD: "16", TPOT: "50ms"}), operation="UPDATE",
                                uid="update")
    assert response == {"uid": "update", "allowed": True}
    real, real_pod = webhook.admit(vllm_pod({MODEL: "llama2-7b", LOAD: "16", TPOT: "50ms"}), uid="same")
    dry, dry_pod = webhook.admit(vllm_pod({MODEL: "llama2-7b", LOAD: "16", TPOT: "50ms"}), uid="same",
                                 dry_run=True)
    assert real == dry and real_pod == dry_pod
    bad = vllm_pod({MODEL: "llama2-7b", LOAD: "lots", TPOT: "0.05"})
    response, patched = webhook.admit(bad, uid="bad")
    assert response["allowed"] is True and "patch" not in response and patched == bad
    assert len(response["warnings"]) == 2
    assert webhook.counter("skipped") == counts[("skipped", False)] + 2
    assert webhook.counter("patched", True) == counts[("patched", True)] + 1
    assert webhook.counter("malformed") == counts[("malformed", False)] + 1
    (line,) = webhook.admissions("bad")
    assert line["outcome"] == "malformed" and line["level"] == "warning" and line["warnings"] == 2
    assert [e["dry_run"] for e in webhook.admissions("same")] == [False, True]


def test_what_is_not_an_admission_review_gets_400(webhook: Webhook) -> None:
    _, text = webhook.get("/metrics")
    before = int(next(ln for ln in text.splitlines() if ln.startswith("gpumix_webhook_bad_requests_total ")).split()[1])
    for body in (b"{not json", json.dumps({"kind": "Pod"}).encode(),
                 json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}).encode()):
        status, text = webhook.post(body)
        assert status == 400 and "gpumix webhook" in text
    _, metrics = webhook.get("/metrics")
    assert f"gpumix_webhook_bad_requests_total {before + 3}" in metrics


def test_tls_is_real(webhook: Webhook, tmp_path: Path) -> None:
    other = make_certs(tmp_path / "other")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        webhook.post(admission_review(vllm_pod({})), ca=other / "ca.crt")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{webhook.port}/mutate", data=b"{}", timeout=5)


def test_probes_and_offered_gauge(webhook: Webhook) -> None:
    assert webhook.get("/healthz")[0] == 200
    status, text = webhook.get("/readyz")
    assert status == 200 and "7 accelerators" in text
    _, metrics = webhook.get("/metrics")
    assert 'gpumix_webhook_offered{accelerator="A100-80GB/1g.20gb",resource="nvidia.com/mig-1g.20gb"} 1' in metrics


def test_rejection_mode(tls: Path, tmp_path: Path) -> None:
    acc = tmp_path / "acc.yaml"
    acc.write_text("accelerators: [L4, A100-80GB]\n")
    hook = Webhook(["--accelerators", str(acc), "--reject-malformed"], tls)
    try:
        response, _ = hook.admit(vllm_pod({MODEL: "llama2-7b", LOAD: "lots", TPOT: "50ms"}), uid="r")
        assert response["allowed"] is False and "gpumix.io/load" in response["status"]["message"]
        response, patched = hook.admit(vllm_pod({MODEL: "llama2-7b", LOAD: "4", TPOT: "100ms"}), uid="ok")
        assert response["allowed"] is True and patched["metadata"]["annotations"][RECOMMENDED] in ("L4", "A100-80GB")
        assert hook.counter("rejected") == 1
    finally:
        hook.stop()


def test_bad_static_list_stops_at_start_naming_the_entry(tls: Path, tmp_path: Path) -> None:
    acc = tmp_path / "acc.yaml"
    acc.write_text("accelerators: [L4, B300]\n")
    out = subprocess.run([sys.executable, "-m", "scaler.cli", "webhook", "--tls-cert", str(tls / "tls.crt"),
                          "--tls-key", str(tls / "tls.key"), "--accelerators", str(acc), "--port", "0",
                          "--metrics-port", "0"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and "accelerators[1]" in out.stderr and "B300" in out.stderr


def _node(name: str, product: str, allocatable: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product,
                                                  "nvidia.com/mig.strategy": "mixed"}},
            "status": {"allocatable": {"cpu": "64", **allocatable}}}


def test_kubernetes_nodes_are_the_offers(tls: Path) -> None:
    api = FakeApiServer({"nodes": [_node("a100-mig", "NVIDIA-A100-SXM4-80GB", {"nvidia.com/mig-3g.40gb": "2"})]})
    url = api.start()
    hook = Webhook(["--kubernetes", "--kube-api", url, "--refresh", "0.3"], tls)
    try:
        assert hook.get("/readyz")[0] == 200
        pod = vllm_pod({MODEL: "llama2-7b", LOAD: "4", TPOT: "50ms", **SHORT})
        _, patched = hook.admit(pod, uid="k1")
        assert gpu_resources(patched)["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
        # The only offer is an A100's 3g.40gb, which H100s also advertise: pinned to the product seen.
        assert patched["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        # A node with 1g.20gb slices joins: the next pod gets the smaller slice.
        api.apply("nodes", "ADDED", _node("a100-small", "NVIDIA-A100-SXM4-80GB", {"nvidia.com/mig-1g.20gb": "7"}))
        hook.wait_for(lambda e: e.get("event") == "offers" and any("1g.20gb" in a for a in e["accelerators"]), 15)
        _, patched = hook.admit(pod, uid="k2")
        assert gpu_resources(patched)["limits"] == {"nvidia.com/mig-1g.20gb": "1"}
        assert any(p.startswith("/api/v1/nodes") for p in api.requests)
    finally:
        hook.stop()
        api.stop()


def test_unreachable_api_is_not_ready_and_admits_unchanged(tls: Path) -> None:
    hook = Webhook(["--kubernetes", "--kube-api", "http://127.0.0.1:9", "--refresh", "30"], tls)
    try:
        assert hook.get("/readyz")[0] == 503
        pod = vllm_pod({MODEL: "llama2-7b", LOAD: "4", TPOT: "50ms"})
        response, patched = hook.admit(pod, uid="u")
        assert patched == pod and "no accelerator is offered" in response["warnings"][0]
        hook.wait_for(lambda e: e.get("event") == "observation_problem" and e.get("what") == "nodes", 5)
    finally:
        hook.stop()


def test_rotated_certificate_is_served_without_restart(tmp_path: Path) -> None:
    tls = make_certs(tmp_path / "tls")
    acc = tmp_path / "acc.yaml"
    acc.write_text("accelerators: [L4]\n")
    hook = Webhook(["--accelerators", str(acc), "--refresh", "0.3"], tls)
    try:
        old_ca = tmp_path / "old-ca.crt"
        shutil.copy(tls / "ca.crt", old_ca)
        assert hook.post(admission_review(vllm_pod({})), ca=old_ca)[0] == 200
        time.sleep(1.1)  # a coarse-mtime filesystem must see the rewrite as a change
        make_certs(tls)  # a new CA and serving pair in place, as certs.sh or cert-manager would leave them
        hook.wait_for(lambda e: e.get("event") == "tls_reloaded", 15)
        assert hook.post(admission_review(vllm_pod({})))[0] == 200  # the new CA verifies it
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            hook.post(admission_review(vllm_pod({})), ca=old_ca)
    finally:
        hook.stop()
