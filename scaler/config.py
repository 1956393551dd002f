"""Typed configuration of `gpumix serve`: defaults < YAML file < GPUMIX_<FIELD> environment < flags.

Every problem of one configuration is collected and reported together (`ConfigError.problems`), each naming
its field and where the value came from, so a bad deployment fails once with the whole list.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from optimizer.calibrate import CalibrationSettings

# PromQL templates. {window} is the rate window; {model}, {variant}, {namespace} are the configured label
# names. Each query is aggregated over the whole fleet: the number of queries per cycle does not grow with
# the number of variants.
#
# vLLM's series (vllm/v1/metrics/loggers.py, PrometheusStatLogger): request_success_total carries
# finished_reason (stop, length, abort); an aborted request is not work served, so it is excluded (a series
# without the label still matches `!="abort"`). TPOT: vllm:inter_token_latency_seconds from 0.10.2, with
# vllm:time_per_output_token_seconds deprecated in 0.11, hidden in 0.12 (--show-hidden-metrics-for-version)
# and removed later; the query reads the new name and falls back to the old one (`or`, per label set).
# DCGM: DCGM_FI_DEV_GPU_UTIL (%) is not reported for MIG slices; DCGM_FI_PROF_GR_ENGINE_ACTIVE (a ratio) is,
# so it fills in, as a percentage, wherever the first is missing.
_GPU_UTIL = "(DCGM_FI_DEV_GPU_UTIL or (DCGM_FI_PROF_GR_ENGINE_ACTIVE * 100))"
_COMMON_QUERIES: dict[str, str] = {
    "completions": (
        "sum by ({namespace}, {model}, {variant}) "
        '(rate(vllm:request_success_total{finished_reason!="abort"}[{window}]))'
    ),
    "waiting": "sum by ({namespace}, {model}, {variant}) (vllm:num_requests_waiting)",
    "running": "sum by ({namespace}, {model}, {variant}) (vllm:num_requests_running)",
    "prompt_histogram": "sum by ({namespace}, {model}, le) (increase(vllm:request_prompt_tokens_bucket[{window}]))",
    "generation_histogram": (
        "sum by ({namespace}, {model}, le) (increase(vllm:request_generation_tokens_bucket[{window}]))"
    ),
    "prompt_tokens": "sum by ({namespace}, {model}) (rate(vllm:prompt_tokens_total[{window}]))",
    "generation_tokens": "sum by ({namespace}, {model}) (rate(vllm:generation_tokens_total[{window}]))",
    "ttft_p99": (
        "histogram_quantile(0.99, sum by ({namespace}, {model}, le) "
        "(rate(vllm:time_to_first_token_seconds_bucket[{window}])))"
    ),
    "tpot_p99": (
        "histogram_quantile(0.99, sum by ({namespace}, {model}, le) "
        "(rate(vllm:inter_token_latency_seconds_bucket[{window}])) or sum by ({namespace}, {model}, le) "
        "(rate(vllm:time_per_output_token_seconds_bucket[{window}])))"
    ),
    # DCGM has no variant label; the Deployment is the pod name minus its ReplicaSet and pod suffixes.
    "gpu_util": (
        'avg by ({namespace}, deployment) (label_replace(' + _GPU_UTIL + ', "deployment", "$1", "pod", '
        '"(.+)-[a-z0-9]+-[a-z0-9]+"))'
    ),
    "replicas": "max by (namespace, deployment) (kube_deployment_status_replicas)",
    "ready_replicas": "max by (namespace, deployment) (kube_deployment_status_replicas_ready)",
    # Newest sample time per variant: how old the data behind this cycle is.
    "freshness": "max by ({namespace}, {model}, {variant}) (timestamp(vllm:num_requests_waiting))",
    # Samples per pod in the rate window, the least-covered pod per variant: a rate() over a window that is not
    # yet covered (Prometheus restarted without its data, a new pod) under-counts, so it must not lower anything.
    "coverage": "min by ({namespace}, {model}, {variant}) (count_over_time(vllm:num_requests_waiting[{window}]))",
}
# The calibration's evidence (optimizer/calibrate.py), per pod so that warming replicas can be left out, over
# `{calibration_window}`; asked every `calibration_interval`, not every cycle (per pod and bucket they are the
# heaviest queries gpumix sends).
_EVIDENCE_QUERIES: dict[str, str] = {
    "evidence_completed": (
        "sum by ({namespace}, {model}, {variant}, pod) "
        '(increase(vllm:request_success_total{finished_reason!="abort"}[{calibration_window}]))'
    ),
    "evidence_ttft": ("sum by ({namespace}, {model}, {variant}, pod, le) "
                      "(increase(vllm:time_to_first_token_seconds_bucket[{calibration_window}]))"),
    "evidence_tpot": ("sum by ({namespace}, {model}, {variant}, pod, le) "
                      "(increase(vllm:inter_token_latency_seconds_bucket[{calibration_window}])) "
                      "or sum by ({namespace}, {model}, {variant}, pod, le) "
                      "(increase(vllm:time_per_output_token_seconds_bucket[{calibration_window}]))"),
    "evidence_e2e": ("sum by ({namespace}, {model}, {variant}, pod, le) "
                     "(increase(vllm:e2e_request_latency_seconds_bucket[{calibration_window}]))"),
    # The KV cache's fullest moment per pod over the window: a batch fills it before latency shows anything
    # (vLLM's latency is flat until admission stops), so how full it got bounds how much more load fits.
    "evidence_kv_peak": ("max by ({namespace}, {model}, {variant}, pod) "
                         "(max_over_time(vllm:kv_cache_usage_perc[{calibration_window}])) "
                         "or max by ({namespace}, {model}, {variant}, pod) "
                         "(max_over_time(vllm:gpu_cache_usage_perc[{calibration_window}]))"),
    "evidence_waiting_end": "sum by ({namespace}, {model}, {variant}) (vllm:num_requests_waiting)",
    "evidence_waiting_start": (
        "sum by ({namespace}, {model}, {variant}) (vllm:num_requests_waiting offset {calibration_window})"
    ),
    "evidence_prompt_histogram": ("sum by ({namespace}, {model}, {variant}, le) "
                                  "(increase(vllm:request_prompt_tokens_bucket[{calibration_window}]))"),
    "evidence_generation_histogram": ("sum by ({namespace}, {model}, {variant}, le) "
                                      "(increase(vllm:request_generation_tokens_bucket[{calibration_window}]))"),
    # A pod's vLLM series appear once its API server is up, which is when it turns ready (the readiness probe
    # asks that server): first-seen time is the ready time, to the subquery's resolution. The look-back only
    # needs to reach past the age that makes a pod's samples count (`{calibration_age_range}`: warm-up, window
    # and two scrapes); an older pod reads as that old. At 4,000 pods a 1 h look-back (240 steps per series)
    # did not finish within 30 s.
    "evidence_age": ("time() - min by ({namespace}, {model}, {variant}, pod) "
                     "(min_over_time(timestamp(vllm:num_requests_running)[{calibration_age_range}:15s]))"),
}
EVIDENCE_QUERIES = tuple(_EVIDENCE_QUERIES)
_COMMON_QUERIES.update(_EVIDENCE_QUERIES)
DEFAULT_QUERIES: dict[str, dict[str, str]] = {
    "v1": {**_COMMON_QUERIES, "kv_cache": "avg by ({namespace}, {model}, {variant}) (vllm:kv_cache_usage_perc)"},
    "v0": {**_COMMON_QUERIES, "kv_cache": "avg by ({namespace}, {model}, {variant}) (vllm:gpu_cache_usage_perc)"},
}
QUERY_NAMES = frozenset(DEFAULT_QUERIES["v1"])


# Each configuration option that sets a calibration setting (optimizer/calibrate.py), by the setting's name
# there: CalibrationSettings validates them, once, and its messages are given back in the options' names.
CALIBRATION_OPTIONS = {
    "calibration_factor_min": "factor_min",
    "calibration_factor_max": "factor_max",
    "calibration_warmup": "warmup_s",
    "calibration_kv_knee": "kv_knee",
    "attainment_target": "attainment_target",
    "utilization": "utilization_initial",
    "utilization_min": "utilization_min",
    "utilization_max": "utilization_max",
}


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Config:
    prometheus: str | None = None
    redis: str | None = None
    profiles: str | None = None
    inventory: str | None = None
    kubernetes: bool = False  # read Deployments/ScaledObjects/Nodes from the API server
    kube_api: str | None = None  # API server URL (default: in-cluster or kubeconfig)
    kube_namespace: str | None = None  # watch one namespace (default: all)
    bind: str = "127.0.0.1"
    grpc_port: int = 9090
    http_port: int = 8080
    interval: float = 15.0
    stale_after: float = 0.0  # 0: four intervals (at least 60 s)
    fast_interval: float = 2.0  # how often waiting requests are checked for scale-from-zero
    drain_time: float = 60.0  # seconds in which the queue should be drained: adds waiting/drain_time req/s
    forecast_horizon: float = 0.0  # > 0: plan for the peak demand of this many seconds (cold start lead time)
    # Plan for the demand's linear trend over this look-back, projected one cold start ahead; 0: off, the
    # default. Measured (BENCHMARKS.md, replay, `gpumix-trend:300`): on the AIBrix ramp +1.7 points of SLO for
    # +46 % cost, on the diurnal trace +0.4 points for +3.6 %, the code trace unchanged — more than the
    # issue's goals allow (ramp ≤ 1.10× the clairvoyant, no trace > 2 % dearer). Set 300 for ramps; keep it
    # longer than a burst's rising edge (at 180 s the code trace's bursts pass for trends: 1.6× cost).
    forecast_trend: float = 0.0
    cold_start: float = 180.0  # seconds from pod created to serving, for variants whose inventory gives none
    # A variant whose profile claims nothing for more than this share of a model's demand (where another
    # variant claims it) gets no load: the router in front of vLLM is length-blind, so every replica receives
    # every length (optimizer/cycle.py, length_blind_excluded). 1.0: off, for a router that routes by length.
    length_blind_share: float = 0.2
    rate_window: str = "1m"
    scrape_interval: float = 15.0  # Prometheus' scrape interval for the vLLM pods (how many samples a window holds)
    prometheus_timeout: float = 5.0
    max_sample_age: float = 60.0
    metrics: str = "v1"  # default PromQL set: vLLM V1 or V0 metric names
    queries: Mapping[str, str] = field(default_factory=dict)  # overrides of single queries by name
    model_label: str = "model_name"
    variant_label: str = "variant"
    namespace_label: str = "namespace"
    target: float = 1.0  # the AverageValue target T announced in GetMetricSpec
    utilization: float = 0.8
    churn: float = 0.05
    hysteresis_margin: float = 0.1
    solver_time_limit: float = 2.0
    # Online calibration (optimizer/calibrate.py): profiles corrected from observed latency, and the
    # utilisation target adapted so that `attainment_target` of requests meet the SLO; `utilization` is
    # where u starts. Off: profiles as they are and u fixed.
    calibration: bool = True
    calibration_window: str = "2m"
    calibration_interval: float = 60.0
    calibration_warmup: float = 180.0  # a replica's first seconds after it turned ready are not evidence
    attainment_target: float = 0.99
    utilization_min: float = 0.5
    utilization_max: float = 0.95
    calibration_factor_min: float = 0.25
    calibration_factor_max: float = 2.0
    calibration_kv_knee: float = 0.9  # KV-cache usage taken as full (sampled peaks miss the fullest moments)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate signed by it (mTLS)
    log_level: str = "info"

    @property
    def rate_window_s(self) -> float:
        return duration_s(self.rate_window)

    def calibration_settings(self) -> CalibrationSettings:
        return CalibrationSettings(**{name: getattr(self, option) for option, name in CALIBRATION_OPTIONS.items()})

    @property
    def calibration_window_s(self) -> float:
        return duration_s(self.calibration_window)

    @property
    def calibration_age_range_s(self) -> float:
        """How far back the evidence looks for a pod's first sample: a pod seen for longer is old enough."""
        return math.ceil(self.calibration_warmup + self.calibration_window_s + 2 * self.scrape_interval)

    @property
    def stale_after_s(self) -> float:
        return self.stale_after if self.stale_after > 0 else max(60.0, 4 * self.interval)

    def query(self, name: str) -> str:
        template = self.queries.get(name) or DEFAULT_QUERIES[self.metrics][name]
        return (
            template.replace("{window}", self.rate_window)
            .replace("{calibration_window}", self.calibration_window)
            .replace("{calibration_age_range}", f"{self.calibration_age_range_s:g}s")
            .replace("{model}", self.model_label)
            .replace("{variant}", self.variant_label)
            .replace("{namespace}", self.namespace_label)
        )


