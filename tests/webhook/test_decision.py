"""The webhook's decision, pure (scaler/webhook.py): AutoFit's example, malformed inputs, every safety rule,
and the offers read from Nodes. Every patched pod is patched with a JSONPatch library and validated against
the Pod schema the way the API server would take it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from optimizer.autofit import Scale, calibrate_rows
from optimizer.perfmodel import Calibration, accelerator, mig_slices
from scaler.webhook import (
    CONTAINER,
    INPUT_TOKENS,
    LOAD,
    MODEL,
    OUTPUT_TOKENS,
    RECOMMENDED,
    TPOT,
    TTFT,
    Offer,
    Outcome,
    Policy,
    ReviewError,
    WebhookInputError,
    catalog_product,
    decide,
    needs_selector,
    offers_from_nodes,
    parse_duration,
    review,
    scale_for,
    static_offers,
)
from tests.webhook.helpers import (
    admission_review,
    apply_response,
    gpu_resources,
    measured_rows,
    validate_pod,
    verify_response,
    vllm_pod,
)

A100_80 = [a.name for a in mig_slices("A100-80GB")] + ["A100-80GB"]
OFFERS = static_offers(A100_80, "test")
# AutoFit's lengths are not published; 384 in + 256 out (context 512) is where a 7B model's KV cache lets
# 8 sequences share a 1g.20gb slice at all (see BENCHMARKS.md, webhook section).
SHORT = {INPUT_TOKENS: "384", OUTPUT_TOKENS: "256"}
# A stack that reaches 75 % of the datasheet bandwidth, "measured" on a full A100-80GB.
FAST_STACK = Calibration(bandwidth_efficiency=0.75)


def _measured() -> dict[str, Scale]:
    scale, _ = calibrate_rows(measured_rows(FAST_STACK, "A100-80GB", 384, 256), "llama2-7b", "A100-80GB")
    return {"A100-80GB": scale}


def _admit(pod: dict[str, Any], offers: list[Offer] = OFFERS, measured: dict[str, Scale] | None = None,
           policy: Policy | None = None, **review_kw: Any) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Through the AdmissionReview wire format, answer verified as the API server does, patch applied."""
    req = admission_review(pod, **review_kw)
    answer, decision, _ = review(req, offers, (lambda _s: measured or {}), policy or Policy())
    response = verify_response(req, json.loads(json.dumps(answer)))
    patched = apply_response(pod, response)
    validate_pod(patched)
    return response, decision, patched


# ------------------------------------------------------------------------------------------ AutoFit's example

AUTOFIT = [  # (load, measured scale?, expected pick) — TPOT 50 ms, A100-80GB and its MIG slices offered
    (8, True, "A100-80GB/1g.20gb"),
    (16, True, "A100-80GB/3g.40gb"),
    (64, True, "A100-80GB"),
    # The datasheet model alone is more pessimistic about the small slice (c = 42.7 ms of weight reads per
    # step on 1g.20gb at 65 % bandwidth leaves room for 3 sequences): it disagrees at 8, agrees above.
    (8, False, "A100-80GB/3g.40gb"),
    (16, False, "A100-80GB/3g.40gb"),
    (64, False, "A100-80GB"),
]


@pytest.mark.parametrize(("load", "measured", "pick"), AUTOFIT)
def test_autofit_example(load: int, measured: bool, pick: str) -> None:
    pod = vllm_pod({MODEL: "llama2-7b", LOAD: str(load), **SHORT}, env={"TPOT": "50"})
    _, decision, patched = _admit(pod, measured=_measured() if measured else None)
    assert decision.outcome is Outcome.PATCHED and decision.meets_slo
    assert decision.pick == pick
    assert decision.basis == ("measured on A100-80GB" if measured else "analytical")
    resource = accelerator(pick).resource
    assert gpu_resources(patched) == {"limits": {resource: "1"}, "requests": {resource: "1"}}
    assert patched["metadata"]["annotations"][RECOMMENDED] == pick
    # nvidia.com/gpu and nvidia.com/mig-3g.40gb are both A100-80GB and H100 names: pinned by node label.
    assert patched["spec"]["nodeSelector"] == {"gpumix.io/accelerator": "A100-80GB"}
    assert patched["spec"]["containers"][0]["resources"]["limits"]["memory"] == "40Gi"  # the rest untouched


