"""Every manifest under deploy/, every kustomization built, every rendered ScaledObject: validated offline
against the Kubernetes OpenAPI schemas (kubernetes-validate) and KEDA's CRD; alerts checked and unit-tested
with promtool; the examples pass `gpumix lint`."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scaler.inventory import load_inventory
from scaler.lint import has_errors, lint, load_documents
from scaler.render import RenderOptions, render_all, scaled_object
from tests.deploy.manifests import (
    DEPLOY,
    REPO,
    kustomization_dirs,
    kustomize_build,
    load_docs,
    manifest_files,
    validate_object,
    validate_scaled_object,
)

EXAMPLES = sorted(p.parent for p in DEPLOY.glob("examples/*/inventory.yaml"))


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_file_validates(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path}: no objects"
    for obj in docs:
        validate_object(obj)


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_builds_to_valid_objects(directory: Path) -> None:
    objs = kustomize_build(directory)
    kinds = [o["kind"] for o in objs]
    assert kinds
    for obj in objs:
        validate_object(obj)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/production"])
def test_service_stack_is_complete_and_consistent(overlay: str) -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in kustomize_build(DEPLOY / overlay)}
    for kind, name in [("Namespace", "gpumix-system"), ("ServiceAccount", "gpumix"), ("ClusterRole", "gpumix-reader"),
                       ("ClusterRoleBinding", "gpumix-reader"), ("Deployment", "gpumix"), ("Service", "gpumix"),
                       ("ConfigMap", "gpumix-config"), ("ServiceMonitor", "gpumix"), ("PodMonitor", "gpumix-vllm"),
                       ("PrometheusRule", "gpumix")]:
        assert (kind, name) in objs, f"{overlay}: {kind} {name} missing"
    for (kind, _), o in objs.items():
        if kind not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"].get("namespace") == "gpumix-system", f"{kind} {o['metadata']['name']}: namespace"
    dep = objs[("Deployment", "gpumix")]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 9090, "http": 8080}
    svc_ports = {p["name"]: p["port"] for p in objs[("Service", "gpumix")]["spec"]["ports"]}
    assert svc_ports == {"grpc": 9090, "http": 8080}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["grpc"]["port"] == 9090
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), "read-only root needs a writable /tmp"
    assert pod["serviceAccountName"] == "gpumix"
    # The config file the container is started with is in the ConfigMap, and its fields are gpumix's.
    from scaler import config as gpumix_config

    data = objs[("ConfigMap", "gpumix-config")]["data"]
    cfg = yaml.safe_load(data["config.yaml"])
    unknown = set(cfg) - set(gpumix_config.FIELDS)
    assert not unknown, f"config.yaml fields gpumix does not know: {unknown}"
    load_inventory_text = yaml.safe_load(data["inventory.yaml"])
    from scaler.inventory import parse_inventory

    parse_inventory(load_inventory_text, "inventory.yaml")
    if overlay == "overlays/production":
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["GPUMIX_REDIS"].startswith("redis://gpumix-redis:")
        assert ("Service", "gpumix-redis") in objs


def test_rbac_is_read_only_on_exactly_what_kube_watches() -> None:
    (role,) = [o for o in load_docs(DEPLOY / "base" / "rbac.yaml") if o["kind"] == "ClusterRole"]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("apps", "deployments"), ("keda.sh", "scaledobjects"),
                       ("autoscaling", "horizontalpodautoscalers"), ("", "nodes")}
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["get", "list", "watch"]


def test_podmonitor_copies_model_and_variant_labels() -> None:
    (pm,) = load_docs(DEPLOY / "base" / "podmonitor-vllm.yaml")
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    # Prometheus' Kubernetes SD turns pod label gpumix.io/variant into this meta label.
    assert relabel["variant"] == ["__meta_kubernetes_pod_label_gpumix_io_variant"]
    assert relabel["model"] == ["__meta_kubernetes_pod_label_gpumix_io_model"]
    from scaler import config as gpumix_config

    cfg = yaml.safe_load((DEPLOY / "base" / "config.yaml").read_text())
    assert cfg["variant_label"] == "variant" == gpumix_config.Config().variant_label


def test_validation_rejects_what_the_api_server_would() -> None:
    """The validators are not vacuous: known-bad objects fail."""
    (dep,) = load_docs(DEPLOY / "examples" / "deepseek-coder-7b" / "deployment-v100.yaml")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exekk"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(bad)
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "ten minutes"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(bad)
    inv = load_inventory(DEPLOY / "examples" / "deepseek-coder-7b" / "inventory.yaml")
    so = scaled_object(inv.models[0], inv.models[0].variants[0])
    for mutate in (
        lambda o: o["spec"]["triggers"][0].pop("type"),
        lambda o: o["spec"].update(minReplicaCount=-1),
        lambda o: o["spec"].update(fallback={"failureThreshold": 3, "replicas": 1, "behavior": "sometimes"}),
        lambda o: o["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"].update(
            tolerance=0.05),  # a float is not a quantity: must be "0.05"
        lambda o: o["spec"]["triggers"][0]["metadata"].update(model=7),
    ):
        bad = copy.deepcopy(so)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_scaled_object(bad)
    bad = copy.deepcopy(so)
    bad["spec"]["minReplicaCount"] = 9
    bad["spec"]["maxReplicaCount"] = 8
    with pytest.raises(AssertionError, match="minReplicaCount"):
        validate_scaled_object(bad)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_scaledobjects_are_what_render_writes(example: Path) -> None:
    inv = load_inventory(example / "inventory.yaml")
    push = "--push" in (example / "inventory.yaml").read_text()
    rendered = dict(render_all(inv.models, RenderOptions(push=push)))
    on_disk = {p.name: p.read_text() for p in (example / "scaledobjects").glob("*.yaml")}
    assert on_disk == rendered, f"re-run gpumix render for {example}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_lint_and_drain(example: Path) -> None:
    findings = lint(load_documents([example]), inventory=load_inventory(example / "inventory.yaml"))
    assert findings == []
    deployments = [o for o in kustomize_build(example) if o["kind"] == "Deployment"]
    variants = {v.name for m in load_inventory(example / "inventory.yaml").models for v in m.variants}
    assert {d["metadata"]["name"] for d in deployments} == variants
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 300
        script = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1]
        compile(script, "preStop", "exec")  # the drain hook is valid Python
        deadline = float(re.search(r"time\.time\(\) \+ (\d+)", script).group(1))  # type: ignore[union-attr]
        assert deadline + 5 < pod["terminationGracePeriodSeconds"], "drain must end before SIGKILL"


def test_mig_example_requests_mig_slices() -> None:
    resources = [d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                 for d in kustomize_build(DEPLOY / "examples" / "mig") if d["kind"] == "Deployment"]
    assert any(k.startswith("nvidia.com/mig-") for r in resources for k in r)


def _rules_file(tmp_path: Path) -> Path:
    (rule,) = load_docs(DEPLOY / "base" / "prometheusrule.yaml")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    out = subprocess.run(["promtool", "check", "rules", str(_rules_file(tmp_path))], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    names = {r["alert"] for g in load_docs(DEPLOY / "base" / "prometheusrule.yaml")[0]["spec"]["groups"]
             for r in g["rules"]}
    assert {"GpumixDataStale", "GpumixSolverFallback", "GpumixCoverageBelowOne",
            "GpumixVariantWithoutProfile"} <= names


def test_alerts_fire_on_the_situations_they_name(tmp_path: Path) -> None:
    rules = _rules_file(tmp_path)
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": 'gpumix_up{job="gpumix"}', "values": "1x40"},
                {"series": 'gpumix_data_age_seconds{model="stale"}', "values": "10+15x40"},
                {"series": 'gpumix_data_age_seconds{model="fresh"}', "values": "5x40"},
                {"series": 'gpumix_solver_fallback_total{model="hard"}', "values": "0x10 1x30"},
                {"series": 'gpumix_solver_fallback_total{model="easy"}', "values": "0x40"},
                {"series": 'gpumix_plan_coverage{model="short"}', "values": "0.8x40"},
                {"series": 'gpumix_plan_coverage{model="fresh"}', "values": "1x40"},
                {"series": 'gpumix_profile_status{model="m",variant="v-a100",status="missing"}', "values": "1x40"},
                {"series": 'gpumix_profile_status{model="m",variant="v-l20",status="ok"}', "values": "1x40"},
                {"series": 'gpumix_profile_status{model="m",variant="v-l20",status="missing"}', "values": "0x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "GpumixDataStale", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "model": "stale"},
                    "exp_annotations": {
                        "summary": "gpumix data for stale is 9m 10s old",
                        "description": "The newest Prometheus sample behind the plan of stale is older than 2 "
                        "minutes, so gpumix withholds recommendations and KEDA holds the current replicas. "
                        "Check the vLLM scrape (PodMonitor gpumix-vllm) and Prometheus itself."}}]},
                {"eval_time": "5m", "alertname": "GpumixSolverFallback",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "model": "hard"}}]},
                {"eval_time": "9m", "alertname": "GpumixCoverageBelowOne",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "model": "short"}}]},
                {"eval_time": "9m", "alertname": "GpumixVariantWithoutProfile",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "model": "m", "variant": "v-a100",
                                                "status": "missing"}}]},
                {"eval_time": "9m", "alertname": "GpumixDown", "exp_alerts": []},
            ],
        }],
    }
    # Annotations are only compared when given; give the full set where they are checked.
    for case in tests["tests"][0]["alert_rule_test"]:  # type: ignore[index]
        for alert in case["exp_alerts"]:
            if "exp_annotations" not in alert:
                alert["exp_annotations"] = _annotations_for(case["alertname"], alert["exp_labels"], tmp_path)
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False, width=1_000))
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _annotations_for(alert: str, labels: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The alert's annotations with the labels filled in (promtool compares them exactly)."""
    (rule,) = [r for g in load_docs(DEPLOY / "base" / "prometheusrule.yaml")[0]["spec"]["groups"]
               for r in g["rules"] if r.get("alert") == alert]
    out = {}
    values = {"GpumixCoverageBelowOne": "80%"}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        text = re.sub(r"\{\{ \$value \| humanizePercentage \}\}", values.get(alert, ""), text)
        out[key] = text
    return out


