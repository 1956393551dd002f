"""One control cycle at cluster scale: cycle time and memory versus models, against a real Prometheus that
scrapes one exporter target per variant, as a cluster has one per pod.

    .venv/bin/python -m bench.bench_cycle [--models 1 100 500 1000] [--cycles 5] [--profile 1000]

Per size: M models × 4 variants, each variant's profile on a 16×16 grid (AIBrix's llama2-7b tables resampled,
capacity scaled per variant), each variant its own scrape target (`tests/service/exporter.py`'s exposition,
one FleetExporter per variant, served by a few exporter processes, each one asyncio loop on many ports). The
variants of a model serve different request lengths, so a model's demand spreads over many buckets. A fresh
process per size (so its peak RSS is its own) runs `Controller.cycle()` on a core of its own (Prometheus and the
exporters get the others) until every model is planned, then `--cycles` measured cycles one interval apart,
timed per stage; a model counts as planned in a cycle when that cycle's plan, from the exact planner, came
from that cycle's fresh demand. `--profile M` adds a cProfile of one cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import functools
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.report import write_section

DATA = Path(__file__).resolve().parent.parent / "data" / "aibrix"
BASES = ["simulator-llama2-7b-a100", "simulator-llama2-7b-a40"]
VARIANTS = 4
LENGTHS = [(200, 20), (500, 50), (1000, 100), (2000, 200)]  # (prompt, output) tokens per variant
EXPORTER_PROCESSES = 4
STAGES = ("query", "decode", "parse", "profiles", "core", "plan", "publish")  # decode: part of query
SCRAPE_S = 15.0  # kube-prometheus-stack's default scrape interval, and the service's `scrape_interval`


# ------------------------------------------------------------------------------ exporter processes


def serve_exporters(spec_file: str) -> int:
    """Child mode: one scrape target (own port) per variant listed, all served by one asyncio loop (a thread
    per target, as http.server has, made 4,000 targets a few thousand runnable threads that starved
    Prometheus); prints the targets, serves until stdin closes. The exposition is FleetExporter's."""
    from tests.service.exporter import FleetExporter

    specs = json.loads(Path(spec_file).read_text())

    async def handle(exporter: FleetExporter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # Prometheus keeps its connection to a target open between scrapes
                await reader.readuntil(b"\r\n\r\n")
                body = exporter.text().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        targets = []
        for model, variant, rps, prompt, output in specs:
            e = FleetExporter("v1")
            e.set_variant("llm", model, variant, 1, rps=rps, prompt_tokens=prompt, output_tokens=output)
            server = await asyncio.start_server(functools.partial(handle, e), "127.0.0.1", 0)
            targets.append(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        print(json.dumps(targets), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())
    os._exit(0)  # closing every connection gracefully is not worth waiting for


# --------------------------------------------------------------------------------- recording rules

# The heaviest cycle queries, recorded as gpumix ships them for this scale (deploy/components/recording-rules):
# the bench measures what a cluster following that component runs. The two length-histogram queries touch
# every bucket series of every pod (13 per pod and histogram: 52,000 series at 4,000 pods) and took 5–10 s on
# the bench's shared Prometheus core, past `prometheus_timeout`; recorded, Prometheus aggregates once per
# evaluation interval, off the cycle's path.
RULES = Path(__file__).resolve().parent.parent / "deploy" / "components" / "recording-rules" / "prometheusrule.yaml"


def shipped_records() -> dict[str, tuple[str, str]]:
    """Query name → (record, expression) for every shipped record, matched by expression to the default
    query it replaces (a deploy test keeps each one equal to a default query)."""
    from scaler.config import Config
    from scaler.prometheus import CYCLE_QUERIES

    config = Config()
    by_expr = {config.query(name): name for name in CYCLE_QUERIES}
    rules = [r for g in yaml.safe_load(RULES.read_text())["spec"]["groups"] for r in g["rules"]]
    return {by_expr[r["expr"]]: (r["record"], r["expr"]) for r in rules}


def record_rules(config: Path, url: str) -> None:
    """Adds the recording rules to the running Prometheus (rule file, then a configuration reload)."""
    import urllib.request

    rules = config.parent / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "gpumix", "rules": [
        {"record": record, "expr": expr} for record, expr in shipped_records().values()]}]}))
    doc = yaml.safe_load(config.read_text())
    doc["rule_files"] = [str(rules)]
    config.write_text(yaml.safe_dump(doc))
    urllib.request.urlopen(urllib.request.Request(f"{url}/-/reload", method="POST"), timeout=30).close()


