"""What one replica can do, from public specs: the accelerator catalog (GPUs and MIG slices), model specs,
and the AutoFit-style analytical model of a vLLM-like server.

The model (Tardieu & Zhu, "AutoFit", KubeCon NA 2024; the linear-decode law is also llm-d inferno's
ITL = α + β·batch):

- Decode is memory-bound. One decode step reads every weight once and, per running sequence, its KV cache:
      step(B, S) = c + a_seq·B + a_tok·S
  with c = weight bytes / (bandwidth·η_bw) + per-step overhead, a_tok = KV bytes per token / (bandwidth·η_bw)
  (S = KV tokens held by the batch), and a_seq = 2·parameters FLOPs / (compute·η_flops), the compute floor
  of one more sequence. For a batch of sequences of mean context ℓ that is TPOT(B) = a·B + c with
  a = a_seq + a_tok·ℓ.
- Prefill is compute-bound: 2·parameters FLOPs per prompt token, plus the attention's n² term. As in vLLM
  V1 (chunked prefill), an iteration carries at most max_batched_tokens tokens: its decode tokens first,
  then prompt chunks, so a long prompt stalls running sequences a little on many steps, not a lot on one.
- The knee: the KV cache holds (memory·util − weights − activation reserve) / KV bytes per token tokens;
  the batch cannot grow past that (or past max_num_seqs) and further requests queue.

The analytic model gets the shape right but not the scale (AutoFit's own finding), hence `Calibration`:
bandwidth and compute efficiencies and a per-step overhead. The defaults were chosen so the simulated
A100 and A40 land near AIBrix's published llama2-7b profiles (see bench/bench_calibration.py).

Pure: no I/O, no clock.

Sources (public specs; numbers are dense, i.e. without structured sparsity):
[v100] NVIDIA V100 datasheet: 16/32 GB HBM2, 900 GB/s, 125 TFLOPS tensor (SXM2).
[t4]   NVIDIA T4 datasheet: 16 GB GDDR6, 320 GB/s (300+), 65 TFLOPS FP16 mixed precision.
[a10]  NVIDIA A10 datasheet: 24 GB GDDR6, 600 GB/s, 125 TFLOPS FP16 tensor (250 sparse).
[a10g] Baseten, "NVIDIA A10 vs A10G for ML model inference": same 24 GB / 600 GB/s as A10, lower tensor
       throughput (≈70 TFLOPS FP16 dense as commonly reported for AWS G5).
[l4]   NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, 242 TFLOPS FP16 tensor with sparsity (121 dense).
[l20]  NVIDIA L20 (AD102, Nov 2023): 48 GB GDDR6, 864 GB/s (topcpu.net / technical.city spec pages),
       ≈119.5 TFLOPS FP16 tensor dense.
[l40s] NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, 733 TFLOPS FP16 tensor sparse (366 dense).
[a40]  NVIDIA A40 datasheet: 48 GB GDDR6, 696 GB/s, 149.7 TFLOPS FP16/BF16 tensor (299.4 sparse).
[a100] NVIDIA A100 datasheet: 40 GB HBM2 1,555 GB/s / 80 GB HBM2e 2,039 GB/s (SXM), 312 TFLOPS BF16.
[h100] NVIDIA H100 datasheet: 80 GB HBM3, 3.35 TB/s (SXM), 989 TFLOPS BF16 dense (1,979 sparse).
[mig]  NVIDIA MIG user guide: A100 has 7 compute slices and 8 memory slices; profiles 1g.5gb (1/7 SM,
       1/8 memory), 2g.10gb (2/7, 2/8), 3g.20gb (3/7, 4/8), 4g.20gb (4/7, 4/8), 7g.40gb (7/7, 8/8);
       A100-80GB and H100-80GB: 1g.10gb, 1g.20gb (1/7, 2/8), 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb. A slice
       gets memory bandwidth in proportion to its memory slices. Pods request `nvidia.com/mig-<profile>`.
[cost] Indicative on-demand $/h per GPU: Mélange (Griggs et al. 2024) uses L4 0.70, A10G 1.01,
       A100-80GB 3.67, H100 7.52; the others are typical public-cloud list prices (GCP/AWS/Lambda,
       2024) rounded, for relative comparison only. A MIG slice is priced at its compute share.
[llama] Model configs from the Hugging Face `config.json` of each model: Llama-2-7b (32 layers, hidden
       4096, 32 KV heads), Llama-2-70b (80 layers, hidden 8192, 8 KV heads, GQA), Meta-Llama-3-8B
       (32 layers, hidden 4096, 8 KV heads), deepseek-coder-6.7b-base (32 layers, hidden 4096, 32 KV
       heads); head dim 128 in all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

GB = 1e9


class PerfModelError(ValueError):
    pass


@dataclass(frozen=True)
class Accelerator:
    """A GPU, or a MIG slice of one (then `parent` names the GPU and the shares are below 1)."""

    name: str
    memory_gb: float
    bandwidth_gbps: float  # GB/s
    fp16_tflops: float  # dense FP16/BF16 tensor throughput
    cost_per_hour: float  # indicative, $/h
    resource: str = "nvidia.com/gpu"
    parent: str | None = None
    sm_share: float = 1.0
    memory_share: float = 1.0


def _gpu(name: str, memory_gb: float, bandwidth: float, tflops: float, cost: float) -> Accelerator:
    return Accelerator(name, memory_gb, bandwidth, tflops, cost)


_GPUS: tuple[Accelerator, ...] = (
    _gpu("V100", 32, 900, 125, 2.48),  # [v100] [cost] 32 GB: a 7B model in FP16 does not fit 16 GB with a KV cache
    _gpu("V100-16GB", 16, 900, 125, 2.48),  # [v100]
    _gpu("T4", 16, 320, 65, 0.35),  # [t4]
    _gpu("A10", 24, 600, 125, 0.75),  # [a10]
    _gpu("A10G", 24, 600, 70, 1.01),  # [a10g] [cost: Mélange]
    _gpu("L4", 24, 300, 121, 0.70),  # [l4] [cost: Mélange]
    _gpu("L20", 48, 864, 119.5, 0.90),  # [l20]
    _gpu("L40S", 48, 864, 366, 1.80),  # [l40s]
    _gpu("A40", 48, 696, 149.7, 1.10),  # [a40]
    _gpu("A100-40GB", 40, 1555, 312, 2.93),  # [a100]
    _gpu("A100-80GB", 80, 2039, 312, 3.67),  # [a100] [cost: Mélange]
    _gpu("H100-80GB", 80, 3350, 989, 7.52),  # [h100] [cost: Mélange]
)

# (parent, profile, compute sevenths, memory eighths) — [mig]
_MIG_PROFILES: tuple[tuple[str, str, int, int], ...] = (
    ("A100-40GB", "1g.5gb", 1, 1),
    ("A100-40GB", "2g.10gb", 2, 2),
    ("A100-40GB", "3g.20gb", 3, 4),
    ("A100-40GB", "4g.20gb", 4, 4),
    ("A100-40GB", "7g.40gb", 7, 8),
    ("A100-80GB", "1g.10gb", 1, 1),
    ("A100-80GB", "1g.20gb", 1, 2),
    ("A100-80GB", "2g.20gb", 2, 2),
    ("A100-80GB", "3g.40gb", 3, 4),
    ("A100-80GB", "4g.40gb", 4, 4),
    ("A100-80GB", "7g.80gb", 7, 8),
    ("H100-80GB", "1g.10gb", 1, 1),
    ("H100-80GB", "1g.20gb", 1, 2),
    ("H100-80GB", "2g.20gb", 2, 2),
    ("H100-80GB", "3g.40gb", 3, 4),
    ("H100-80GB", "4g.40gb", 4, 4),
    ("H100-80GB", "7g.80gb", 7, 8),
)


def _mig(parent: Accelerator, profile: str, sevenths: int, eighths: int) -> Accelerator:
    sm, mem = sevenths / 7.0, eighths / 8.0
    return Accelerator(
        name=f"{parent.name}/{profile}",
        memory_gb=parent.memory_gb * mem,
        bandwidth_gbps=parent.bandwidth_gbps * mem,
        fp16_tflops=parent.fp16_tflops * sm,
        cost_per_hour=round(parent.cost_per_hour * sm, 4),
        resource=f"nvidia.com/mig-{profile}",
        parent=parent.name,
        sm_share=sm,
        memory_share=mem,
    )


def _build_catalog() -> dict[str, Accelerator]:
    gpus = {g.name: g for g in _GPUS}
    catalog = dict(gpus)
    for parent, profile, sevenths, eighths in _MIG_PROFILES:
        mig = _mig(gpus[parent], profile, sevenths, eighths)
        catalog[mig.name] = mig
    return catalog


CATALOG: dict[str, Accelerator] = _build_catalog()
# Common spellings people put in Deployment names and node labels.
ALIASES: dict[str, str] = {"A100": "A100-80GB", "H100": "H100-80GB", "A100-40G": "A100-40GB",
                           "A100-80G": "A100-80GB", "H100-80G": "H100-80GB"}


def accelerator(name: str) -> Accelerator:
    key = ALIASES.get(name, name)
    found = CATALOG.get(key) or next((a for k, a in CATALOG.items() if k.lower() == key.lower()), None)
    if found is None:
        raise PerfModelError(f"accelerator {name!r}: not in the catalog; known: {', '.join(sorted(CATALOG))}")
    return found


def mig_slices(parent: str) -> list[Accelerator]:
    """The MIG profiles of one GPU, smallest first."""
    gpu = accelerator(parent)
    return sorted((a for a in CATALOG.values() if a.parent == gpu.name), key=lambda a: (a.sm_share, a.memory_share))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    parameters_b: float  # billions
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    bytes_per_param: float = 2.0  # FP16/BF16 weights
    kv_bytes_per_value: float = 2.0  # FP16 KV cache
    max_context: int = 4096

    @property
    def weight_bytes(self) -> float:
        return self.parameters_b * 1e9 * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        # K and V, per layer, per KV head
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value

    @property
    def flops_per_token(self) -> float:
        return 2.0 * self.parameters_b * 1e9


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama2-7b", 6.74, 32, 4096, 32, 128, max_context=4096),  # [llama]
        ModelSpec("deepseek-coder-7b", 6.74, 32, 4096, 32, 128, max_context=16384),  # [llama] 6.7b-base
        ModelSpec("llama3-8b", 8.03, 32, 4096, 8, 128, max_context=8192),  # [llama]
        ModelSpec("llama2-70b", 69.0, 80, 8192, 8, 128, max_context=4096),  # [llama]
    )
}


def model_spec(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    raise PerfModelError(f"model {name!r}: no spec; known: {', '.join(sorted(MODELS))}")


@dataclass(frozen=True)
class Calibration:
    """Where the hardware falls short of its datasheet. Defaults fit AIBrix's simulated A100/A40 llama2-7b
    profiles within the ratios reported in BENCHMARKS.md."""

    bandwidth_efficiency: float = 0.65
    compute_efficiency: float = 0.55
    step_overhead_s: float = 0.002  # scheduler, sampling, kernel launches per decode step
    prefill_overhead_s: float = 0.005  # per prefill pass
    memory_utilization: float = 0.9  # vLLM's gpu_memory_utilization
    activation_reserve_gb: float = 1.0  # activations and CUDA graphs, outside the KV cache
    max_num_seqs: int = 256  # vLLM's default cap on concurrent sequences
    max_batched_tokens: int = 2048  # vLLM's chunked-prefill token budget per iteration

    def validate(self) -> None:
        problems = []
        for name in ("bandwidth_efficiency", "compute_efficiency", "memory_utilization"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                problems.append(f"calibration.{name}: must be in (0, 1], got {v}")
        for name in ("step_overhead_s", "prefill_overhead_s", "activation_reserve_gb"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                problems.append(f"calibration.{name}: must be finite and >= 0, got {v}")
        if self.max_num_seqs < 1:
            problems.append(f"calibration.max_num_seqs: must be >= 1, got {self.max_num_seqs}")
        if self.max_batched_tokens <= self.max_num_seqs:
            problems.append(f"calibration.max_batched_tokens: must exceed max_num_seqs, got {self.max_batched_tokens}")
        if problems:
            raise PerfModelError("; ".join(problems))


@dataclass(frozen=True)
class PerfModel:
    """One replica of `model` on `accelerator` (with `gpus` of them, tensor-parallel)."""

    model: str
    accelerator: str
    c: float  # seconds per decode step, fixed part (weights + overhead)
    a_seq: float  # seconds per decode step per running sequence (compute floor)
    a_tok: float  # seconds per decode step per KV token held
    prefill_per_token: float  # seconds per prompt token (linear part)
    prefill_quadratic: float  # seconds per prompt token² (attention)
    prefill_overhead: float  # seconds per prefill pass
    kv_capacity_tokens: int  # KV-cache tokens the replica holds (0: the model does not fit)
    max_num_seqs: int
    max_batched_tokens: int = 2048

    @property
    def fits(self) -> bool:
        return self.kv_capacity_tokens > 0

    def step_time(self, batch: int, kv_tokens: float) -> float:
        """One decode step with `batch` running sequences holding `kv_tokens` KV tokens in all."""
        return self.c + self.a_seq * batch + self.a_tok * kv_tokens

    def tpot(self, batch: int, context_tokens: float) -> float:
        """TPOT = a·B + c for a batch of B sequences of mean context `context_tokens`."""
        return self.c + self.a(context_tokens) * batch

    def a(self, context_tokens: float) -> float:
        return self.a_seq + self.a_tok * context_tokens

    def prefill_time(self, prompt_tokens: float) -> float:
        n = prompt_tokens
        return self.prefill_overhead + self.prefill_per_token * n + self.prefill_quadratic * n * n

    def prefill_chunk_time(self, start: float, tokens: float) -> float:
        """Prompt tokens [start, start + tokens) of one sequence, without the per-pass overhead."""
        end = start + tokens
        return self.prefill_per_token * tokens + self.prefill_quadratic * (end * end - start * start)

    def knee(self, context_tokens: float) -> int:
        """Max concurrent sequences of this context length: KV capacity, then max_num_seqs."""
        if context_tokens <= 0:
            return self.max_num_seqs
        return max(0, min(self.max_num_seqs, int(self.kv_capacity_tokens // context_tokens)))

    def max_batch_for_tpot(self, tpot_slo: float, context_tokens: float) -> int:
        """Largest batch whose TPOT meets the SLO, capped by the knee (0: not even one sequence)."""
        slope = self.a(context_tokens)
        if tpot_slo < self.c + slope:
            return 0
        by_slo = int((tpot_slo - self.c) / slope) if slope > 0 else self.max_num_seqs
        return min(by_slo, self.knee(context_tokens))

    def scaled(self, decode: float = 1.0, prefill: float = 1.0) -> PerfModel:
        """The same shape at another scale: AutoFit's 'a few measured points fix the scale'."""
        return replace(
            self,
            c=self.c * decode,
            a_seq=self.a_seq * decode,
            a_tok=self.a_tok * decode,
            prefill_per_token=self.prefill_per_token * prefill,
            prefill_quadratic=self.prefill_quadratic * prefill,
        )