def test_dockerfile_is_multistage_nonroot_and_matches_the_service() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    final = text[text.rindex("\nFROM "):]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "final stage runs as non-root"
    assert user[-1].split(":")[0].isdigit(), "numeric USER so runAsNonRoot can verify it"
    assert "PYTHONDONTWRITEBYTECODE=1" in final, "read-only root: no .pyc writes"
    assert set(re.findall(r"^EXPOSE\s+(.+)$", final, re.M)[0].split()) == {"9090", "8080"}
    for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for item in src.split():
            assert (REPO / item.rstrip("/")).exists(), f"COPY {item}: not in the repository"
    dep = kustomize_build(DEPLOY / "base")
    (gpumix,) = [o for o in dep if o["kind"] == "Deployment"]
    pod = gpumix["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user[-1].split(":")[0])
    cmd = re.search(r'^CMD\s+(\[.*\])', final, re.M)
    assert cmd and yaml.safe_load(cmd.group(1)) == pod["containers"][0]["args"]


def test_grafana_generated_files_are_fresh_and_valid() -> None:
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "grafana" / "build.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (cm,) = load_docs(REPO / "grafana" / "configmap.yaml")
    validate_object(cm)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in (REPO / "grafana" / "dashboards").glob("*.json")}


def test_kubectl_kustomize_agrees_when_installed() -> None:
    """Where kubectl exists, the real kustomize must build the same objects as the test builder; where it does
    not, the builder's own checks above stand (it refuses features it does not implement)."""
    kubectl = shutil.which("kubectl")
    dirs = kustomization_dirs()
    assert len(dirs) >= 5
    if kubectl is None:
        return
    for d in dirs:
        out = subprocess.run([kubectl, "kustomize", str(d)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        ref = [o for o in yaml.safe_load_all(out.stdout) if o]
        key = lambda o: (o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"])  # noqa: E731
        assert sorted(ref, key=key) == sorted(kustomize_build(d), key=key), d


def test_lint_finds_nothing_wrong_with_rendered_objects_and_they_validate(tmp_path: Path) -> None:
    inv = load_inventory(DEPLOY / "examples" / "mig" / "inventory.yaml")
    for opts in (RenderOptions(), RenderOptions(push=True), RenderOptions(kubernetes_version="1.30"),
                 RenderOptions(tolerance="0.05", kubernetes_version="1.35", keda_version="2.18")):
        for name, text in render_all(inv.models, opts):
            (tmp_path / name).write_text(text)
            for obj in yaml.safe_load_all(text):
                validate_scaled_object(obj)
        docs = load_documents([tmp_path, DEPLOY / "examples" / "mig"])
        # The example's own ScaledObjects plus these: two per Deployment, which lint must call out.
        assert has_errors(lint(docs))
        assert not has_errors(lint(load_documents([tmp_path]), inventory=inv))


@pytest.mark.parametrize(
    ("kubernetes", "keda", "tolerance_written"),
    [
        ("1.33", "2.17", False), ("1.34", "2.18", False),  # 1.34: the gate is still alpha, the field dropped
        ("1.35", "2.17", False),  # the 2.17 CRD has no tolerance: strict apply would reject it
        ("1.35", "2.18", True), ("1.35", "2.20", True),
    ],
)
def test_render_writes_only_what_the_cluster_accepts(kubernetes: str, keda: str, tolerance_written: bool) -> None:
    inv = load_inventory(DEPLOY / "examples" / "deepseek-coder-7b" / "inventory.yaml")
    opts = RenderOptions(kubernetes_version=kubernetes, keda_version=keda)
    keda_v = tuple(int(x) for x in keda.split("."))
    for _, text in render_all(inv.models, opts):
        (obj,) = [o for o in yaml.safe_load_all(text) if o]
        validate_scaled_object(obj, keda=keda_v)  # type: ignore[arg-type]
        behavior = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert ("tolerance" in behavior["scaleUp"]) == tolerance_written
        # Outage: no fallback, so KEDA leaves every variant as it is while gpumix is down.
        assert "fallback" not in obj["spec"]


def test_old_render_is_rejected_by_keda_2_17_strictly() -> None:
    """What render wrote before (tolerance on 1.34 by default) fails strict apply on KEDA 2.12-2.17."""
    inv = load_inventory(DEPLOY / "examples" / "deepseek-coder-7b" / "inventory.yaml")
    obj = scaled_object(inv.models[0], inv.models[0].variants[0],
                        RenderOptions(kubernetes_version="1.35", keda_version="2.18"))
    with pytest.raises(AssertionError, match="tolerance"):
        validate_scaled_object(obj, keda=(2, 17))


@pytest.mark.parametrize(
    ("name", "scaled_object", "phrase"),
    [
        ("Llama_70B.A100", None, "not a DNS-1123 name"),
        ("m" * 55, None, "set the inventory's scaled_object"),  # keda-hpa-<55> is 64 characters
        ("m" * 55, "short-name", None),  # a shorter ScaledObject name fixes it
        ("ok-variant", "x" * 64, "is 64 characters"),
    ],
)
def test_render_refuses_names_kubernetes_or_keda_would(name: str, scaled_object: str | None,
                                                        phrase: str | None) -> None:
    from scaler.inventory import ModelInfo, VariantInfo
    from scaler.render import RenderError

    model = ModelInfo("m", "llm", (VariantInfo(name=name, model="m", namespace="llm", scaled_object=scaled_object),))
    if phrase is None:
        ((_, text),) = render_all([model])
        (obj,) = [o for o in yaml.safe_load_all(text) if o]
        assert obj["metadata"]["name"] == scaled_object
        return
    with pytest.raises(RenderError, match=phrase):
        render_all([model])


def test_render_refuses_keda_without_float_fields() -> None:
    from scaler.render import RenderError

    inv = load_inventory(DEPLOY / "examples" / "deepseek-coder-7b" / "inventory.yaml")
    with pytest.raises(RenderError, match=r"KEDA 2\.16 is not supported"):
        render_all(inv.models, RenderOptions(keda_version="2.16"))


def test_docs_state_the_versions_lint_checks() -> None:
    from scaler import versions

    k8s = f"{versions.MIN_KUBERNETES[0]}.{versions.MIN_KUBERNETES[1]}–{versions.MAX_KUBERNETES_TESTED[0]}." \
          f"{versions.MAX_KUBERNETES_TESTED[1]}"
    keda = f"{versions.MIN_KEDA[0]}.{versions.MIN_KEDA[1]}–{versions.MAX_KEDA_TESTED[0]}.{versions.MAX_KEDA_TESTED[1]}"
    for doc in (REPO / "README.md", DEPLOY / "README.md"):
        text = doc.read_text().replace(" – ", "–")
        assert k8s in text and keda in text and "vLLM" in text, doc


def test_recorded_queries_are_gpumix_default_queries(tmp_path: Path) -> None:
    """deploy/components/recording-rules records exactly what gpumix would ask (default rate window), each
    record once, its kustomization names the config line that reads it, and promtool accepts the rules."""
    from scaler.config import Config
    from scaler.prometheus import CYCLE_QUERIES

    (rule,) = load_docs(DEPLOY / "components" / "recording-rules" / "prometheusrule.yaml")
    records = [(r["record"], r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]
    config = Config()
    assert config.rate_window == "1m"
    defaults = {config.query(name): name for name in CYCLE_QUERIES}
    replaced = [defaults.get(expr) for _, expr in records]
    assert None not in replaced and len(set(replaced)) == len(records)
    # never the raw-sample queries: the fast path and the staleness checks need them unrecorded
    assert not set(replaced) & {"waiting", "running", "freshness", "coverage"}
    told = (DEPLOY / "components" / "recording-rules" / "kustomization.yaml").read_text()
    for (record, _), name in zip(records, replaced, strict=True):
        assert f"{name}: {record}" in told
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
