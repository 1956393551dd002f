"""Writes gpumix's Grafana dashboards (JSON) and the ConfigMap the Grafana sidecar loads them from.

The panels are declared once here, so the JSON files, the ConfigMap and the query test
(tests/deploy/test_dashboards.py, which runs every panel's PromQL against a real Prometheus) cannot drift.

    python grafana/build.py          # rewrite grafana/dashboards/*.json and grafana/configmap.yaml
    python grafana/build.py --check  # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model="$model"'
MN = 'model_name="$model", namespace="$namespace"'
# DCGM series have no variant label: the variant is the Deployment, i.e. the pod name without its
# ReplicaSet hash and pod suffix (<deployment>-<hash>-<5 chars>). DCGM reports no DCGM_FI_DEV_GPU_UTIL for
# MIG slices; DCGM_FI_PROF_GR_ENGINE_ACTIVE (a ratio) is reported for them and fills in where the first is
# missing.
GPU_UTIL_BY_VARIANT = (
    'avg by (variant) (label_replace((DCGM_FI_DEV_GPU_UTIL{namespace="$namespace"} or '
    '(DCGM_FI_PROF_GR_ENGINE_ACTIVE{namespace="$namespace"} * 100)), "variant", "$1", "pod", '
    '"(.+)-[a-z0-9]+-[a-z0-9]{5}")) and on (variant) group by (variant) (gpumix_desired_replicas{' + M + "})"
)
# Completed requests, aborted ones excluded (vllm:request_success_total's finished_reason label).
SERVED = 'finished_reason!="abort"'


def itl_rate(by: str, matchers: str, rate: str) -> str:
    """Per-token latency buckets: vllm:inter_token_latency_seconds (vLLM 0.10.2+), else the old
    vllm:time_per_output_token_seconds (deprecated in 0.11, hidden in 0.12: vllm/v1/metrics/loggers.py)."""
    return (f"sum by ({by}) (rate(vllm:inter_token_latency_seconds_bucket{{{matchers}}}[{rate}])) or "
            f"sum by ({by}) (rate(vllm:time_per_output_token_seconds_bucket{{{matchers}}}[{rate}]))")


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(title: str, targets: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
          description: str = "", stack: bool = False, thresholds: list[tuple[str, float | None]] | None = None,
          w: int = 12, h: int = 8, minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 0,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "showPoints": "never",
            "spanNulls": False,
        }
        if thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    steps = [{"color": "green", "value": None}]
    for color, value in thresholds or []:
        steps.append({"color": color, "value": value})
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else {
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"},
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24 or p["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update({"x": x, "y": y})
        x, row_h = x + w, max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return panels


def query_var(name: str, label: str, query: str, *, multi: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
    }


def const_var(name: str, label: str, value: str, description: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "textbox", "query": value, "description": description,
            "current": {"text": value, "value": value}}


DATASOURCE_VAR = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["gpumix", "llm", "autoscaling"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [DATASOURCE_VAR, *variables]},
        "annotations": {"list": []},
        "links": [],
        "panels": _layout(panels),
    }


def model_dashboard() -> dict[str, Any]:
    rate = "$__rate_interval"
    panels = [
        row("Demand"),
        panel("Demand (req/s)", [
            (f"gpumix_demand_rps{{{M}}}", "demand (gpumix estimate)"),
            (f"sum(rate(vllm:request_success_total{{{MN}, {SERVED}}}[{rate}]))", "completions"),
        ], unit="reqps", description="gpumix's demand estimate (completions plus the queue to drain) next to "
           "the measured completion rate; a gap means requests are queueing."),
        panel("Demand by bucket (input × output tokens)", [
            (f"sum by (input_tokens, output_tokens) (gpumix_demand_bucket_rps{{{M}}})",
             "in ≤ {{input_tokens}}, out ≤ {{output_tokens}}"),
        ], unit="reqps", stack=True, description="The bucket mix the planner sizes for: long prompts favour "
           "GPUs with more memory, short ones the cheapest per token."),
        row("Plan"),
        panel("Replicas: recommended vs actual, per variant", [
            (f"sum by (variant) (gpumix_desired_replicas{{{M}}})", "{{variant}} recommended"),
            (f"sum by (variant) (gpumix_current_replicas{{{M}}})", "{{variant}} current"),
            ('sum by (deployment) (kube_deployment_status_replicas_ready{namespace="$namespace", '
             'deployment=~"$variant"})', "{{deployment}} ready"),
        ], description="What gpumix published to KEDA, what it saw running, and what is ready. Recommended "
           "above ready for longer than a cold start means pods cannot be scheduled."),
        panel("Plan cost per hour", [(f"sum(gpumix_plan_cost_per_hour{{{M}}})", "cost / h")],
              unit="currencyUSD", w=6),
        panel("Coverage", [(f"min(gpumix_plan_coverage{{{M}}})", "coverage")], kind="stat", unit="percentunit",
              minimum=0, maximum=1, thresholds=[("red", None), ("green", 0.999)], w=6,
              description="Share of the demand the plan can serve within the SLO; below 100 % the pools or "
              "max replicas are too small."),
        row("Load"),
        panel("Waiting requests per variant", [
            (f"sum by (variant) (vllm:num_requests_waiting{{{MN}}})", "{{variant}}"),
            (f"gpumix_waiting_requests{{{M}}}", "total (gpumix)"),
        ]),
        panel("Running requests per variant", [
            (f"sum by (variant) (vllm:num_requests_running{{{MN}}})", "{{variant}}"),
        ]),
        row("Latency against the SLO"),
        panel("Time to first token", [
            (f"histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{MN}}}[{rate}])))",
             "p50"),
            (f"histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{MN}}}[{rate}])))",
             "p90"),
            (f"histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{{{MN}}}[{rate}])))",
             "p99"),
            ("vector($ttft_slo)", "SLO"),
        ], unit="s"),
        panel("Time per output token, p99 per variant", [
            (f"histogram_quantile(0.99, {itl_rate('le, variant', MN, rate)})", "{{variant}} p99"),
            (f"histogram_quantile(0.5, {itl_rate('le', MN, rate)})", "all p50"),
            ("vector($tpot_slo)", "SLO"),
        ], unit="s"),
        row("Calibration"),
        panel("Capacity correction per variant", [
            (f"max by (variant) (gpumix_calibration_factor{{{M}}})", "{{variant}}"),
            (f"max by (variant) (gpumix_calibration_frozen{{{M}}})", "{{variant}} frozen"),
        ], description="The factor gpumix applies to each variant's profile capacity, learnt from its latency "
           "histograms (1 = as profiled; below 1 the profile over-claims). `gpumix calibrate` shows the "
           "evidence; `--freeze` / `--reset` act on it."),
        panel("Headroom and SLO attainment", [
            (f"max(gpumix_headroom_utilization{{{M}}})", "utilisation target u"),
            (f"max(gpumix_slo_attainment{{{M}}}) or on () vector(1)", "attainment (last window)"),
        ], unit="percentunit", minimum=0, maximum=1, description="The utilisation the planner sizes the model "
           "for, adapted so the share of requests within the SLO tracks attainment_target; attainment is "
           "shown once a window had enough requests."),
        row("GPUs"),
        panel("GPU utilisation per variant (DCGM)", [(GPU_UTIL_BY_VARIANT, "{{variant}}")], unit="percent",
              minimum=0, maximum=100, description="DCGM's duty cycle, averaged over each variant's pods (the "
              "variant is derived from the pod name). It reads high with a single request: watch it next to "
              "running requests, not alone."),
        panel("KV cache usage per variant", [
            (f"avg by (variant) (vllm:kv_cache_usage_perc{{{MN}}})", "{{variant}}"),
        ], unit="percentunit", minimum=0, maximum=1),
        row("gpumix health"),
        panel("Solve time", [
            (f"histogram_quantile(0.5, sum by (le) (rate(gpumix_solve_seconds_bucket{{{M}}}[{rate}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(gpumix_solve_seconds_bucket{{{M}}}[{rate}])))", "p99"),
            # The counter appears with the first fallback; until then the panel shows 0, not "no data".
            (f"sum(increase(gpumix_solver_fallback_total{{{M}}}[{rate}])) or vector(0)", "greedy fallbacks"),
        ], unit="s", w=8),
        panel("Data age", [(f"max(gpumix_data_age_seconds{{{M}}})", "age")], unit="s", w=8,
              thresholds=[("orange", 60), ("red", 120)],
              description="Age of the newest sample behind the plan; past stale_after gpumix answers "
              "UNAVAILABLE and KEDA falls back."),
        panel("Errors and profile status", [
            ("sum by (kind) (rate(gpumix_observation_errors_total[$__rate_interval])) or on () vector(0)",
             "{{kind}} errors/s"),
            (f"sum by (status) (gpumix_profile_status{{{M}}})", "variants with profile {{status}}"),
        ], w=8),
    ]
    variables = [
        query_var("model", "Model", "label_values(gpumix_demand_rps, model)"),
        query_var("namespace", "Namespace", 'label_values(gpumix_desired_replicas{model="$model"}, namespace)'),
        query_var("variant", "Variant", 'label_values(gpumix_desired_replicas{model="$model"}, variant)',
                  multi=True),
        const_var("ttft_slo", "TTFT SLO (s)", "1", "The model's TTFT SLO, drawn as a line."),
        const_var("tpot_slo", "TPOT SLO (s)", "0.05", "The model's TPOT SLO, drawn as a line."),
    ]
    return dashboard("gpumix-model", "gpumix / model",
                     "One model: demand, the plan gpumix chose across its GPU variants, and whether it holds.",
                     panels, variables)


def overview_dashboard() -> dict[str, Any]:
    rate = "$__rate_interval"
    panels = [
        panel("gpumix up", [("min(gpumix_up)", "up")], kind="stat", w=6, h=4,
              thresholds=[("red", None), ("green", 1)]),
        panel("Total plan cost per hour", [("sum(gpumix_plan_cost_per_hour)", "cost / h")], kind="stat",
              unit="currencyUSD", w=6, h=4),
        panel("Lowest coverage", [("min(gpumix_plan_coverage)", "coverage")], kind="stat", unit="percentunit",
              w=6, h=4, thresholds=[("red", None), ("green", 0.999)]),
        panel("Oldest data", [("max(gpumix_data_age_seconds)", "age")], kind="stat", unit="s", w=6, h=4,
              thresholds=[("orange", 60), ("red", 120)]),
        panel("Cost per hour by model", [("sum by (model) (gpumix_plan_cost_per_hour)", "{{model}}")],
              unit="currencyUSD", stack=True),
        panel("Recommended replicas by variant", [
            ("sum by (model, variant) (gpumix_desired_replicas)", "{{model}} / {{variant}}"),
        ], stack=True),
        panel("Demand by model", [("sum by (model) (gpumix_demand_rps)", "{{model}}")], unit="reqps"),
        panel("Control cycle duration", [
            (f"histogram_quantile(0.99, sum by (le) (rate(gpumix_cycle_seconds_bucket[{rate}])))", "p99"),
            (f"histogram_quantile(0.5, sum by (le) (rate(gpumix_cycle_seconds_bucket[{rate}])))", "p50"),
        ], unit="s"),
    ]
    return dashboard("gpumix-overview", "gpumix / overview", "Every model gpumix plans: cost, coverage, health.",
                     panels, [])


DASHBOARDS = {"gpumix-model.json": model_dashboard, "gpumix-overview.json": overview_dashboard}


def render() -> dict[Path, str]:
    """Every generated file and its content."""
    files: dict[Path, str] = {}
    for name, build in DASHBOARDS.items():
        files[HERE / "dashboards" / name] = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gpumix-dashboards",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "gpumix"},
            # The kube-prometheus-stack / Grafana chart sidecar puts dashboards into this folder.
            "annotations": {"grafana_folder": "gpumix"},
        },
        "data": {path.name: text for path, text in files.items()},
    }
    header = ("# Generated by grafana/build.py from its panel list; do not edit. The Grafana sidecar loads\n"
              "# ConfigMaps labelled grafana_dashboard: \"1\" (kube-prometheus-stack default).\n")
    files[HERE / "configmap.yaml"] = header + yaml.safe_dump(configmap, sort_keys=False, width=1_000_000)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    for path in stale:
        print(f"{path.relative_to(HERE.parent)} is out of date: run python grafana/build.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
