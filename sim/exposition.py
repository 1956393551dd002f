"""What a scrape of the simulated fleet returns, as samples: per serving or draining pod the vLLM V1 series
(labelled model_name, namespace, pod, variant) — vLLM 0.12's names, the per-token latency as
`vllm:inter_token_latency_seconds` — and kube-state-metrics' Deployment replica gauges.

The replay scrapes these into sim/promsim.py's TSDB; `sim/realtime.py` exposes the same pods over HTTP for a
real Prometheus. A starting pod's vLLM server is not up yet, so it exports nothing (as in realtime).
"""

from __future__ import annotations

from collections.abc import Mapping

from sim.engine import Snapshot
from sim.promsim import Sample
from sim.realtime import PodStats


def _histogram(name: str, labels: Mapping[str, str], bounds: tuple[float, ...], counts: list[int],
               total: int) -> list[Sample]:
    out = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append(Sample(f"{name}_bucket", {**labels, "le": repr(float(bound))}, running))
    out.append(Sample(f"{name}_bucket", {**labels, "le": "+Inf"}, total))
    return out


def fleet_samples(model: str, namespace: str, snap: Snapshot, pods: Mapping[str, PodStats]) -> list[Sample]:
    out: list[Sample] = []
    for r in snap.replicas:
        if r.state not in ("serving", "draining"):
            continue
        lab = {"model_name": model, "namespace": namespace, "pod": r.pod, "variant": r.variant}
        stats = pods.get(r.pod) or PodStats(r.variant)
        out += [
            Sample("vllm:num_requests_running", lab, r.running),
            Sample("vllm:num_requests_waiting", lab, r.waiting),
            Sample("vllm:kv_cache_usage_perc", lab, r.kv_usage),
            Sample("vllm:prompt_tokens_total", lab, r.prompt_tokens),
            Sample("vllm:generation_tokens_total", lab, r.generation_tokens),
        ]
        for reason, n in sorted((dict(stats.success) or {"length": 0}).items()):
            out.append(Sample("vllm:request_success_total", {**lab, "finished_reason": reason}, n))
        for name, h in (("vllm:request_prompt_tokens", stats.prompt_tokens),
                        ("vllm:request_generation_tokens", stats.generation_tokens),
                        ("vllm:time_to_first_token_seconds", stats.ttft),
                        ("vllm:inter_token_latency_seconds", stats.tpot),
                        ("vllm:e2e_request_latency_seconds", stats.e2e)):
            out += _histogram(name, lab, h.bounds, h.counts, h.count)
    for vname, vs in snap.variants.items():
        lab = {"namespace": namespace, "deployment": vname}
        out.append(Sample("kube_deployment_status_replicas", lab, vs.replicas))
        out.append(Sample("kube_deployment_status_replicas_ready", lab, vs.ready))
    return out