# ------------------------------------------------------------------------------------ one size


def measure(models: int, cycles: int, workdir: Path, profile: bool, recorded: bool,
            calibration: bool = True) -> dict[str, object]:
    from optimizer.profile import Grid, load_profile, resample
    from scaler.config import Config
    from scaler.inventory import Inventory, ModelInfo, VariantInfo
    from scaler.loop import Controller, StaticInventory
    from scaler.prometheus import Observer
    from scaler.store import ProfileStore, StateStore
    from scaler.table import Table
    from sim.services import start_prometheus

    # The controller gets a core of its own; Prometheus and the exporters (the cluster around it) share the
    # others, so neither starves the other. Children inherit the affinity set before they start.
    cores = sorted(os.sched_getaffinity(0))
    controller_core, others = {cores[0]}, set(cores[1:]) or {cores[0]}
    os.sched_setaffinity(0, others)
    fine = Grid(inputs=tuple(int(x) for x in np.geomspace(64, 8192, 16).round()),
                outputs=tuple(int(x) for x in np.geomspace(4, 1024, 16).round()))
    bases = [resample(load_profile(DATA / f"{b}.json"), fine) for b in BASES]
    profiles = workdir / "profiles"
    profiles.mkdir()
    infos, specs = [], []
    rng = np.random.default_rng(models)
    for m in range(models):
        vs = []
        for v in range(VARIANTS):
            name = f"m{m}-v{v}"
            base = bases[v % 2]
            variant_profile = replace(base, model=f"m{m}", variant=name, accelerator=f"acc{v}",
                              cost_per_hour=base.cost_per_hour * (1 + v / 10),
                              capacity=base.capacity * float(rng.uniform(0.7, 1.4)))
            (profiles / f"{name}.json").write_text(json.dumps(variant_profile.to_json()))
            vs.append(VariantInfo(name=name, model=f"m{m}", namespace="llm", max_replicas=16))
            specs.append((f"m{m}", name, 0.5 + (m % 5) * 0.5, *LENGTHS[v]))
        infos.append(ModelInfo(f"m{m}", "llm", tuple(vs)))
    inventory = Inventory(tuple(infos))

    children, targets = [], []
    chunk = -(-len(specs) // EXPORTER_PROCESSES)
    for k in range(0, len(specs), chunk):
        spec_file = workdir / f"exporters-{k}.json"
        spec_file.write_text(json.dumps(specs[k:k + chunk]))
        child = subprocess.Popen([sys.executable, "-m", "bench.bench_cycle", "--serve-exporters", str(spec_file)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
    for child in children:
        assert child.stdout is not None
        targets += json.loads(child.stdout.readline())
    (workdir / "prom").mkdir()
    prom = start_prometheus(workdir / "prom", targets, scrape_interval=f"{SCRAPE_S:g}s")
    queries: dict[str, str] = {}
    if recorded:
        record_rules(prom.config, prom.url)
        queries = {name: rule for name, (rule, _) in shipped_records().items()}
    os.sched_setaffinity(0, controller_core)
    # The service's defaults (a 1-minute rate window over 15-s scrapes), the length histograms read from
    # recording rules when `recorded`.
    # prometheus_timeout 30 s instead of 5: at 4,000 pods the bench's Prometheus, on a shared core, needs more
    # than 5 s for a cycle's batch; the `query` stage shows how long, the other stages are the service's own.
    from scaler.commands.serve import tune_collector

    tune_collector()  # the process settings `gpumix serve` runs its cycles with
    config = Config(prometheus=prom.url, profiles=str(profiles), scrape_interval=SCRAPE_S, queries=queries,
                    prometheus_timeout=30.0, calibration=calibration)
    assert config.rate_window == "1m"
    observer = Observer(config)
    table = Table()
    controller = Controller(config, StaticInventory(inventory), observer, ProfileStore(str(profiles), None),
                            StateStore(None), table)

    import scaler.loop
    import scaler.prometheus

    # Where a cycle's wall time goes, per measured cycle: waiting for Prometheus (the batch of queries, JSON
    # decoding and shape checks included), turning answers into facts, profiles, the cycle core (its plan
    # apart), publishing.
    spent: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    requests: list[list[Any]] = [[]]  # per cycle, the planner's requests (a cycle plans once or twice)
    in_cycle = contextvars.ContextVar("in_cycle", default=False)  # a cycle query's task, not the evidence's

    def timed(name: str, fn: Callable[..., Any], keep: bool = False) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(fn):
            async def wrapped_async(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    spent[name] += time.perf_counter() - t
            return wrapped_async

        def wrapped(*a: Any, **k: Any) -> Any:
            if keep:
                requests[-1].append(a)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapped

    from scaler.config import EVIDENCE_QUERIES

    timed_queries = timed("query", observer.run_queries)
    evidence_queries = observer.run_queries

    async def cycle_queries(*a: Any, **k: Any) -> Any:
        in_cycle.set(True)  # the batch's tasks copy this context: their decodes are the cycle's
        return await timed_queries(*a, **k)

    decode = scaler.prometheus.decode

    def timed_decode(*a: Any, **k: Any) -> Any:
        if not in_cycle.get():
            return decode(*a, **k)
        t = time.perf_counter()
        try:
            return decode(*a, **k)
        finally:
            spent["decode"] += time.perf_counter() - t

    scaler.prometheus.decode = timed_decode  # type: ignore[assignment]

    async def run_queries(names: Any, *a: Any, **k: Any) -> Any:  # the evidence's batch is not the cycle's
        evidence = set(names) <= set(EVIDENCE_QUERIES)  # asked one at a time, beside the cycle
        return await (evidence_queries if evidence else cycle_queries)(names, *a, **k)

    observer.run_queries = run_queries  # type: ignore[method-assign]
    scaler.prometheus.parse_results = timed("parse", scaler.prometheus.parse_results)  # type: ignore[assignment]
    controller.profiles.lookup = timed("profiles", controller.profiles.lookup)  # type: ignore[method-assign]
    scaler.loop.run_cycle = timed("core", scaler.loop.run_cycle)  # type: ignore[assignment]
    scaler.loop.publish_cycle = timed("publish", scaler.loop.publish_cycle)  # type: ignore[assignment]
    plan_fn = controller.planner.plan
    controller.planner.plan = timed("plan", plan_fn, keep=True)  # type: ignore[method-assign]

    def planned(snapshot: Any) -> int:
        """Models planned from this cycle's fresh demand by the exact planner (not its greedy fallback)."""
        plan = controller.last.plan if controller.last is not None else None
        if plan is None:
            return 0
        return sum(1 for mid, mv in snapshot.models.items()
                   if mv.verdict == "fresh" and mv.demand_rps and mv.cost_per_hour is not None
                   and plan.exact(str(mid)))

    evidence: list[tuple[float, bool]] = []  # per window of calibration evidence: seconds, arrived

    async def step() -> tuple[Any, float]:
        """One cycle, timed, with the calibration's evidence asked beside it when due, as `gpumix serve` does
        (its own task on the same event loop and Prometheus: the cycle does not wait for it)."""
        task = None
        if controller.evidence_due():
            async def gather() -> None:
                t = time.perf_counter()
                await controller.gather_evidence()
                evidence.append((time.perf_counter() - t, controller.evidence is not None))
            task = asyncio.create_task(gather())
        t0 = time.perf_counter()
        snap = await controller.cycle()
        took = time.perf_counter() - t0
        if task is not None:
            await task
        return snap, took

    try:
        warm_until = time.monotonic() + 300
        ready = 0
        while time.monotonic() < warm_until:
            snap, _ = asyncio.run(step())
            ready = planned(snap)
            if ready == models:
                break
            time.sleep(SCRAPE_S / 3)
        times, counts, queries, stages = [], [], [], []
        for _ in range(cycles):
            time.sleep(config.interval)  # one cycle per interval, as the service runs them: new scrapes each
            sent = observer.queries_sent
            spent.update(dict.fromkeys(STAGES, 0.0))
            requests.append([])
            snap, took = asyncio.run(step())
            times.append(took)
            stages.append(dict(spent))
            counts.append(planned(snap))
            queries.append(observer.queries_sent - sent)
        measured = requests[1:]  # the warm-up's are in requests[0]; the profiled cycle below adds none
        hot = ""
        if profile:
            # cProfile sees one thread: run the cycle's worker-thread step (decide) inline for this cycle.
            async def inline(fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
                return fn(*a, **k)

            to_thread = asyncio.to_thread
            asyncio.to_thread = inline  # type: ignore[assignment]
            requests.append([])
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(controller.cycle())
            prof.disable()
            asyncio.to_thread = to_thread
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
            hot = out.getvalue()
        rss_now, peak_rss = _rss_mib(), _peak_rss_mib()  # before the planner is replayed below
        # Each cycle query alone (the batch sends them together): where Prometheus spends the query stage.
        from scaler.prometheus import CYCLE_QUERIES

        async def alone_once(name: str) -> float:
            t = time.perf_counter()
            await evidence_queries([name], time.time())
            return time.perf_counter() - t

        per_query = {name: statistics.median(asyncio.run(alone_once(name)) for _ in range(3)) for name in CYCLE_QUERIES}
    finally:
        prom.stop()
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=30)
    # The planner alone, with Prometheus and the exporters stopped, as the service runs it: a fresh Planner
    # plans every measured cycle's requests but the last, then the last cycle's are timed, so each model's
    # memory is one cycle old. (Re-planning the cycle's own request, as this column did before, found every
    # memory already at its answer: 0.08–0.22 s at 1,000 models, not a floor the cycle can reach.)
    from optimizer.program import Planner

    *earlier, last = [r for r in measured if r]
    alone = []
    for _ in range(3):
        replay = Planner()
        for cycle_requests in earlier:
            for request in cycle_requests:
                replay.plan(*request)
        t0 = time.perf_counter()
        for request in last:
            replay.plan(*request)
        alone.append(time.perf_counter() - t0)
    return {"models": models, "variants": models * VARIANTS, "targets": len(targets),
            "median_s": statistics.median(times), "max_s": max(times), "planned": counts,
            "queries": statistics.median(queries), "peak_rss_mib": peak_rss, "rss_mib": rss_now,
            "warm_ready": ready, "stages": {k: statistics.median(st[k] for st in stages) for k in STAGES},
            "solver": controller.planner.programs_solved, "hot": hot, "plan_alone_s": statistics.median(alone),
            "evidence": evidence, "per_query_s": per_query, "calibration": calibration}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 100, 500, 1000])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--profile", type=int, default=None, metavar="M", help="cProfile one cycle at M models")
    parser.add_argument("--direct", dest="recorded", action="store_false",
                        help="ask every query directly instead of through the shipped recording rules")
    parser.add_argument("--uncalibrated", type=int, nargs="*", default=[], metavar="M",
                        help="also measure these sizes with calibration off (no evidence queries beside the cycle)")
    parser.add_argument("--no-calibration", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-exporters", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_exporters:
        return serve_exporters(args.serve_exporters)
    if args.one is not None:
        from scaler import logs

        logs.configure("warning")  # the cycle's debug line lists every recommendation: not what is measured
        workdir = Path(tempfile.mkdtemp(prefix="gpumix-bench-cycle-"))
        try:
            print(json.dumps(measure(args.one, args.cycles, workdir, args.profile == args.one, args.recorded,
                                     calibration=not args.no_calibration)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0

    results = []
    for m, calibrated in [*((m, True) for m in args.models), *((m, False) for m in args.uncalibrated)]:
        cmd = [sys.executable, "-m", "bench.bench_cycle", "--one", str(m), "--cycles", str(args.cycles)]
        if args.profile is not None:
            cmd += ["--profile", str(args.profile)]
        if not args.recorded:
            cmd += ["--direct"]
        if not calibrated:
            cmd += ["--no-calibration"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print("  each query alone (ms): " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in r["per_query_s"].items()))
        print(f"{m:5d} models: cycle median {r['median_s'] * 1e3:.0f} ms, max {r['max_s'] * 1e3:.0f} ms, "
              f"planned {r['planned']}, peak RSS {r['peak_rss_mib']:.0f} MiB, stages (ms) "
              + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in r["stages"].items()), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    curve = [r for r in results if r["calibration"]]
    xs = [r["models"] for r in curve]
    ax.plot(xs, [r["median_s"] * 1e3 for r in curve], "o-", label="cycle median (ms)")
    ax.axhline(2000, color="C0", ls=":", lw=1)
    ax.set_xlabel("models (× 4 variants, 16×16 grids)")
    ax.set_ylabel("cycle time (ms)")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["peak_rss_mib"] for r in curve], "s--", color="C1", label="peak RSS (MiB)")
    ax2.axhline(512, color="C1", ls=":", lw=1)
    ax2.set_ylabel("peak RSS (MiB)")
    fig.legend(loc="upper left")
    fig.tight_layout()
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    fig.savefig(out_dir / "bench_cycle.png", dpi=120)

    def ms(x: float) -> str:
        return f"{x * 1e3:.0f} ms"

    def evidence_cell(windows: list[tuple[float, bool]]) -> str:
        if not windows:
            return "–"
        return (f"{statistics.median(t for t, _ in windows):.1f} s, {sum(ok for _, ok in windows)} of "
                f"{len(windows)} arrived")

    rows = [
        f"| {r['models']} × 4 = {r['variants']}{'' if r['calibration'] else ', calibration off'} | "
        f"{r['targets']} | {r['queries']:.0f} | {ms(r['median_s'])} | "
        f"{ms(r['max_s'])} | " + " | ".join(ms(r["stages"][k]) for k in STAGES) + f" | {ms(r['plan_alone_s'])} | "
        f"{min(r['planned'])}–{max(r['planned'])} of {r['models']} | {r['peak_rss_mib']:.0f} MiB | "
        f"{evidence_cell(r['evidence'])} |"
        for r in results
    ]
    big = next((r for r in results if r["models"] == 1000 and r["calibration"]), None)
    verdict = ""
    if big is not None:
        ok_t, ok_m = big["median_s"] < 2.0, big["peak_rss_mib"] < 512
        ok_p = min(big["planned"]) == big["models"]
        verdict = (f"\n\nGoal (issue #14) at 1,000 models: cycle < 2 s median — {big['median_s']:.2f} s, "
                   f"{'met' if ok_t else '**not met**'}; RSS < 512 MiB — {big['peak_rss_mib']:.0f} MiB, "
                   f"{'met' if ok_m else '**not met**'}; every model planned in every measured cycle — "
                   f"{min(big['planned'])} of {big['models']} at least, {'met' if ok_p else '**not met**'}.")
    text = ("## Control cycle at scale (real Prometheus, one scrape target per variant, directory profiles)\n\n"
            f"Each size in a fresh process. The controller has core 0 to itself; Prometheus (scraping every "
            f"{SCRAPE_S:g} s, the service's default `scrape_interval`, with its 1-minute rate window) and "
            f"{EXPORTER_PROCESSES} exporter processes (one asyncio loop each, one port per variant) share the other "
            "core(s), with `prometheus_timeout` 30 s (the default 5 s is too short for this Prometheus at 4,000 "
            "pods). Measured cycles are one interval (15 s) apart, after a warm-up that lasts until every model "
            "is planned. `planned` counts the models whose plan in that cycle came from fresh demand through the "
            "exact planner (a greedy fallback counts 0), lowest–highest over the measured cycles. "
            + (f"The {', '.join(f'`{n}`' for n in shipped_records())} queries read the recording rules gpumix "
               "ships (deploy/components/recording-rules: the default expressions, evaluated by Prometheus every "
               "15 s); "
               "queried directly the histograms touch every bucket series of every pod and took 5–10 s at 4,000 "
               "pods here, past `prometheus_timeout`. "
               if args.recorded else "Every query is the service's default, queried directly. ")
            + "\n\n"
            "Stages (medians over the measured cycles, wall time): `query` is the batch of aggregated queries "
            "(Prometheus evaluating them, the transfer, decoding into typed samples, shapes checked) with "
            "`decode` the decoding's part of it (the rest is waiting for Prometheus), `parse` turning answers "
            "into per-model facts, `profiles` the directory store's lookup, `core` `optimizer.cycle.run_cycle` "
            "(estimate, decide, stabilise) with `plan` the planner's part of it, `publish` building the table. "
            "`plan alone` is the last measured cycle's plan requests, after Prometheus and the exporters are "
            "stopped, by a fresh planner that planned the earlier measured cycles' requests first (each model's "
            "memory one cycle old, as in the service; median of 3). The calibration's evidence (every "
            "`calibration_interval`, 60 s) is asked beside the cycle "
            "on the same event loop and Prometheus, as `gpumix serve` runs it, and is not part of the cycle's "
            "time; `evidence per window` is how long its batch took (median) and how many windows arrived.\n\n"
            "| models × variants | scrape targets | queries/cycle | cycle median | cycle max | query | decode | "
            "parse | profiles | core | plan | publish | plan alone | planned | peak RSS | evidence per window |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|\n"
            + "\n".join(rows) + verdict
            + "\n\nPlot: `bench/out/bench_cycle.png`.")
    write_section("cycle", text)
    for r in results:
        if r["hot"]:
            print(f"--- cProfile of one cycle at {r['models']} models ---\n{r['hot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
