"""deploy/webhook validated offline like the rest of deploy/ (tests/deploy/manifests.py: the kustomize
subset, kubernetes-validate against the Kubernetes 1.33 OpenAPI schemas), and checked for what makes the
webhook safe and wired: the configuration, the Service, the Deployment's flags (parsed by gpumix's own
parser), RBAC, and both ways of getting a certificate."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler.commands import webhook as command
from scaler.webhook import CONTAINER, LOAD, MODEL
from tests.deploy.manifests import DEPLOY, _apply, kustomize_build, load_docs, validate_object

WEBHOOK = DEPLOY / "webhook"
Obj = dict[str, Any]


def _by_kind(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def _with_cert_manager() -> list[Obj]:
    return _apply(WEBHOOK, {"resources": ["../base"], "components": ["component", "cert-manager"]}, [])


@pytest.fixture(scope="module")
def example() -> dict[tuple[str, str], Obj]:
    objs = kustomize_build(WEBHOOK / "example")
    for o in objs:
        validate_object(o)
    return _by_kind(objs)


def test_webhook_configuration_is_safe_by_default(example: dict[tuple[str, str], Obj]) -> None:
    (hook,) = example[("MutatingWebhookConfiguration", "gpumix-webhook")]["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["failurePolicy"] == "Ignore"  # down or slow: pods pass unchanged
    assert hook["sideEffects"] == "None"  # so dry-run requests are sent too, and answered alike
    assert hook["timeoutSeconds"] <= 10
    assert hook["reinvocationPolicy"] == "Never"
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    ns = hook["namespaceSelector"]
    assert ns["matchLabels"] == {"gpumix.io/webhook": "enabled"}
    excluded = next(e for e in ns["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name")
    assert excluded["operator"] == "NotIn" and {"kube-system", "gpumix-system"} <= set(excluded["values"])
    # Never asked about its own pods (a webhook that must admit itself cannot start).
    own = example[("Deployment", "gpumix-webhook")]["spec"]["template"]["metadata"]["labels"]
    exprs = hook["objectSelector"]["matchExpressions"]
    assert any(e["operator"] == "NotIn" and own.get(e["key"]) in e["values"] for e in exprs)


def test_service_deployment_and_flags_agree(example: dict[tuple[str, str], Obj]) -> None:
    (hook,) = example[("MutatingWebhookConfiguration", "gpumix-webhook")]["webhooks"]
    target = hook["clientConfig"]["service"]
    svc = example[("Service", target["name"])]
    assert svc["metadata"]["namespace"] == target["namespace"] == "gpumix-system"
    port = next(p for p in svc["spec"]["ports"] if p["port"] == target["port"])
    dep = example[("Deployment", "gpumix-webhook")]
    assert dep["metadata"]["namespace"] == "gpumix-system"
    pod = dep["spec"]["template"]["spec"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert container["args"][0] == "webhook"
    args = parser.parse_args(container["args"][1:])  # every flag exists and parses
    assert ports[port["targetPort"]] == args.port and ports["http"] == args.metrics_port
    assert args.kubernetes and args.bind == "0.0.0.0"
    # The routes the configuration and the probes name exist on the apps that serve those ports.
    state = command.State(policy=command.Policy(), measured=command.MeasuredProfiles(None))
    admission, plain = command.make_apps(state)
    assert target["path"] in {r.resource.canonical for r in admission.router.routes()}
    plain_paths = {r.resource.canonical for r in plain.router.routes()}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        assert container[probe]["httpGet"]["path"] in plain_paths
    # The certificate files are where the Secret is mounted.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tls_volume = next(n for n, v in volumes.items() if "secret" in v)
    assert str(args.tls_cert).startswith(mounts[tls_volume] + "/") and str(args.tls_key).startswith(mounts[tls_volume])
    assert volumes[tls_volume]["secret"]["secretName"] == "gpumix-webhook-tls"
    assert str(args.profiles) == mounts["profiles"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    assert pod["serviceAccountName"] == "gpumix-webhook"
    pdb = example[("PodDisruptionBudget", "gpumix-webhook")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert dep["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_rbac_reads_nodes_only(example: dict[tuple[str, str], Obj]) -> None:
    role = example[("ClusterRole", "gpumix-webhook-nodes")]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert granted == {("", "nodes", "get"), ("", "nodes", "list")}
    binding = example[("ClusterRoleBinding", "gpumix-webhook-nodes")]
    assert binding["roleRef"]["name"] == "gpumix-webhook-nodes"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpumix-webhook", "namespace": "gpumix-system"}]
    assert ("ServiceAccount", "gpumix-webhook") in example


def test_annotation_names_in_the_docs_are_the_code_s() -> None:
    text = (WEBHOOK / "README.md").read_text()
    for key in (MODEL, LOAD, CONTAINER):
        assert key in text


# ------------------------------------------------------------------------------------------ certificates

# cert-manager's v1 API (cert-manager pkg/apis/certmanager/v1/types_certificate.go, CertificateSpec;
# types_issuer.go, IssuerConfig): secretName and issuerRef.name are required, a certificate needs a
# commonName, dnsNames or uris, issuerRef.kind is Issuer (same namespace) or ClusterIssuer.
CERTIFICATE_SPEC = {"subject", "commonName", "duration", "renewBefore", "dnsNames", "ipAddresses", "uris",
                    "emailAddresses", "secretName", "keystores", "issuerRef", "isCA", "usages", "privateKey",
                    "encodeUsagesInRequest", "revisionHistoryLimit", "secretTemplate", "literalSubject",
                    "nameConstraints", "otherNames", "renewBeforePercentage", "additionalOutputFormats"}
ISSUER_TYPES = {"acme", "ca", "vault", "selfSigned", "venafi"}
DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s))+$")


def _check_certificate(cert: Obj) -> None:
    spec = cert["spec"]
    assert set(spec) <= CERTIFICATE_SPEC, set(spec) - CERTIFICATE_SPEC
    assert spec["secretName"] and spec["issuerRef"]["name"]
    assert spec.get("commonName") or spec.get("dnsNames") or spec.get("uris")
    assert spec["issuerRef"].get("kind", "Issuer") in ("Issuer", "ClusterIssuer")
    for key in ("duration", "renewBefore"):
        if key in spec:
            assert DURATION.match(spec[key]), spec[key]
    pk = spec.get("privateKey", {})
    assert pk.get("rotationPolicy", "Never") in ("Never", "Always")
    assert pk.get("algorithm", "RSA") in ("RSA", "ECDSA", "Ed25519")


def test_cert_manager_component() -> None:
    objs = _with_cert_manager()
    by = _by_kind(objs)
    for o in objs:
        if not o["apiVersion"].startswith("cert-manager.io/"):
            validate_object(o)
    cert, issuer = by[("Certificate", "gpumix-webhook")], by[("Issuer", "gpumix-webhook-selfsigned")]
    _check_certificate(cert)
    assert set(issuer["spec"]) <= ISSUER_TYPES and len(issuer["spec"]) == 1
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}
    assert cert["metadata"]["namespace"] == issuer["metadata"]["namespace"] == "gpumix-system"
    mwc = by[("MutatingWebhookConfiguration", "gpumix-webhook")]
    inject = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert inject == f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    dep = by[("Deployment", "gpumix-webhook")]
    secret = next(v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert cert["spec"]["secretName"] == secret
    target = mwc["webhooks"][0]["clientConfig"]["service"]
    assert f"{target['name']}.{target['namespace']}.svc" in cert["spec"]["dnsNames"]
    assert mwc["webhooks"][0]["failurePolicy"] == "Ignore"  # the patch changed only the annotation


def test_certificate_check_is_not_vacuous() -> None:
    cert = next(o for o in load_docs(WEBHOOK / "cert-manager" / "issuer-certificate.yml") if o["kind"] == "Certificate")
    for broken in ({"secretName": ""}, {"issuerRef": {"name": "x", "kind": "Secret"}}, {"colour": "blue"},
                   {"duration": "90 days"}, {"dnsNames": [], "commonName": ""}):
        bad = {**cert, "spec": {**cert["spec"], **broken}}
        with pytest.raises((AssertionError, KeyError)):
            _check_certificate(bad)


def test_certs_script_names_what_the_api_server_dials(tmp_path: Path) -> None:
    out = subprocess.run(["bash", str(WEBHOOK / "certs.sh"), "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "EXTRA_SANS": ""})
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"
    sans = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"DNS:([^,\s]+)", sans))
    cert = next(o for o in load_docs(WEBHOOK / "cert-manager" / "issuer-certificate.yml") if o["kind"] == "Certificate")
    assert names == set(cert["spec"]["dnsNames"])  # both ways give the same names
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    usage = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-ext", "extendedKeyUsage"],
                           capture_output=True, text=True, check=True).stdout
    assert "TLS Web Server Authentication" in usage


def test_kubectl_kustomize_agrees_with_cert_manager_when_installed(tmp_path: Path) -> None:
    """The cert-manager composition is no Kustomization in the repository (cert-manager's CRs have no
    schema in tests/deploy), so build one here and compare with the real kustomize where kubectl exists."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    rel = os.path.relpath(WEBHOOK, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/../base"], "components": [f"{rel}/component", f"{rel}/cert-manager"]}))
    out = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ref = [o for o in yaml.safe_load_all(out.stdout) if o]
    key = lambda o: (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])  # noqa: E731
    assert sorted(ref, key=key) == sorted(_with_cert_manager(), key=key)
