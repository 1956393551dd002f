"""A test exporter a real Prometheus scrapes: realistic vLLM (V1 or V0 names), DCGM and kube-state-metrics
exposition for a small fleet whose load the test sets. Counters and histograms grow with time at the set
rates, like a real server's; gauges are what the test says. It runs an http.server in a thread, so it does
not depend on the test's event loop.

The V1 series follow vllm/v1/metrics/loggers.py (PrometheusStatLogger) of the chosen release:
- "0.10" (v0.10.0/v0.10.1): TPOT only as vllm:time_per_output_token_seconds; KV cache under both
  vllm:kv_cache_usage_perc and the deprecated vllm:gpu_cache_usage_perc;
- "0.12" (current: v0.12 on): vllm:inter_token_latency_seconds only (time_per_output_token_seconds hidden
  behind --show-hidden-metrics-for-version, "TODO: remove in 0.13.0"); gpu_cache_usage_perc removed.
vllm:request_success_total carries finished_reason = stop | length | abort (FinishReason); aborted
requests are exported too, and gpumix must not count them as served.
DCGM: full GPUs report DCGM_FI_DEV_GPU_UTIL (%); MIG slices (variant names containing "mig") report only
DCGM_FI_PROF_GR_ENGINE_ACTIVE (a ratio) with GPU_I_ID / GPU_I_PROFILE labels, as dcgm-exporter does.
"""

from __future__ import annotations

import bisect
import random
import string
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# vLLM's request length histogram buckets (1-2-5 series up to the model length).
LENGTH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


def pod_name(deployment: str, index: int = 0) -> str:
    """`<deployment>-<10 hex>-<5 alnum>`, stable per (deployment, index)."""
    rnd = random.Random(f"{deployment}#{index}")
    hexpart = "".join(rnd.choice("0123456789abcdef") for _ in range(10))
    tail = "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{deployment}-{hexpart}-{tail}"


@dataclass
class Pod:
    namespace: str
    model: str
    variant: str
    name: str
    rps: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    prompt_tokens: int = 500  # every request of this pod has these lengths
    output_tokens: int = 100
    gpu_util: float = 50.0
    completed: float = 0.0
    last: float = field(default_factory=time.time)

    def advance(self, now: float) -> None:
        self.completed += self.rps * max(0.0, now - self.last)
        self.last = now


VLLM_RELEASES = ("0.10", "0.12")
ABORTED_FRACTION = 0.05  # aborted requests per completed one, exported under finished_reason="abort"


