"""AutoFit's published examples against `gpumix webhook`. AutoFit (Tardieu & Zhu, IBM Research, KubeCon NA
2024; see ../shared/reference/models-and-peers.md) right-sizes a vLLM pod at TPOT 50 ms: concurrency 8 →
MIG 1g.20gb, 16 → 3g.40gb, 64 → a full A100. Here every pick is what the webhook's decision
(scaler/webhook.py) patches into an annotated pod, with an A100-80GB and all its MIG slices offered.

1. The recommendation table: llama2-7b (and llama3-8b) at three decode contexts, from the datasheet model
   alone and calibrated by AIBrix's measured A100 rows (data/aibrix, what `--profiles` does with rows).
2. Why it disagrees where it does: the 1g.20gb slice's predicted step time and KV-cache knee.
3. Which calibrations reproduce AutoFit's three picks (bandwidth efficiency swept).
4. The cost of a decision over HTTPS: median round trip of an annotated pod against a pass-through pod on
   the same server, in the same run.

AutoFit's model, lengths and software stack are not published with the example, so no row can be called
"their setup"; the table shows where gpumix agrees and what it would take to agree.

    .venv/bin/python -m bench.bench_webhook [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import write_section
from optimizer.autofit import Predictor, Scale, calibrate_rows
from optimizer.perfmodel import Calibration, accelerator, mig_slices, perf_model
from optimizer.profile import load_benchmark_rows
from scaler.webhook import INPUT_TOKENS, LOAD, MODEL, OUTPUT_TOKENS, TPOT, decide, static_offers

REPO = Path(__file__).resolve().parent.parent
AIBRIX_A100 = REPO / "data" / "aibrix" / "simulator-llama2-7b-a100.jsonl"
OFFERED = [a.name for a in mig_slices("A100-80GB")] + ["A100-80GB"]
AUTOFIT = {8: "1g.20gb", 16: "3g.40gb", 64: "A100-80GB"}  # TPOT 50 ms
CONTEXTS = {512: (384, 256), 1024: (768, 512), 2048: (1536, 1024)}  # decode context → (input, output)


def short(name: str) -> str:
    return name.split("/")[1] if "/" in name else name


def pod(model: str, load: int, lengths: tuple[int, int]) -> dict[str, Any]:
    ann = {MODEL: model, LOAD: str(load), TPOT: "50ms", INPUT_TOKENS: str(lengths[0]),
           OUTPUT_TOKENS: str(lengths[1])}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "vllm-", "annotations": ann},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}


def table() -> tuple[list[str], dict[str, int], dict[str, int]]:
    """The rows; per (model, scale) picks agreeing with AutoFit; disagreements by direction (cost)."""
    offers = static_offers(OFFERED, "bench")
    aibrix, _ = calibrate_rows(load_benchmark_rows(AIBRIX_A100), "llama2-7b", "A100-80GB")
    bases: list[tuple[str, str, dict[str, Scale]]] = [
        ("llama2-7b", "datasheet model (perfmodel defaults)", {}),
        ("llama2-7b", f"AIBrix A100 rows (c×{aibrix.decode_c:.2f}, a×{aibrix.decode_a:.2f})", {"A100-80GB": aibrix}),
        ("llama3-8b", "datasheet model (perfmodel defaults)", {}),
    ]
    lines = ["| model | scale from | context | load 8 | load 16 | load 64 | agrees |", "|---|---|---|---|---|---|---|"]
    agree: dict[str, int] = {}
    direction = {"bigger": 0, "smaller": 0, "aibrix_changed": 0}
    picks: dict[tuple[str, str, int, int], str | None] = {}
    for model, basis, measured in bases:
        for ctx, lengths in CONTEXTS.items():
            cells, hits = [], 0
            for load, want in AUTOFIT.items():
                d = decide(pod(model, load, lengths), offers, lambda _s, m=measured: m)
                got = short(d.pick) if d.pick else d.outcome.value
                picks[(model, basis.split(" (")[0], ctx, load)] = d.pick
                ok = got == want
                hits += ok
                if not ok and d.pick:
                    target = "A100-80GB" if want == "A100-80GB" else f"A100-80GB/{want}"
                    bigger = accelerator(d.pick).cost_per_hour > accelerator(target).cost_per_hour
                    direction["bigger" if bigger else "smaller"] += 1
                cells.append(f"{got}{'' if d.meets_slo else ' (misses)'}{' ✓' if ok else ''}")
            key = f"{model}, {basis.split(' (')[0]}"
            agree[key] = agree.get(key, 0) + hits
            lines.append(f"| {model} | {basis} | {ctx} | {' | '.join(cells)} | {hits}/3 |")
    direction["aibrix_changed"] = sum(
        picks[("llama2-7b", "AIBrix A100 rows", ctx, load)] != picks[("llama2-7b", "datasheet model", ctx, load)]
        for ctx in CONTEXTS for load in AUTOFIT)
    return lines, agree, direction


def why() -> list[str]:
    lines = ["| slice | context | step c (ms) | a per sequence (ms) | KV knee (sequences) | max batch ≤ 50 ms |",
             "|---|---|---|---|---|---|"]
    pred = Predictor("llama2-7b", Scale.analytic())
    for name in ("A100-80GB/1g.20gb", "A100-80GB/3g.40gb"):
        for ctx in CONTEXTS:
            a, c, knee = pred.line(name, ctx)
            p = pred.predict(name, load=8, tpot_slo=0.05, context_tokens=ctx)
            lines.append(f"| {short(name)} | {ctx} | {c * 1000:.1f} | {a * 1000:.2f} | {knee} | {p.max_batch} |")
    pm = perf_model("llama2-7b", "A100-80GB/1g.20gb")
    lines.append("")
    lines.append(f"On 1g.20gb (20 GB, {accelerator('A100-80GB/1g.20gb').bandwidth_gbps:.0f} GB/s) llama2-7b's "
                 f"13.5 GB of FP16 weights leave a KV cache of {pm.kv_capacity_tokens} tokens at 90 % memory "
                 "utilisation (llama2-7b has 32 KV heads, 0.5 MB per token): 8 sequences fit only below a "
                 f"{pm.kv_capacity_tokens // 8}-token context, whatever the stack's speed.")
    return lines


def sweep() -> tuple[list[str], dict[int, list[str]]]:
    offers = static_offers(OFFERED, "bench")
    lines = ["| context | bandwidth efficiencies (compute 0.55) reproducing 8 → 1g.20gb, 16 → 3g.40gb, 64 → A100 |",
             "|---|---|"]
    found: dict[int, list[str]] = {}
    for ctx, lengths in CONTEXTS.items():
        ok = []
        for pct in range(50, 101, 5):
            cal = Calibration(bandwidth_efficiency=pct / 100)
            # A perfect measurement on the full A100 under that stack, as --profiles would give it.
            ref, truth = perf_model("llama2-7b", "A100-80GB", cal), perf_model("llama2-7b", "A100-80GB")
            scale = Scale("A100-80GB", decode_c=ref.c / truth.c, decode_a=ref.a(ctx) / truth.a(ctx))
            picks = [decide(pod("llama2-7b", load, lengths), offers, lambda _s, s=scale: {"A100-80GB": s}).pick
                     for load in AUTOFIT]
            if [short(p or "") for p in picks] == list(AUTOFIT.values()):
                ok.append(f"{pct / 100:.2f}")
        found[ctx] = ok
        lines.append(f"| {ctx} | {', '.join(ok) if ok else 'none'} |")
    return lines, found


def latency(requests: int) -> tuple[float, float, float, float, float]:
    """Median and P99 HTTPS round trip (ms) for an annotated and an unannotated pod, one keep-alive
    connection, interleaved; and the in-process decide() median (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        tls = Path(tmp)
        subprocess.run(["bash", str(REPO / "deploy/webhook/certs.sh"), "--out", tmp], check=True, capture_output=True,
                       env={**os.environ, "EXTRA_SANS": "IP:127.0.0.1"}, timeout=60)
        (tls / "acc.yaml").write_text(json.dumps({"accelerators": OFFERED}))
        log = tls / "webhook.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "scaler.cli", "webhook", "--tls-cert",
                                     str(tls / "tls.crt"), "--tls-key", str(tls / "tls.key"), "--accelerators",
                                     str(tls / "acc.yaml"), "--port", "0", "--metrics-port", "0"],
                                    stderr=sink, stdout=subprocess.DEVNULL, cwd=REPO,
                                    env={**os.environ, "GPUMIX_LOG_FORMAT": "json"})
        try:
            port = _listening_port(proc, log)
            ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            sized = _review(pod("llama2-7b", 16, (768, 512)))
            plain = _review({**pod("llama2-7b", 16, (768, 512)), "metadata": {"generateName": "vllm-"}})
            times: dict[str, list[float]] = {"sized": [], "plain": []}
            for i in range(requests * 2):
                kind, body = ("sized", sized) if i % 2 == 0 else ("plain", plain)
                t0 = time.perf_counter()
                conn.request("POST", "/mutate?timeout=10s", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                times[kind].append((time.perf_counter() - t0) * 1000)
                assert resp.status == 200
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    offers = static_offers(OFFERED, "bench")
    p = pod("llama2-7b", 16, (768, 512))
    inproc = []
    for _ in range(requests):
        t0 = time.perf_counter()
        decide(p, offers)
        inproc.append((time.perf_counter() - t0) * 1000)
    q = lambda xs: statistics.quantiles(xs, n=100)[98]  # noqa: E731
    return (statistics.median(times["sized"]), q(times["sized"]), statistics.median(times["plain"]),
            q(times["plain"]), statistics.median(inproc))


def _review(p: dict[str, Any]) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "llm",
        "operation": "CREATE", "object": p, "dryRun": False}}).encode()


