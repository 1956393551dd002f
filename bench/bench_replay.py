"""Replay speed (one hour of the Azure code trace, 4 variants, each policy on one core), the policy table on
that trace against the issue's goals, why requests miss the SLO, and the same policies on a synthetic
diurnal Poisson trace (seed 1) so no conclusion rests on one trace.

    .venv/bin/python -m bench.bench_replay
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from bench.report import write_section
from sim.fleet import FleetSpec, load_fleet
from sim.plot import plot_results
from sim.policies import Policy, Trace, make_policies
from sim.replay import Result, load_trace, meets_slo, miss_causes, replay, synthetic_trace

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "data" / "traces" / "azure-llm-2023-code.csv"
OUT = Path(__file__).resolve().parent / "out"
# Measured before optimizer/forecast.py existed (commit a1496c9), same fleet and seed: the reactive gpumix
# is unchanged, so its row below must reproduce it.
BEFORE = "gpumix $14.36, 91.1 % (TTFT p99 13.8 s); oracle $5.88, 95.5 %"


def run_all(spec: FleetSpec, trace: Trace, names: Sequence[str], routing: str = "least-outstanding",
            ) -> tuple[list[Result], dict[str, float], dict[str, dict[str, int]]]:
    policies: list[Policy] = [p for n in names for p in make_policies(spec, n)]
    results, seconds, causes = [], {}, {}
    for policy in tqdm(policies, desc="replay", unit="policy"):
        started = time.process_time()
        r = replay(spec, trace, policy, routing=routing)
        seconds[policy.name] = time.process_time() - started
        causes[policy.name] = miss_causes(spec, policy, r)
        results.append(r)
    return results, seconds, causes


def table(results: Sequence[Result], seconds: dict[str, float]) -> list[str]:
    lines = [
        "| policy | cost $ | SLO attainment | TTFT p50 / p99 s | TPOT p50 / p99 ms | dropped | scale events | "
        "replay CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.policy} | {r.cost:.2f} | {100 * r.attainment:.2f} % | {r.ttft_p50:.2f} / {r.ttft_p99:.2f} "
                     f"| {1e3 * r.tpot_p50:.0f} / {1e3 * r.tpot_p99:.0f} | {r.dropped} | {r.scale_events} | "
                     f"{seconds[r.policy]:.1f} |")
    return lines


def cause_table(results: Sequence[Result], causes: dict[str, dict[str, int]], keep: Sequence[str],
                r_spec: FleetSpec) -> list[str]:
    kinds = list(next(iter(causes.values())))
    lines = ["| policy | misses | of them in the first 5 min | " + " | ".join(kinds) + " |",
             "|---" * (len(kinds) + 3) + "|"]
    for r in results:
        if r.policy in keep:
            c = causes[r.policy]
            early = sum(1 for d in r.completions if d.arrival < 300.0 and not meets_slo(d, r_spec))
            lines.append(f"| {r.policy} | {sum(c.values())} | {early} | "
                         + " | ".join(f"{c[k]} ({100 * c[k] / r.requests:.1f} %)" for k in kinds) + " |")
    return lines


def goals(results: Sequence[Result], gpumix: str) -> str:
    by = {r.policy: r for r in results}
    g, o = by[gpumix], by["oracle"]
    hpa = [r for r in results if r.policy.startswith("hpa-queue:")]
    at_least = [r for r in hpa if r.attainment >= g.attainment]
    cmp = (f"{100 * (1 - g.cost / min(r.cost for r in at_least)):.0f} % cheaper than the cheapest hpa-queue with at "
           "least its attainment" if at_least else
           f"no hpa-queue reaches its attainment (best {max(r.attainment for r in hpa) * 100:.1f} %)")
    met = "met" if g.attainment >= 0.99 else "not met"
    return (f"{gpumix}: attainment {100 * g.attainment:.1f} % (≥ 99 %: **{met}**), "
            f"cost {g.cost / o.cost:.2f} × oracle (≤ 1.15: **{'met' if g.cost <= 1.15 * o.cost else 'not met'}**), "
            f"{cmp}.")


def main() -> int:
    spec = load_fleet()
    trace = load_trace(TRACE)
    names = ("gpumix", "gpumix-hold", "gpumix-hold:600", "hpa-queue", "static-peak", "oracle")
    results, seconds, causes = run_all(spec, trace, names)
    png = plot_results(results, OUT / "replay.png", title="Azure code trace, bundled fleet")
    routed, routed_s, routed_causes = run_all(spec, trace, ("gpumix", "oracle"), routing="plan-weighted")
    synth = synthetic_trace(1, duration_s=3600.0, mean_rps=4.0)
    s_results, s_seconds, s_causes = run_all(spec, synth, names)
    s_png = plot_results(s_results, OUT / "replay-diurnal.png", title="synthetic diurnal Poisson trace (seed 1)")
    keep = ("gpumix", "gpumix-hold:180", "gpumix-hold:600", "oracle")
    lines = [
        "## Trace replay: policies on the Azure code trace",
        f"Bundled fleet `sim/fleets/default.yaml` (deepseek-coder-7b on L4, A10G, L40S, A100-80GB; SLO TTFT ≤ "
        f"{spec.slo.ttft} s and TPOT ≤ {spec.slo.tpot} s per request), {len(trace)} requests over "
        f"{trace.duration / 60:.0f} min, cold start 150–180 s, seed 0, least-outstanding routing. CPU seconds per "
        "policy on one core. `gpumix-hold:H` plans for the peak demand of the last H seconds "
        "(`optimizer/forecast.py`; default H = the longest cold start).",
        "",
        *table(results, seconds),
        "",
        f"Before this section's changes: {BEFORE}.",
        "",
        "Goals: " + goals(results, "gpumix") + " " + goals(results, "gpumix-hold:180") + " "
        + goals(results, "gpumix-hold:600"),
        "",
        "### Why requests miss the SLO (first matching cause, `sim.replay.miss_causes`)",
        *cause_table(results, causes, keep, spec),
        "",
        "- **Cold start** dominates gpumix's misses. The first burst (minute 3, up to 30 req/s after two idle "
        "minutes) meets the 2 L40S sized for the first minute; the L40S ordered at once are ready 3 min later, "
        "after the burst. No causal policy can serve that burst (see the first-5-min column: ~3 % of the "
        "trace), which caps every policy with cold starts near 97 %. Afterwards, a reactive plan releases "
        "capacity in the 1–3 min gaps between bursts (shorter than a cold start) and orders it again too late.",
        "- **Peak hold** keeps what the recent bursts needed: after the first burst gpumix-hold:600 misses far "
        "fewer requests than even the oracle (which plans per minute and is caught by 15-s bursts), but the held "
        "fleet is paid through the gaps, so on this trace it buys attainment with cost. Cost ≤ 1.15 × oracle "
        "is out of reach for any causal policy here: the oracle scales to nothing in every idle minute and back "
        "with no cold start, which a 150–180 s cold start forbids. A larger held fleet also mixes L4/A10G "
        "replicas with L40S, so least-outstanding routing sends more long prompts to types that cannot serve "
        "them (the routing column).",
        "- **The oracle's own misses** are capacity/queueing inside the minute it plans for: bursts of 15 s at "
        "2–3× the minute's mean rate, and TPOT of short outputs (median 13 tokens) stalled by chunked prefill of "
        "4–7k-token prompts sharing the replica (most oracle misses are TPOT misses with ≤ 16 output tokens). The "
        "profiles are measured one bucket at a time, so they do not see that interference.",
        "- **Routing** (least-outstanding sending a bucket to a type whose profile cannot serve it) is < 1 %. "
        "Plan-weighted routing (per variant, length-blind) makes it worse, reported separately below.",
        "- **Unservable buckets**: 0.01 % — every 8k-prompt bucket is servable by L40S/A100, but only at "
        "0.25–0.5 req/s per replica (measured at 8192 tokens; the trace's prompts there are 4.1–7.4k), which "
        "is what makes L40S the bulk of every plan's cost.",
        "",
        "Plan-weighted routing (variants weighted by the plan's load; same policies, otherwise identical):",
        "",
        *table(routed, routed_s),
        "",
        *cause_table(routed, routed_causes, ("gpumix", "oracle"), spec),
        "",
        f"### Second trace: synthetic diurnal Poisson (seed 1, {len(synth)} requests in 1 h, mean 4 req/s ± 60 %, "
        "log-normal lengths: prompt median 1000, output median 120)",
        "",
        *table(s_results, s_seconds),
        "",
        "Goals: " + goals(s_results, "gpumix") + " " + goals(s_results, "gpumix-hold:180"),
        "",
        *cause_table(s_results, s_causes, keep, spec),
        "",
        "On smooth traffic the reactive plan already meets the goals; the peak hold only adds the peak of the "
        "estimate's noise (and of a falling rate) over its horizon, so it is an option, not the default.",
        "",
        f"Speed goal (1 h, 4 variants, < 60 s on one core): gpumix replay took {seconds['gpumix']:.1f} CPU s "
        f"(planner solves included), the engine alone {min(seconds.values()):.1f} s for the fastest policy. "
        f"Plots: `{png.relative_to(ROOT)}`, `{s_png.relative_to(ROOT)}`.",
    ]
    body = "\n".join(lines)
    write_section("replay", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
