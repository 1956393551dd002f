"""AdmissionReview requests as the API server builds them, and the checks it makes on the answer.

- The request: k8s.io/apiserver pkg/admission/plugin/webhook/request/admissionreview.go,
  CreateV1AdmissionReview — uid, kind/resource and requestKind/requestResource, name (empty for a pod
  named by generateName, as a ReplicaSet's are), namespace, operation, userInfo, object, oldObject (null on
  CREATE), dryRun, options (CreateOptions).
- The object is already defaulted when admission sees it: k8s.io/kubernetes pkg/apis/core/v1/defaults.go,
  SetDefaults_Pod copies limits into requests that are not set, so a GPU limit arrives as both.
- The answer: admissionreview.go, VerifyAdmissionResponse — apiVersion/kind admission.k8s.io/v1
  AdmissionReview, response.uid equal to the request's, patch and patchType together; the mutating
  dispatcher (mutating/dispatcher.go) decodes the patch as RFC 6902 JSONPatch and applies it to the object.
- The patched pod must pass the Pod schema (kubernetes-validate, as tests/deploy does) and the API server's
  rule for extended resources (pkg/apis/core/validation/validation.go, ValidateResourceRequirements): a
  request of a resource that cannot be overcommitted must equal its limit, and needs one.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import jsonpatch
import kubernetes_validate

from tests.deploy.manifests import KUBERNETES_VERSION

Obj = dict[str, Any]


def vllm_pod(annotations: dict[str, str] | None = None, *, gpu: str = "nvidia.com/gpu", count: str = "1",
             env: dict[str, str] | None = None, namespace: str = "llm", extra: Obj | None = None) -> Obj:
    """A vLLM pod as a ReplicaSet creates it (generateName, owner), defaulted the way the API server does
    before admission."""
    container: Obj = {
        "name": "vllm", "image": "vllm/vllm-openai:v0.6.3",
        "args": ["--model", "meta-llama/Llama-2-7b-hf", "--port", "8000"],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "resources": {"limits": {gpu: count, "memory": "40Gi"}, "requests": {"cpu": "4"}},
    }
    pod: Obj = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "llama2-7b-5d9c7b8f4-", "namespace": namespace,
            "labels": {"app": "llama2-7b", "pod-template-hash": "5d9c7b8f4"},
            "annotations": dict(annotations or {}),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama2-7b-5d9c7b8f4",
                                 "uid": "0b7a5e0e-1111-4c5e-9d3b-6a9b8f1c2d3e", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {"containers": [container]},
    }
    if extra:
        pod["spec"].update(copy.deepcopy(extra))
    return api_server_defaults(pod)


def api_server_defaults(pod: Obj) -> Obj:
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    for c in spec["containers"]:
        res = c.setdefault("resources", {})
        if "limits" in res:
            requests = res.setdefault("requests", {})
            for key, value in res["limits"].items():
                requests.setdefault(key, value)
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    return pod


def admission_review(pod: Obj | None, *, operation: str = "CREATE", dry_run: bool = False,
                     kind: tuple[str, str, str] = ("", "v1", "Pod"), uid: str | None = None) -> Obj:
    group, version, k = kind
    resource = {"group": group, "version": version, "resource": k.lower() + "s"}
    gvk = {"group": group, "version": version, "kind": k}
    namespace = (pod or {}).get("metadata", {}).get("namespace", "llm")
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": gvk, "resource": resource, "requestKind": gvk, "requestResource": resource,
            "name": (pod or {}).get("metadata", {}).get("name", ""), "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "5d3c1f0e-2222-4b1a-8c7d-1e2f3a4b5c6d",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": pod, "oldObject": None, "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"} if operation == "CREATE" else None,
        },
    }


def verify_response(review: Obj, answer: Obj) -> Obj:
    """What VerifyAdmissionResponse checks, raising AssertionError where it would reject the answer."""
    assert answer.get("apiVersion") == "admission.k8s.io/v1" and answer.get("kind") == "AdmissionReview", answer
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"], "response.uid must equal request.uid"
    assert ("patch" in response) == ("patchType" in response), "patch and patchType come together"
    if "patchType" in response:
        assert response["patchType"] == "JSONPatch"
    assert isinstance(response["allowed"], bool)
    for w in response.get("warnings", []):
        assert isinstance(w, str) and len(w) <= 256, w
    return response  # type: ignore[no-any-return]


def apply_response(pod: Obj, response: Obj) -> Obj:
    if "patch" not in response:
        return copy.deepcopy(pod)
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, ops)  # type: ignore[no-any-return]


def validate_pod(pod: Obj) -> None:
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    for c in pod["spec"]["containers"]:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for key, value in requests.items():
            if key.startswith("nvidia.com/"):
                assert key in limits, f"{key}: Limit must be set for non overcommitable resources"
                assert str(limits[key]) == str(value), f"{key}: request must be equal to limit"


def gpu_resources(pod: Obj, container: int = 0) -> dict[str, dict[str, str]]:
    res = pod["spec"]["containers"][container].get("resources") or {}
    return {section: {k: str(v) for k, v in (res.get(section) or {}).items() if k.startswith("nvidia.com/")}
            for section in ("limits", "requests")}


def measured_rows(truth: Any, reference: str, input_tokens: int, output_tokens: int,
                  batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32), model: str = "llama2-7b") -> list[Any]:
    """Benchmark rows of closed-loop points on `reference` as a stack behaving like `truth` (a perfmodel
    Calibration) would measure them: a known answer for the calibration to recover."""
    from optimizer.perfmodel import perf_model
    from optimizer.profile import BenchmarkRow

    pm = perf_model(model, reference, truth)
    context = input_tokens + output_tokens / 2
    rows = []
    for b in batches:
        tpot = pm.tpot(b, context)
        ttft = pm.prefill_time(input_tokens)
        e2e = ttft + output_tokens * tpot
        rate = b / e2e
        for metric, mean in (("TPUT", rate), ("E2E", e2e), ("TPOT", tpot), ("TTFT", ttft),
                             ("TT", rate * output_tokens)):
            rows.append(BenchmarkRow(input_tokens, output_tokens, round(rate, 6), metric, mean, mean, mean, mean))
    return rows