def _listening_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "listening":
                return int(event["https_port"])
        time.sleep(0.1)
    raise RuntimeError(f"gpumix webhook did not start: {log.read_text()[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    rows, agree, direction = table()
    sweep_lines, found = sweep()
    reproducing = [f"{ctx}-token context at bandwidth efficiency {', '.join(v)}" for ctx, v in found.items() if v]
    c8 = perf_model("llama3-8b", "A100-80GB/1g.20gb").c
    med, p99, base_med, base_p99, inproc = latency(args.requests)
    lines = [
        "## Webhook: AutoFit's published examples",
        "",
        "AutoFit's example at TPOT 50 ms: concurrency 8 → 1g.20gb, 16 → 3g.40gb, 64 → full A100. Below, the "
        "slice `gpumix webhook` patches into an annotated pod (`gpumix.io/load`, `gpumix.io/tpot: 50ms`, "
        "lengths giving the context shown) when an A100-80GB and all its MIG slices are offered. ✓ = AutoFit's "
        "pick. AutoFit does not publish the model, lengths or stack behind its example.",
        "",
        *rows,
        "",
        "Agreement (of 9 picks each): " + "; ".join(f"{k} {v}/9" for k, v in agree.items()) + ". Of the "
        f"disagreements, {direction['bigger']} pick a bigger (dearer) accelerator than AutoFit and "
        f"{direction['smaller']} a smaller one. No row gives 1g.20gb at load 8: for llama2-7b the slice's KV "
        "cache and weight reads leave too few sequences (below); with llama3-8b's 16 GB of weights one "
        f"decode step there takes {c8 * 1000:.1f} ms before any sequence is added, over the 50 ms. "
        "Longer contexts push load 16 and 64 to bigger "
        "slices; llama3-8b (GQA: a quarter of llama2-7b's KV per token) fits 64 sequences on a 3g/4g slice at "
        "short contexts, which AutoFit gave a full A100. AIBrix's A100 rows (a simulator, slower per "
        f"sequence than the datasheet model: a×1.25) change {direction['aibrix_changed']} of llama2-7b's 9 "
        "picks.",
        "",
        "Why, for llama2-7b on the datasheet model (TPOT = a·B + c, B ≤ knee):",
        "",
        *why(),
        "",
        "So AutoFit's 1g.20gb at load 8 needs both a short context and a faster stack than perfmodel's default "
        "65 % bandwidth efficiency. Calibrations (a perfect measurement on the full A100 under a stack of the "
        "given bandwidth efficiency, carried to the slices as `--profiles` does) that reproduce all three picks:",
        "",
        *sweep_lines,
        "",
        "Reading: for a 7B FP16 model AutoFit's whole table is reproduced only at "
        + ("; ".join(reproducing) or "no calibration swept")
        + " — a faster stack than perfmodel assumes without measurements. That is AutoFit's own point "
        "(the analytical model gets the shape, measurements fix the scale): give the webhook profile rows "
        "of the model (`--profiles`) and they decide. "
        "tests/webhook pins this: measured rows of a 75 %-bandwidth stack reproduce AutoFit's three picks "
        "end to end over HTTPS; the datasheet model alone gives 3g.40gb at load 8.",
        "",
        f"Cost of a decision: over HTTPS on one keep-alive connection ({args.requests} requests each, "
        f"interleaved), an annotated pod takes median {med:.2f} ms (P99 {p99:.2f}) against {base_med:.2f} ms "
        f"(P99 {base_p99:.2f}) for a pass-through pod on the same server: {med / base_med:.2f}×; the decision "
        f"itself (7 candidates, in process) {inproc:.2f} ms median. The API server's default webhook timeout "
        "is 10 s; the configuration sets 5 s.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("webhook", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