def duration_s(text: str) -> float:
    """A Prometheus duration such as `90s`, `1m` or `500ms` in seconds (the forms `rate_window` accepts)."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    unit = match.group(1)
    return float(text[: -len(unit)]) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_WINDOW = re.compile(r"^[0-9]+(ms|s|m|h)$")
_DNS_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = re.compile(rf"^([0-9a-fA-F:.]+|{_DNS_LABEL}(\.{_DNS_LABEL})*)$")  # an IPv4/IPv6 address or a DNS name


def _coerce(name: str, raw: Any, origin: str, problems: list[str]) -> Any:
    """A value of the field's type, from YAML (typed) or environment/flags (strings)."""
    kind = str(FIELDS[name].type)
    where = f"{name} (from {origin})"
    if kind == "Mapping[str, str]":
        if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                   for k, v in raw.items()):
            problems.append(f"{where}: must map query names to non-empty PromQL strings, got {str(raw)[:80]!r}")
            return None
        return dict(raw)
    if raw is None:
        return None
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return raw.lower() in ("1", "true", "yes", "on")
        problems.append(f"{where}: must be true or false, got {raw!r}")
        return None
    if kind == "int":
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        except (TypeError, ValueError):
            problems.append(f"{where}: must be an integer, got {raw!r}")
            return None
    if kind == "float":
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        except (TypeError, ValueError):
            problems.append(f"{where}: must be a number, got {raw!r}")
            return None
        if not math.isfinite(value):
            problems.append(f"{where}: must be finite, got {raw!r}")
            return None
        return value
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        problems.append(f"{where}: must be a string, got {raw!r}")
        return None
    return str(raw)