class FleetExporter:
    def __init__(self, version: str = "v1", vllm: str = "0.12") -> None:
        if vllm not in VLLM_RELEASES:
            raise ValueError(f"vllm: one of {VLLM_RELEASES}, got {vllm!r}")
        self.version = version
        self.vllm = vllm
        self.pods: list[Pod] = []
        self.deployments: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.raw_extra = ""  # verbatim lines, e.g. NaN samples
        self.scrapes = 0
        self._server: ThreadingHTTPServer | None = None

    # -- what the test sets

    def set_variant(self, namespace: str, model: str, variant: str, replicas: int, rps: float = 0.0,
                    waiting: float = 0.0, prompt_tokens: int = 500, output_tokens: int = 100) -> None:
        """`replicas` pods sharing `rps` and `waiting`; 0 replicas keeps no pod (a waiting > 0 then shows up
        on a pod-less series, as a gateway queue would)."""
        now = time.time()
        with self.lock:
            for p in self.pods:
                p.advance(now)
            kept = [p for p in self.pods if not (p.namespace == namespace and p.variant == variant)]
            old = [p for p in self.pods if p.namespace == namespace and p.variant == variant]
            n = max(replicas, 1 if waiting > 0 else 0)
            pods = []
            for i in range(n):
                pod = old[i] if i < len(old) else Pod(namespace, model, variant, pod_name(variant, i))
                pod.rps = rps / n
                pod.waiting = waiting / n
                pod.running = min(64.0, rps / n * 2)
                pod.prompt_tokens, pod.output_tokens = prompt_tokens, output_tokens
                pods.append(pod)
            self.pods = kept + pods
            self.deployments[(namespace, variant)] = replicas

    # -- exposition

    def text(self) -> str:
        now = time.time()
        with self.lock:
            for p in self.pods:
                p.advance(now)
            lines: list[str] = []
            lines += self._vllm()
            lines += self._dcgm()
            lines += self._kube()
            if self.raw_extra:
                lines.append(self.raw_extra.rstrip("\n"))
            self.scrapes += 1
        return "\n".join(lines) + "\n"

    def _labels(self, p: Pod, **extra: str) -> str:
        labels = {"model_name": p.model, "namespace": p.namespace, "pod": p.name, "variant": p.variant}
        if self.version == "v1":
            labels["engine"] = "0"
        labels.update(extra)
        return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"

    def _vllm(self) -> list[str]:
        if self.version == "v0":
            kv_names = ["vllm:gpu_cache_usage_perc"]
        elif self.vllm == "0.10":
            kv_names = ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]
        else:
            kv_names = ["vllm:kv_cache_usage_perc"]
        out = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            *(f"vllm:num_requests_running{self._labels(p)} {p.running}" for p in self.pods),
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            *(f"vllm:num_requests_waiting{self._labels(p)} {p.waiting}" for p in self.pods),
        ]
        for kv in kv_names:
            out += [f"# HELP {kv} KV-cache usage. 1 means 100 percent usage.", f"# TYPE {kv} gauge",
                    *(f"{kv}{self._labels(p)} {min(1.0, p.running / 64)}" for p in self.pods)]
        out += [
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for p in self.pods:
            out.append(f"vllm:request_success_total{self._labels(p, finished_reason='stop')} {p.completed * 0.9}")
            out.append(f"vllm:request_success_total{self._labels(p, finished_reason='length')} {p.completed * 0.1}")
            if self.version == "v1":
                out.append(f"vllm:request_success_total{self._labels(p, finished_reason='abort')} "
                           f"{p.completed * ABORTED_FRACTION}")
        for name, attr in (("prompt_tokens", "prompt_tokens"), ("generation_tokens", "output_tokens")):
            out += [f"# HELP vllm:{name}_total Number of {name.replace('_', ' ')} processed.",
                    f"# TYPE vllm:{name}_total counter"]
            out += [f"vllm:{name}_total{self._labels(p)} {p.completed * getattr(p, attr)}" for p in self.pods]
        out += self._histogram("vllm:request_prompt_tokens", LENGTH_BUCKETS, lambda p: p.prompt_tokens,
                               "Number of prefill tokens processed.")
        out += self._histogram("vllm:request_generation_tokens", LENGTH_BUCKETS, lambda p: p.output_tokens,
                               "Number of generation tokens processed.")
        out += self._histogram("vllm:time_to_first_token_seconds", TTFT_BUCKETS, lambda p: 0.05 + p.prompt_tokens / 2e4,
                               "Histogram of time to first token in seconds.")
        tpot_name = ("vllm:inter_token_latency_seconds" if self.version == "v1" and self.vllm != "0.10"
                     else "vllm:time_per_output_token_seconds")
        out += self._histogram(tpot_name, TPOT_BUCKETS, lambda p: 0.02 + p.running / 2e3,
                               "Histogram of inter-token latency in seconds.")
        return out

    def _histogram(self, name: str, buckets: tuple[float, ...], value: object, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for p in self.pods:
            v = value(p)  # type: ignore[operator]
            first = bisect.bisect_left(buckets, v)
            for i, le in enumerate(buckets):
                count = p.completed if i >= first else 0.0
                out.append(f"{name}_bucket{self._labels(p, le=str(float(le)))} {count}")
            out.append(f"{name}_bucket{self._labels(p, le='+Inf')} {p.completed}")
            out.append(f"{name}_sum{self._labels(p)} {p.completed * v}")
            out.append(f"{name}_count{self._labels(p)} {p.completed}")
        return out

    def _dcgm(self) -> list[str]:
        out = ["# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).", "# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
        mig = []
        for i, p in enumerate(self.pods):
            gpu = "A100-SXM4-40GB" if "a100" in p.variant else "A40"
            labels = (f'gpu="0",UUID="GPU-{i:08d}-0000-0000-0000-000000000000",modelName="NVIDIA {gpu}",'
                      f'Hostname="node-{i}",namespace="{p.namespace}",pod="{p.name}",container="vllm"')
            if "mig" in p.variant:
                mig.append(f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{labels},GPU_I_ID="1",GPU_I_PROFILE="3g.20gb"}} '
                           f"{p.gpu_util / 100}")
            else:
                out.append(f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {p.gpu_util}")
        out += ["# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.",
                "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge", *mig]
        return out

    def _kube(self) -> list[str]:
        out = ["# HELP kube_deployment_status_replicas The number of replicas per deployment.",
               "# TYPE kube_deployment_status_replicas gauge"]
        out += [f'kube_deployment_status_replicas{{namespace="{ns}",deployment="{d}"}} {n}'
                for (ns, d), n in self.deployments.items()]
        out += ["# HELP kube_deployment_status_replicas_ready The number of ready replicas per deployment.",
                "# TYPE kube_deployment_status_replicas_ready gauge"]
        out += [f'kube_deployment_status_replicas_ready{{namespace="{ns}",deployment="{d}"}} {n}'
                for (ns, d), n in self.deployments.items()]
        return out

    # -- serving

    def start(self) -> str:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="exporter").start()
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