def perf_model(
    model: str | ModelSpec,
    accel: str | Accelerator,
    calibration: Calibration | None = None,
    gpus: int = 1,
) -> PerfModel:
    """The analytical model of one replica. With `gpus` > 1 (tensor parallel) bandwidth, compute and memory
    add up; communication costs are folded into the efficiencies."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    acc = accel if isinstance(accel, Accelerator) else accelerator(accel)
    cal = calibration or Calibration()
    cal.validate()
    if gpus < 1:
        raise PerfModelError(f"gpus: must be >= 1, got {gpus}")
    bandwidth = acc.bandwidth_gbps * GB * gpus * cal.bandwidth_efficiency
    compute = acc.fp16_tflops * 1e12 * gpus * cal.compute_efficiency
    memory = acc.memory_gb * GB * gpus
    free = memory * cal.memory_utilization - spec.weight_bytes - cal.activation_reserve_gb * GB * gpus
    kv_tokens = max(0, int(free // spec.kv_bytes_per_token))
    # Causal attention over n prompt tokens: ≈ 2·layers·hidden·n² FLOPs (QKᵀ and AV, half masked).
    attention_flops_per_token2 = 2.0 * spec.layers * spec.hidden
    return PerfModel(
        model=spec.name,
        accelerator=acc.name,
        c=spec.weight_bytes / bandwidth + cal.step_overhead_s,
        a_seq=spec.flops_per_token / compute,
        a_tok=spec.kv_bytes_per_token / bandwidth,
        prefill_per_token=spec.flops_per_token / compute,
        prefill_quadratic=attention_flops_per_token2 / compute,
        prefill_overhead=cal.prefill_overhead_s,
        kv_capacity_tokens=kv_tokens,
        max_num_seqs=cal.max_num_seqs,
        max_batched_tokens=cal.max_batched_tokens,
    )


@dataclass(frozen=True)
class Fit:
    """AutoFit's recommendation for one server."""

    accelerator: str
    max_batch: int
    tpot: float  # at the target concurrency (or at max_batch when it falls short)
    meets_slo: bool