def test_more_load_never_gets_a_smaller_slice() -> None:
    costs = []
    for load in (1, 2, 4, 8, 16, 32, 64, 96):
        d = decide(vllm_pod({MODEL: "llama2-7b", LOAD: str(load), TPOT: "50ms", **SHORT}), OFFERS)
        costs.append(accelerator(d.pick).cost_per_hour)
    assert costs == sorted(costs)


def test_none_meets_the_slo_gets_the_largest_with_a_warning() -> None:
    response, decision, _ = _admit(vllm_pod({MODEL: "llama2-7b", LOAD: "500", TPOT: "50ms"}))
    assert decision.outcome is Outcome.PATCHED and decision.meets_slo is False
    assert decision.pick in ("A100-80GB", "A100-80GB/7g.80gb")
    assert any("no offered accelerator meets" in w for w in response["warnings"])


# ------------------------------------------------------------------------------------------ malformed inputs

MALFORMED = [  # (annotations, env, fragment the warning must carry)
    ({MODEL: "llama2-7b", TPOT: "50ms"}, {}, LOAD),
    ({MODEL: "llama2-7b", LOAD: "lots", TPOT: "50ms"}, {}, LOAD),
    ({MODEL: "llama2-7b", LOAD: "-3", TPOT: "50ms"}, {}, LOAD),
    ({MODEL: "llama2-7b", LOAD: "8"}, {}, TPOT),  # no TPOT anywhere
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "0.05"}, {}, "under 1 ms"),  # seconds written as a bare number
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "fast"}, {}, TPOT),
    ({MODEL: "llama2-7b", LOAD: "8"}, {"TPOT": "soon"}, "env TPOT"),
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms", TTFT: "-1s"}, {}, TTFT),
    ({MODEL: "gpt-9", LOAD: "8", TPOT: "50ms"}, {}, "no spec"),
    ({MODEL: "params=7,layers=32", LOAD: "8", TPOT: "50ms"}, {}, "missing hidden"),
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms", INPUT_TOKENS: "many"}, {}, INPUT_TOKENS),
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms", OUTPUT_TOKENS: "0"}, {}, OUTPUT_TOKENS),
    ({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms", CONTAINER: "sidecar"}, {}, CONTAINER),
]


@pytest.mark.parametrize(("annotations", "env", "fragment"), MALFORMED)
def test_malformed_is_admitted_unchanged_with_a_warning(annotations: dict[str, str], env: dict[str, str],
                                                        fragment: str) -> None:
    pod = vllm_pod(annotations, env=env)
    response, decision, patched = _admit(pod)
    assert response["allowed"] is True and "patch" not in response
    assert decision.outcome is Outcome.MALFORMED
    assert patched == pod
    assert any(fragment in w for w in response["warnings"]), response["warnings"]
    assert all(w.startswith("gpumix: ") for w in response["warnings"])


def test_every_problem_is_reported_at_once() -> None:
    response, _, _ = _admit(vllm_pod({MODEL: "gpt-9", LOAD: "lots", TPOT: "fast"}))
    assert len(response["warnings"]) == 3


@pytest.mark.parametrize("pod", [
    vllm_pod({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms"}, count="2"),  # tensor parallel: not ours to size
    vllm_pod({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms"}, gpu="example.com/fpga"),  # no GPU at all
    vllm_pod({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms"}, extra={"containers": [
        {"name": "a", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
        {"name": "b", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}),
], ids=["two-gpus", "no-gpu", "two-gpu-containers"])
def test_pods_gpumix_cannot_size_are_left_alone(pod: dict[str, Any]) -> None:
    response, decision, patched = _admit(pod)
    assert decision.outcome is Outcome.MALFORMED and patched == pod and response["warnings"]


def test_rejection_only_when_the_operator_opts_in() -> None:
    pod = vllm_pod({MODEL: "llama2-7b", LOAD: "lots", TPOT: "50ms"})
    response, decision, _ = _admit(pod, policy=Policy(reject_malformed=True))
    assert response["allowed"] is False and decision.outcome is Outcome.REJECTED
    assert response["status"]["code"] == 400 and LOAD in response["status"]["message"]
    # A good pod is still right-sized under the same policy; an un-annotated one still passes.
    ok, _, _ = _admit(vllm_pod({MODEL: "llama2-7b", LOAD: "8", TPOT: "50ms"}), policy=Policy(reject_malformed=True))
    assert ok["allowed"] is True and "patch" in ok
    plain, _, _ = _admit(vllm_pod({}), policy=Policy(reject_malformed=True))
    assert plain == {"uid": plain["uid"], "allowed": True}


# ------------------------------------------------------------------------------------------ safety rules

GOOD = {MODEL: "llama2-7b", LOAD: "16", TPOT: "50ms"}

PASS_THROUGH = [  # requests that must come back allowed, without patch and without warnings
    ("no opt-in annotation", vllm_pod({}), {}),
    ("other gpumix annotations but no model", vllm_pod({LOAD: "8", TPOT: "50ms"}), {}),
    ("UPDATE", vllm_pod(GOOD), {"operation": "UPDATE"}),
    ("DELETE", vllm_pod(GOOD), {"operation": "DELETE"}),
    ("not a pod", vllm_pod(GOOD), {"kind": ("apps", "v1", "Deployment")}),
]


@pytest.mark.parametrize(("case", "pod", "kw"), PASS_THROUGH, ids=[c[0] for c in PASS_THROUGH])
def test_admitted_as_it_came(case: str, pod: dict[str, Any], kw: dict[str, Any]) -> None:
    response, decision, patched = _admit(pod, **kw)
    assert response == {"uid": response["uid"], "allowed": True}, case
    assert decision.outcome is Outcome.SKIPPED and patched == pod


def test_dry_run_gets_the_same_answer() -> None:
    pod = vllm_pod(GOOD)
    real, _, patched = _admit(pod, uid="u-1")
    dry, _, dry_patched = _admit(pod, dry_run=True, uid="u-1")
    assert real == dry and patched == dry_patched


def test_annotation_beats_env_and_env_is_milliseconds() -> None:
    loose = decide(vllm_pod({MODEL: "llama2-7b", LOAD: "16", TPOT: "200ms"}, env={"TPOT": "20"}), OFFERS)
    by_env = decide(vllm_pod({MODEL: "llama2-7b", LOAD: "16"}, env={"TPOT": "200"}), OFFERS)
    assert loose.pick == by_env.pick  # 200 ms either way
    tight = decide(vllm_pod({MODEL: "llama2-7b", LOAD: "16"}, env={"TPOT": "20"}), OFFERS)
    assert accelerator(tight.pick).cost_per_hour > accelerator(loose.pick).cost_per_hour


def test_ttft_drops_accelerators_whose_prefill_is_too_slow() -> None:
    base = {MODEL: "llama2-7b", LOAD: "1", TPOT: "200ms", INPUT_TOKENS: "4000", OUTPUT_TOKENS: "64"}
    loose = decide(vllm_pod(base), OFFERS)
    tight = decide(vllm_pod({**base, TTFT: "250ms"}), OFFERS)
    assert loose.pick == "A100-80GB/1g.20gb"
    assert accelerator(tight.pick).sm_share > accelerator(loose.pick).sm_share  # prefill is compute-bound


def test_a_rate_becomes_concurrency_by_littles_law() -> None:
    # 2 req/s of 256 output tokens at ≤ 50 ms each: ≥ 12.8 s in flight → ~26 concurrent with headroom.
    d = decide(vllm_pod({MODEL: "llama2-7b", LOAD: "2rps", TPOT: "50ms", **SHORT}), OFFERS)
    assert d.outcome is Outcome.PATCHED and d.load == "2rps"
    assert 2 * 256 * 0.05 / 0.8 <= d.concurrency <= 2 * (256 * 0.05 + 1.0) / 0.8 + 1
    slower = decide(vllm_pod({MODEL: "llama2-7b", LOAD: "0.2req/s", TPOT: "50ms", **SHORT}), OFFERS)
    assert slower.concurrency < d.concurrency


def test_already_right_sized_is_unchanged() -> None:
    pick = decide(vllm_pod(GOOD), OFFERS)
    pod = vllm_pod(GOOD, gpu=pick.resource or "", extra={"nodeSelector": {"gpumix.io/accelerator": "A100-80GB"}})
    response, decision, patched = _admit(pod)
    assert decision.outcome is Outcome.UNCHANGED and "patch" not in response and patched == pod


def test_a_mig_request_is_replaced_too() -> None:
    pod = vllm_pod(GOOD, gpu="nvidia.com/mig-1g.10gb")
    _, decision, patched = _admit(pod)
    assert decision.previous == "nvidia.com/mig-1g.10gb"
    assert gpu_resources(patched)["limits"] == {decision.resource: "1"}


def test_limits_only_pod_gets_limits_only() -> None:
    """A pod template is not defaulted (only Pods are); a raw object with limits alone stays that way."""
    pod = vllm_pod(GOOD)
    del pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
    _, decision, patched = _admit(pod)
    assert gpu_resources(patched) == {"limits": {decision.resource: "1"}, "requests": {}}


def test_the_named_container_is_the_one_sized() -> None:
    pod = vllm_pod({**GOOD, CONTAINER: "vllm"}, extra={"initContainers": [
        {"name": "fetch", "image": "busybox", "command": ["true"]}]})
    pod["spec"]["containers"].insert(0, {"name": "proxy", "image": "envoy", "resources": {"limits": {"cpu": "1"}}})
    _, decision, patched = _admit(pod)
    assert decision.outcome is Outcome.PATCHED
    assert gpu_resources(patched, 1)["limits"] == {decision.resource: "1"}
    assert patched["spec"]["containers"][0] == pod["spec"]["containers"][0]


def test_a_pod_pinned_to_a_product_keeps_its_pin() -> None:
    product = "nvidia.com/gpu.product"
    offers = [Offer("A100-80GB/3g.40gb", "nvidia.com/mig-3g.40gb", {product: ("NVIDIA-A100-SXM4-80GB",)}, 4),
              Offer("H100-80GB/3g.40gb", "nvidia.com/mig-3g.40gb", {product: ("NVIDIA-H100-80GB-HBM3",)}, 4)]
    free = decide(vllm_pod(GOOD), offers)
    assert free.pick == "A100-80GB/3g.40gb"  # cheaper
    pinned = vllm_pod(GOOD, extra={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}})
    _, decision, patched = _admit(pinned, offers)
    assert decision.pick == "H100-80GB/3g.40gb"
    assert patched["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    excluded = vllm_pod(GOOD, extra={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}})
    response, decision, _ = _admit(excluded, offers)
    assert decision.outcome is Outcome.NO_FIT and "patch" not in response and response["warnings"]


def test_several_product_names_become_a_node_affinity_anded_into_existing_terms() -> None:
    offers = [Offer("A100-80GB", "nvidia.com/gpu", {"nvidia.com/gpu.product": ("NVIDIA-A100-80GB-PCIe",
                                                                               "NVIDIA-A100-SXM4-80GB")}, 8)]
    _, _, patched = _admit(vllm_pod(GOOD), offers)
    terms = patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                            "values": ["NVIDIA-A100-80GB-PCIe", "NVIDIA-A100-SXM4-80GB"]}]}]
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    own = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [zone]}, {"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}
    _, _, patched = _admit(vllm_pod(GOOD, extra=own), offers)
    terms = patched["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert len(terms) == 2 and all(t["matchExpressions"][-1]["key"] == "nvidia.com/gpu.product" for t in terms)
    assert terms[0]["matchExpressions"][0] == zone and "matchFields" in terms[1]


def test_a_model_that_fits_nowhere_is_admitted_unchanged() -> None:
    response, decision, patched = _admit(vllm_pod({MODEL: "llama2-70b", LOAD: "8", TPOT: "50ms"}))
    assert decision.outcome is Outcome.NO_FIT and patched["spec"] == vllm_pod(GOOD)["spec"]
    assert "fits in the memory of none" in response["warnings"][0]
    nothing, decision, _ = _admit(vllm_pod(GOOD), offers=[])
    assert decision.outcome is Outcome.NO_FIT and "no accelerator is offered" in nothing["warnings"][0]


def test_only_offered_accelerators_are_picked() -> None:
    few = static_offers(["L4", "A100-80GB/3g.40gb"], "t")
    for load in (1, 8, 64, 500):
        d = decide(vllm_pod({MODEL: "llama2-7b", LOAD: str(load), TPOT: "50ms"}), few)
        assert d.pick in ("L4", "A100-80GB/3g.40gb")


def test_custom_model_parameters() -> None:
    spec = "name=mistral-7b,params=7.24,layers=32,hidden=4096,kv_heads=8,head_dim=128"
    d = decide(vllm_pod({MODEL: spec, LOAD: "16", TPOT: "50ms"}), OFFERS)
    assert d.outcome is Outcome.PATCHED and d.model == "mistral-7b"


def test_measured_scale_precedence() -> None:
    own, other, far = Scale("A100-80GB/3g.40gb", 2.0), Scale("A100-80GB", 3.0), Scale("L4", 4.0)
    s = accelerator("A100-80GB/3g.40gb")
    assert scale_for(s, {"A100-80GB/3g.40gb": own, "A100-80GB": other, "L4": far}) is own
    assert scale_for(s, {"A100-80GB": other, "L4": far}) is other  # same GPU beats another GPU
    assert scale_for(s, {"L4": far}) is far  # any measurement beats none
    assert scale_for(s, {}).reference == ""


def test_patch_is_valid_base64_jsonpatch_with_escaped_pointers() -> None:
    req = admission_review(vllm_pod(GOOD))
    answer, _, _ = review(req, OFFERS)
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert {"op": "remove", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu"} in ops
    assert all(o["op"] in ("add", "remove", "replace") for o in ops)


@pytest.mark.parametrize("body", [
    None, [], {"kind": "Pod"}, {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}},
])
def test_unanswerable_bodies_raise(body: Any) -> None:
    with pytest.raises(ReviewError):
        review(body, OFFERS)


def test_durations() -> None:
    assert parse_duration("50ms", "x") == pytest.approx(0.05)
    assert parse_duration("0.05s", "x") == pytest.approx(0.05)
    assert parse_duration("30", "x") == pytest.approx(0.03)  # AutoFit's env TPOT=30
    with pytest.raises(ValueError, match="under 1 ms"):
        parse_duration("0.5", "x")


# ------------------------------------------------------------------------------------------ offers


PRODUCTS = [  # GPU feature discovery's nvidia.com/gpu.product → catalog
    ("NVIDIA-A100-SXM4-80GB", "A100-80GB"), ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
    ("NVIDIA-A100-SXM4-40GB", "A100-40GB"), ("A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA-H100-80GB-HBM3", "H100-80GB"), ("NVIDIA-H100-NVL", None), ("NVIDIA-H100-PCIe", None),
    ("Tesla-V100-SXM2-32GB", "V100"), ("Tesla-V100-PCIE-16GB", "V100-16GB"), ("Tesla-T4", "T4"),
    ("NVIDIA-A10G", "A10G"), ("NVIDIA-A10", "A10"), ("NVIDIA-L4", "L4"), ("NVIDIA-L40S", "L40S"),
    ("NVIDIA-L20", "L20"), ("NVIDIA-A40", "A40"), ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB/1g.5gb"),
    ("NVIDIA-A100-SXM4-80GB-MIG-3g.40gb-SHARED", None), ("NVIDIA-L4-SHARED", None), ("NVIDIA-B200", None),
    ("NVIDIA-A100-SXM4-40GB-MIG-9g.99gb", None),
]


@pytest.mark.parametrize(("product", "name"), PRODUCTS)
def test_catalog_product(product: str, name: str | None) -> None:
    assert catalog_product(product) == name


def _node(name: str, labels: dict[str, str], allocatable: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", **allocatable}}}


def test_offers_from_nodes() -> None:
    nodes = [
        # mig-strategy mixed (GFD labels the parent GPU; slices are their own resources)
        _node("mixed", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.strategy": "mixed"},
              {"nvidia.com/mig-1g.10gb": "7", "nvidia.com/mig-3g.40gb": "2", "nvidia.com/mig-1g.5gb": "1"}),
        # mig-strategy single: every slice is nvidia.com/gpu, the product label names the profile
        _node("single", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
                         "nvidia.com/mig.strategy": "single"}, {"nvidia.com/gpu": "56"}),
        _node("full-sxm", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, {"nvidia.com/gpu": "8"}),
        _node("full-pcie", {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe"}, {"nvidia.com/gpu": "2"}),
        _node("ours", {"gpumix.io/accelerator": "L4", "nvidia.com/gpu.product": "NVIDIA-L4"}, {"nvidia.com/gpu": "4"}),
        _node("unknown", {"nvidia.com/gpu.product": "NVIDIA-B200"}, {"nvidia.com/gpu": "8"}),
        _node("cpu", {}, {}),
        _node("drained", {"nvidia.com/gpu.product": "NVIDIA-L4"}, {"nvidia.com/gpu": "0"}),
        {**_node("cordoned", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, {"nvidia.com/gpu": "8"}),
         "spec": {"unschedulable": True}},
    ]
    offers, notes = offers_from_nodes(nodes)
    by = {(o.accelerator, o.resource): o for o in offers}
    assert set(by) == {("A100-80GB/1g.10gb", "nvidia.com/mig-1g.10gb"),
                       ("A100-80GB/3g.40gb", "nvidia.com/mig-3g.40gb"), ("A100-40GB/1g.5gb", "nvidia.com/gpu"),
                       ("A100-80GB", "nvidia.com/gpu"), ("L4", "nvidia.com/gpu")}
    assert by[("A100-80GB", "nvidia.com/gpu")].allocatable == 10
    assert by[("A100-80GB", "nvidia.com/gpu")].selector == {
        "nvidia.com/gpu.product": ("NVIDIA-A100-80GB-PCIe", "NVIDIA-A100-SXM4-80GB")}
    assert by[("A100-40GB/1g.5gb", "nvidia.com/gpu")].selector == {
        "nvidia.com/gpu.product": ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",)}
    assert by[("L4", "nvidia.com/gpu")].selector == {"gpumix.io/accelerator": ("L4",)}
    assert by[("A100-80GB/3g.40gb", "nvidia.com/mig-3g.40gb")].selector  # H100 has 3g.40gb too
    assert len(notes) == 2  # the B200, and a 1g.5gb slice an A100-80GB does not have
    assert any("NVIDIA-B200" in n for n in notes) and any("1g.5gb" in n for n in notes)


def test_selector_rule_follows_the_catalog() -> None:
    assert needs_selector("nvidia.com/gpu")
    assert needs_selector("nvidia.com/mig-1g.20gb")  # A100-80GB and H100-80GB
    assert not needs_selector("nvidia.com/mig-1g.5gb")  # only the A100-40GB has it
    (only,) = static_offers(["A100-40GB/1g.5gb"], "t")
    assert only.selector == {}
    _, d, patched = _admit(vllm_pod({MODEL: "llama2-7b", LOAD: "1", TPOT: "200ms"}),
                           static_offers(["A100-40GB/1g.5gb", "A100-40GB/3g.20gb"], "t"))
    assert "nodeSelector" not in patched["spec"] or d.resource != "nvidia.com/mig-1g.5gb"


@pytest.mark.parametrize(("entries", "fragment"), [
    ([], "non-empty"), (["B300"], "not in the catalog"), ([{"accelerator": "L4", "resource": "cpu"}], "resource"),
    ([{"accelerator": "L4", "nodeSelector": "x"}], "nodeSelector"), ([{"accelerator": "L4", "colour": 1}], "unknown"),
    ([{"accelerator": "L4", "count": -1}], "count"), ([{"name": "L4"}], "accelerator"),
])
def test_static_offers_errors_name_the_entry(entries: Any, fragment: str) -> None:
    with pytest.raises(WebhookInputError, match=fragment):
        static_offers(entries, "acc.yaml")


def test_static_offers_forms() -> None:
    offers = static_offers({"accelerators": [
        "A100", {"accelerator": "A100-80GB/1g.20gb", "nodeSelector": {"nvidia.com/gpu.product": ["a", "b"]}},
        {"accelerator": "L4", "count": 3}]}, "t")
    by = {o.accelerator: o for o in offers}
    assert by["A100-80GB"].selector == {"gpumix.io/accelerator": ("A100-80GB",)}
    assert by["A100-80GB/1g.20gb"].selector == {"nvidia.com/gpu.product": ("a", "b")}
    assert by["L4"].allocatable == 3
