"""`gpumix lint`, table-driven: each case breaks one thing in a good set of objects and names the finding
(severity and a phrase of its message) lint must produce, and nothing else at error level."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler.cli import main
from scaler.inventory import load_inventory
from scaler.lint import ERROR, WARNING, Document, lint, load_profile_index
from tests.deploy.manifests import DEPLOY, load_docs

EXAMPLE = DEPLOY / "examples" / "deepseek-coder-7b"
INVENTORY = load_inventory(EXAMPLE / "inventory.yaml")


def good() -> list[dict[str, Any]]:
    return [*load_docs(EXAMPLE / "deployment-v100.yaml"), *load_docs(EXAMPLE / "deployment-l20.yaml"),
            *[d for p in sorted((EXAMPLE / "scaledobjects").glob("*.yaml")) for d in load_docs(p)]]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def so(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objs, "ScaledObject", "deepseek-coder-7b-v100")


def dep(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objs, "Deployment", "deepseek-coder-7b-v100")


def behaviour(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return so(objs)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]  # type: ignore[no-any-return]


def meta(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return so(objs)["spec"]["triggers"][0]["metadata"]  # type: ignore[no-any-return]


def add_hpa(objs: list[dict[str, Any]]) -> None:
    objs.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                 "metadata": {"name": "old-hpa", "namespace": "llm"},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "deepseek-coder-7b-v100"},
                          "minReplicas": 1, "maxReplicas": 4}})


def add_keda_hpa(objs: list[dict[str, Any]]) -> None:
    # The HPA KEDA itself creates for a ScaledObject is not a second autoscaler.
    objs.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                 "metadata": {"name": "keda-hpa-deepseek-coder-7b-v100", "namespace": "llm",
                              "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                                   "name": "deepseek-coder-7b-v100", "uid": "x"}]},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "deepseek-coder-7b-v100"},
                          "minReplicas": 1, "maxReplicas": 8}})


def second_so(objs: list[dict[str, Any]]) -> None:
    extra = copy.deepcopy(so(objs))
    extra["metadata"]["name"] = "v100-by-hand"
    objs.append(extra)


def pop_label(key: str) -> Callable[[list[dict[str, Any]]], None]:
    return lambda objs: dep(objs)["spec"]["template"]["metadata"]["labels"].pop(key)


Case = tuple[str, Callable[[list[dict[str, Any]]], Any], list[tuple[str, str]]]
CASES: list[Case] = [
    ("good", lambda objs: None, []),
    ("min replicas above zero", lambda o: so(o)["spec"].update(minReplicaCount=1),
     [(ERROR, "spec.minReplicaCount is 1")]),
    ("two ScaledObjects on one Deployment", second_so,
     [(ERROR, "has 2 autoscalers"), (ERROR, "has 2 autoscalers")]),
    ("an HPA next to the ScaledObject", add_hpa, [(ERROR, "has 2 autoscalers"), (ERROR, "has 2 autoscalers")]),
    ("KEDA's own HPA is fine", add_keda_hpa, []),
    ("scalerAddress missing", lambda o: meta(o).pop("scalerAddress"), [(ERROR, "metadata.scalerAddress: missing")]),
    ("model missing", lambda o: meta(o).pop("model"),
     [(ERROR, "metadata.model: missing")]),
    ("variant missing", lambda o: meta(o).pop("variant"), [(ERROR, "metadata.variant: missing")]),
    ("variant names another Deployment", lambda o: meta(o).update(variant="deepseek-coder-7b-l20"),
     [(ERROR, "but the ScaledObject scales Deployment 'deepseek-coder-7b-v100'")]),
    ("misspelt metadata key", lambda o: meta(o).update(modle="x"), [(WARNING, "metadata.modle")]),
    ("namespace differs", lambda o: meta(o).update(namespace="prod"), [(ERROR, "metadata.namespace is 'prod'")]),
    ("bad target", lambda o: meta(o).update(target="0"), [(ERROR, "metadata.target")]),
    ("metric type Value", lambda o: so(o)["spec"]["triggers"][0].update(metricType="Value"),
     [(ERROR, "metricType is Value")]),
    ("another trigger", lambda o: so(o)["spec"]["triggers"].append(
        {"type": "prometheus", "metadata": {"query": "x", "threshold": "1", "serverAddress": "http://p"}}),
     [(WARNING, "other trigger")]),
    ("pod model label missing", pop_label("gpumix.io/model"), [(ERROR, "no gpumix.io/model label")]),
    ("pod variant label missing", pop_label("gpumix.io/variant"), [(ERROR, "no gpumix.io/variant label")]),
    ("AIBrix model label accepted", lambda o: dep(o)["spec"]["template"]["metadata"]["labels"].update(
        {"model.aibrix.ai/name": dep(o)["spec"]["template"]["metadata"]["labels"].pop("gpumix.io/model")}), []),
    ("pod model label differs", lambda o: dep(o)["spec"]["template"]["metadata"]["labels"].update(
        {"gpumix.io/model": "other"}), [(ERROR, "is 'other' but ScaledObject")]),
    ("variant label is not the Deployment", lambda o: dep(o)["spec"]["template"]["metadata"]["labels"].update(
        {"gpumix.io/variant": "v100"}), [(ERROR, "must be the Deployment's name")]),
    ("Deployment label missing", lambda o: dep(o)["metadata"]["labels"].clear(),
     [(WARNING, "metadata.labels: no gpumix.io/model")]),
    ("spec.replicas set", lambda o: dep(o)["spec"].update(replicas=2), [(WARNING, "spec.replicas is set")]),
    ("no drain", lambda o: dep(o)["spec"]["template"]["spec"]["containers"][0].pop("lifecycle"),
     [(WARNING, "no preStop")]),
    ("short grace period", lambda o: dep(o)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
     [(WARNING, "kills in-flight requests")]),
    ("scale-up window", lambda o: behaviour(o)["scaleUp"].update(stabilizationWindowSeconds=60),
     [(WARNING, "scaleUp.stabilizationWindowSeconds is 60")]),
    ("scale-up rate limit", lambda o: behaviour(o)["scaleUp"].update(
        policies=[{"type": "Pods", "value": 1, "periodSeconds": 60}]), [(WARNING, "reaches only 2 per period")]),
    ("default HPA behaviour", lambda o: so(o)["spec"].pop("advanced"),
     [(WARNING, "reaches only 5 per period")]),
    ("scale-up disabled", lambda o: behaviour(o)["scaleUp"].update(selectPolicy="Disabled"),
     [(ERROR, "scaleUp.selectPolicy is Disabled")]),
    ("scale-down window differs from the plan's", lambda o: behaviour(o)["scaleDown"].update(
        stabilizationWindowSeconds=600), [(ERROR, "is 600 s but gpumix plans with 300 s")]),
    ("scale-down rate limit", lambda o: behaviour(o)["scaleDown"].update(
        policies=[{"type": "Pods", "value": 1, "periodSeconds": 60}]), [(WARNING, "scaleDown.policies limit")]),
    ("tolerance as a float", lambda o: behaviour(o)["scaleDown"].update(tolerance=0.05),
     [(ERROR, "write it as a string")]),
    ("wide tolerance", lambda o: behaviour(o)["scaleDown"].update(tolerance="0.2"),
     [(WARNING, "wider than the default")]),
    # Outage behaviour (deploy/README.md, "When gpumix is down"): no fallback holds every variant.
    ("fallback replicas 0, as gpumix rendered before", lambda o: so(o)["spec"].update(
        fallback={"failureThreshold": 3, "replicas": 0, "behavior": "currentReplicasIfHigher"}),
     [(ERROR, "spec.fallback.replicas is 0")]),
    ("static fallback shrinks serving variants", lambda o: so(o)["spec"].update(
        fallback={"failureThreshold": 3, "replicas": 2}),
     [(ERROR, "spec.fallback.behavior is static"), (WARNING, "from KEDA 2.19")]),
    ("fallback wakes idle variants from KEDA 2.19", lambda o: so(o)["spec"].update(
        fallback={"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}),
     [(WARNING, "isActiveOrFallback")]),
    # KEDA's webhook (scaledobject_webhook.go): the name and keda-hpa-<name> at most 63 characters.
    ("ScaledObject name too long for its HPA", lambda o: so(o)["metadata"].update(name="v" * 55),
     [(ERROR, "keda-hpa-" + "v" * 55)]),
    ("ScaledObject name over 63", lambda o: so(o)["metadata"].update(name="v" * 64),
     [(ERROR, "is 64 characters"), (ERROR, "keda-hpa-")]),
    ("ScaledObject name not DNS-1123", lambda o: so(o)["metadata"].update(name="Llama_70B.A100"),
     [(ERROR, "not a DNS-1123 name")]),
    ("max differs from inventory", lambda o: so(o)["spec"].update(maxReplicaCount=3),
     [(WARNING, "maxReplicaCount is 3 but the inventory plans with max_replicas 8")]),
    ("scaling modifiers", lambda o: so(o)["spec"]["advanced"].update(
        scalingModifiers={"formula": "x * 2", "target": "1"}), [(WARNING, "scalingModifiers.formula")]),
    ("Deployment without ScaledObject", lambda o: o.remove(so(o)),
     [(WARNING, "no ScaledObject scales it")]),
]


@pytest.mark.parametrize(("name", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_lint_case(name: str, mutate: Callable[[list[dict[str, Any]]], Any],
                   expected: list[tuple[str, str]]) -> None:
    objs = good()
    mutate(objs)
    findings = lint([Document(f"case#{i}", o) for i, o in enumerate(objs)], inventory=INVENTORY)
    got = sorted((f.severity, f.message) for f in findings)
    assert len(got) == len(expected), "\n".join(str(f) for f in findings)
    unmatched = list(got)
    for severity, phrase in expected:
        hit = next((g for g in unmatched if g[0] == severity and phrase in g[1]), None)
        assert hit is not None, f"expected {severity} containing {phrase!r}, got:\n" + "\n".join(map(str, findings))
        unmatched.remove(hit)


def test_variant_without_profile(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    aibrix = json.loads((Path(__file__).parents[2] / "data" / "aibrix" / "simulator-llama2-7b-a100.json").read_text())
    aibrix["gpu"] = "deepseek-coder-7b-l20"  # an AIBrix profile names its deployment in `gpu`
    (profiles / "l20.json").write_text(json.dumps(aibrix))
    (profiles / "broken.json").write_text("{not json")
    have, problems = load_profile_index(profiles)
    assert have == {(None, "deepseek-coder-7b-l20")}
    assert len(problems) == 1 and "broken.json" in problems[0].source
    findings = lint([Document("x", o) for o in good()], profiles=have, inventory=INVENTORY)
    assert [(f.severity, f.obj) for f in findings] == [(ERROR, "Deployment llm/deepseek-coder-7b-v100")]
    assert "variant without profile" in findings[0].message


def test_cli_exit_codes_and_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(EXAMPLE), "--inventory", str(EXAMPLE / "inventory.yaml")]) == 0
    objs = good()
    so(objs)["spec"]["minReplicaCount"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(objs))
    capsys.readouterr()
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr()
    assert "ERROR" in out.out and "ScaledObject llm/deepseek-coder-7b-v100" in out.out
    assert "minReplicaCount is 2" in out.out and "1 errors" in out.err
    assert main(["lint", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("a: [")
    assert main(["lint", str(tmp_path / "broken.yaml")]) == 2
    assert "cannot read YAML" in capsys.readouterr().err


def with_tolerance(objs: list[dict[str, Any]]) -> None:
    behaviour(objs)["scaleUp"]["tolerance"] = 0
    behaviour(objs)["scaleDown"]["tolerance"] = 0


@pytest.mark.parametrize(
    ("kubernetes", "keda", "expected"),
    [
        # The CRD has behavior.*.tolerance only from KEDA 2.18: strict apply refuses it on 2.17.
        ((1, 35), (2, 17), [(ERROR, "KEDA 2.17's ScaledObject CRD has no tolerance field")]),
        # HPAConfigurableTolerance is off by default before 1.35: the API server drops the field.
        ((1, 34), (2, 18), [(WARNING, "the API server drops the field")]),
        ((1, 33), (2, 20), [(WARNING, "the API server drops the field")]),
        ((1, 35), (2, 18), []),
        (None, None, []),
    ],
)
def test_lint_tolerance_by_version(kubernetes: tuple[int, int] | None, keda: tuple[int, int] | None,
                                   expected: list[tuple[str, str]]) -> None:
    objs = good()
    with_tolerance(objs)
    findings = lint([Document(f"case#{i}", o) for i, o in enumerate(objs)], inventory=INVENTORY,
                    kubernetes_version=kubernetes, keda_version=keda)
    got = [(f.severity, f.message) for f in findings if f.obj.endswith("deepseek-coder-7b-v100")
           and "ScaledObject" in f.obj]
    assert len(got) == len(expected), "\n".join(map(str, findings))
    for (severity, phrase), (gs, gm) in zip(expected, got, strict=True):
        assert severity == gs and phrase in gm, gm


@pytest.mark.parametrize(
    ("flags", "code", "phrase"),
    [
        (["--keda-version", "2.16"], 2, "KEDA 2.16 is not supported"),
        (["--keda-version", "2.12"], 2, "only integer targets"),
        (["--kubernetes-version", "1.29"], 2, "Kubernetes 1.29 is not supported"),
        (["--keda-version", "two"], 2, "--keda-version: expected MAJOR.MINOR"),
        (["--keda-version", "2.17", "--kubernetes-version", "1.33"], 0, "0 errors"),
        (["--keda-version", "2.21"], 0, "newer than the newest checked"),
    ],
)
def test_lint_cli_versions(flags: list[str], code: int, phrase: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(EXAMPLE), "--errors-only", *flags]) == code
    captured = capsys.readouterr()
    assert phrase in captured.err + captured.out