def load(
    path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build and validate the configuration; raises ConfigError listing every problem."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    doc: Any = {}
    if path:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append(f"--config {path}: cannot read YAML: {exc}")
            doc = {}
        if not isinstance(doc, Mapping):
            problems.append(f"--config {path}: must be a mapping of field: value, got {type(doc).__name__}")
            doc = {}
        for key, raw in doc.items():
            name = str(key).replace("-", "_")
            if name not in FIELDS:
                problems.append(f"{key} (from {path}): unknown field (known: {', '.join(sorted(FIELDS))})")
                continue
            value = _coerce(name, raw, path, problems)
            if value is not None:
                values[name] = value
    env = os.environ if environ is None else environ
    for name in FIELDS:
        var = f"GPUMIX_{name.upper()}"
        if var not in env:
            continue
        raw: Any = env[var]
        if name == "queries":
            # A mapping in one variable: JSON or YAML (JSON is YAML). It overrides single queries of the
            # file's mapping by name rather than replacing it.
            try:
                raw = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                problems.append(f"queries (from ${var}): not JSON or YAML: {exc}")
                continue
        value = _coerce(name, raw, f"${var}", problems)
        if value is not None:
            values[name] = {**values.get(name, {}), **value} if name == "queries" else value
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        value = _coerce(name, raw, f"--{name.replace('_', '-')}", problems)
        if value is not None:
            values[name] = value
    config = Config(**values)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def _url_problems(name: str, url: str, schemes: tuple[str, ...]) -> list[str]:
    """What is wrong with a server URL: scheme, host, port 1..65535 (checked here, not at first use)."""
    want = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        return [f"{name}: port must be a number in 1..65535, in {url!r} ({exc})"]
    if parts.scheme not in schemes:
        return [f"{name}: must be a URL starting with {want}, got {url!r}"]
    if parts.scheme == "unix":
        return [] if parts.path else [f"{name}: unix:// needs a socket path, got {url!r}"]
    problems = []
    if not parts.hostname or any(ch.isspace() for ch in url):
        problems.append(f"{name}: no host in {url!r}")
    if port is not None and not 1 <= port <= 65535:
        problems.append(f"{name}: port must be 1..65535, got {port} in {url!r}")
    if parts.scheme.startswith("redis"):
        db = parts.path.strip("/")
        if db and not db.isdigit():
            problems.append(f"{name}: the path must be a database number like /0, got {parts.path!r}")
    return problems


def validate(c: Config) -> list[str]:
    problems: list[str] = []
    if c.prometheus is None:
        problems.append("prometheus: required (--prometheus URL or GPUMIX_PROMETHEUS)")
    else:
        problems += _url_problems("prometheus", c.prometheus, ("http", "https"))
    if c.redis is not None:
        problems += _url_problems("redis", c.redis, ("redis", "rediss", "unix"))
    if c.kube_api is not None:
        problems += _url_problems("kube_api", c.kube_api, ("http", "https"))
    if not _HOST.match(c.bind):
        problems.append(f"bind: must be an IP address or host name, got {c.bind!r}")
    if c.inventory is None and not c.kubernetes:
        problems.append("inventory: required unless kubernetes is true (--inventory FILE)")
    if c.inventory is not None and not Path(c.inventory).is_file():
        problems.append(f"inventory: no such file {c.inventory!r}")
    if c.profiles is None and c.redis is None:
        problems.append("profiles: give a directory (--profiles DIR) or a Redis holding profiles (--redis URL)")
    if c.profiles is not None and not Path(c.profiles).is_dir():
        problems.append(f"profiles: no such directory {c.profiles!r}")
    for port in ("grpc_port", "http_port"):
        value = getattr(c, port)
        if not 0 <= value <= 65535:
            problems.append(f"{port}: must be 0..65535 (0 picks a free port), got {value}")
    if c.grpc_port == c.http_port and c.grpc_port != 0:
        problems.append(f"grpc_port and http_port: both {c.grpc_port}")
    for name in ("interval", "fast_interval", "drain_time", "prometheus_timeout", "max_sample_age", "scrape_interval",
                 "target", "solver_time_limit"):
        if getattr(c, name) <= 0:
            problems.append(f"{name}: must be > 0, got {getattr(c, name)}")
    if not (math.isfinite(c.forecast_horizon) and c.forecast_horizon >= 0):
        problems.append(f"forecast_horizon: must be >= 0 seconds (0: off), got {c.forecast_horizon}")
    if not (math.isfinite(c.forecast_trend) and c.forecast_trend >= 0):
        problems.append(f"forecast_trend: must be >= 0 seconds (0: off), got {c.forecast_trend}")
    if not 0 < c.length_blind_share <= 1:
        problems.append(f"length_blind_share: must be in (0, 1] (1: off), got {c.length_blind_share}")
    if c.cold_start < 0:
        problems.append(f"cold_start: must be >= 0 seconds, got {c.cold_start}")
    if c.stale_after < 0:
        problems.append(f"stale_after: must be >= 0 (0: four intervals), got {c.stale_after}")
    elif 0 < c.stale_after < c.interval:
        problems.append(f"stale_after: {c.stale_after} s is shorter than one interval ({c.interval} s)")
    if not 0 < c.utilization <= 1:
        problems.append(f"utilization: must be in (0, 1], got {c.utilization}")
    if c.churn < 0:
        problems.append(f"churn: must be >= 0, got {c.churn}")
    if not 0 <= c.hysteresis_margin < 1:
        problems.append(f"hysteresis_margin: must be in [0, 1), got {c.hysteresis_margin}")
    for name in ("rate_window", "calibration_window"):
        if not _WINDOW.match(getattr(c, name)):
            problems.append(f"{name}: must be a Prometheus duration like 1m or 30s, got {getattr(c, name)!r}")
    if c.calibration_interval <= 0:
        problems.append(f"calibration_interval: must be > 0, got {c.calibration_interval}")
    for problem in c.calibration_settings().problems():
        for option, setting in CALIBRATION_OPTIONS.items():
            problem = re.sub(rf"\b{setting}\b", option, problem)
        problems.append(problem)
    if c.metrics not in DEFAULT_QUERIES:
        problems.append(f"metrics: must be one of {', '.join(DEFAULT_QUERIES)}, got {c.metrics!r}")
    for name in c.queries:
        if name not in QUERY_NAMES:
            problems.append(f"queries.{name}: unknown query (known: {', '.join(sorted(QUERY_NAMES))})")
    for name in ("model_label", "variant_label", "namespace_label"):
        if not _LABEL.match(getattr(c, name)):
            problems.append(f"{name}: not a Prometheus label name: {getattr(c, name)!r}")
    if (c.tls_cert is None) != (c.tls_key is None):
        problems.append("tls_cert and tls_key: give both or neither")
    if c.tls_client_ca is not None and c.tls_cert is None:
        problems.append("tls_client_ca: mutual TLS needs tls_cert and tls_key too")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        value = getattr(c, name)
        if value is not None and not Path(value).is_file():
            problems.append(f"{name}: no such file {value!r}")
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append(f"log_level: must be debug, info, warning or error, got {c.log_level!r}")
    return problems