def right_size(
    model: str | ModelSpec,
    concurrency: int,
    tpot_slo: float,
    context_tokens: float,
    candidates: Iterable[str] | None = None,
    calibration: Calibration | None = None,
) -> Fit:
    """The smallest accelerator (by cost) meeting the TPOT SLO at the target concurrency; if none does, the
    largest (by batch it sustains)."""
    names = list(candidates) if candidates is not None else list(CATALOG)
    if not names:
        raise PerfModelError("candidates: empty")
    if concurrency < 1:
        raise PerfModelError(f"concurrency: must be >= 1, got {concurrency}")
    fits: list[tuple[Accelerator, PerfModel]] = []
    for n in names:
        acc = accelerator(n)
        pm = perf_model(model, acc, calibration)
        if pm.fits:
            fits.append((acc, pm))
    if not fits:
        raise PerfModelError(f"model {model!r} fits on none of {names}")
    ok = [(acc, pm) for acc, pm in fits if pm.max_batch_for_tpot(tpot_slo, context_tokens) >= concurrency]
    if ok:
        acc, pm = min(ok, key=lambda t: (t[0].cost_per_hour, t[0].name))
        batch = pm.max_batch_for_tpot(tpot_slo, context_tokens)
        return Fit(acc.name, batch, pm.tpot(concurrency, context_tokens), True)
    acc, pm = max(fits, key=lambda t: (t[1].max_batch_for_tpot(tpot_slo, context_tokens), -t[0].cost_per_hour))
    batch = pm.max_batch_for_tpot(tpot_slo, context_tokens)
    return Fit(acc.name, batch, pm.tpot(max(batch, 1), context_tokens), False)
