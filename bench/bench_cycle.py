"""One control cycle against a real Prometheus scraping the test exporter: cycle time for 10 models x 4
variants, and Prometheus queries per cycle as the number of variants grows (goal: constant)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from bench.report import write_section
from optimizer.profile import load_profile
from scaler.config import Config
from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.loop import Controller, StaticInventory
from scaler.prometheus import Observer
from scaler.store import ProfileStore, StateStore
from scaler.table import Table
from sim.services import start_prometheus
from tests.service.exporter import FleetExporter

DATA = Path(__file__).resolve().parent.parent / "data" / "aibrix"
BASES = ["simulator-llama2-7b-a100", "simulator-llama2-7b-a40"]


def _fleet(models: int, variants: int, profiles: Path, exporter: FleetExporter) -> Inventory:
    infos = []
    for m in range(models):
        vs = []
        for v in range(variants):
            name = f"m{m}-v{v}"
            base = load_profile(DATA / f"{BASES[v % 2]}.json")
            profile = replace(base, model=f"m{m}", variant=name, cost_per_hour=base.cost_per_hour * (1 + v / 10))
            (profiles / f"{name}.json").write_text(json.dumps(profile.to_json()))
            vs.append(VariantInfo(name=name, model=f"m{m}", namespace="llm", max_replicas=16))
            exporter.set_variant("llm", f"m{m}", name, 1, rps=1.0 + m % 3)
        infos.append(ModelInfo(f"m{m}", "llm", tuple(vs)))
    return Inventory(tuple(infos))


async def _measure(models: int, variants: int, cycles: int, workdir: Path) -> tuple[float, float, int]:
    exporter = FleetExporter()
    profiles = workdir / f"profiles-{models}x{variants}"
    profiles.mkdir()
    inventory = _fleet(models, variants, profiles, exporter)
    prom_dir = workdir / f"prom-{models}x{variants}"
    prom_dir.mkdir()
    prom = start_prometheus(prom_dir, [exporter.start()])
    config = Config(prometheus=prom.url, rate_window="5s", profiles=str(profiles))
    observer = Observer(config)
    controller = Controller(config, StaticInventory(inventory), observer, ProfileStore(str(profiles), None),
                            StateStore(None), Table())
    try:
        for _ in range(40):  # until Prometheus has rates for every model
            snap = await controller.cycle()
            if all(m.demand_rps for m in snap.models.values()):
                break
            await asyncio.sleep(0.5)
        times = []
        sent_before = observer.queries_sent
        for _ in tqdm(range(cycles), desc=f"{models}x{variants} cycles", leave=False):
            t0 = time.perf_counter()
            await controller.cycle()
            times.append(time.perf_counter() - t0)
        per_cycle = (observer.queries_sent - sent_before) / cycles
        return statistics.median(times), max(times), int(per_cycle)
    finally:
        prom.stop()
        exporter.stop()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gpumix-bench-cycle-"))
    try:
        shapes = [(1, 4), (10, 4), (25, 4), (10, 10)]
        results = {s: asyncio.run(_measure(*s, cycles=10, workdir=workdir)) for s in shapes}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for (m, v), (median, worst, queries) in results.items():
        rows.append(f"| {m} x {v} = {m * v} | {queries} | {median * 1e3:.0f} ms | {worst * 1e3:.0f} ms |")
        print(f"{m:3d} models x {v:2d} variants: {queries} queries/cycle, cycle median {median * 1e3:.0f} ms, "
              f"max {worst * 1e3:.0f} ms")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [m * v for m, v in results]
    ax.plot(xs, [r[0] * 1e3 for r in results.values()], "o-", label="cycle median (ms)")
    ax2 = ax.twinx()
    ax2.plot(xs, [r[2] for r in results.values()], "s--", color="C1", label="queries per cycle")
    ax.set_xlabel("variants")
    ax.set_ylabel("cycle time (ms)")
    ax2.set_ylabel("Prometheus queries per cycle")
    ax2.set_ylim(0, max(r[2] for r in results.values()) * 1.5)
    fig.legend(loc="upper left")
    fig.tight_layout()
    out = os.path.join(os.path.dirname(__file__), "out")
    os.makedirs(out, exist_ok=True)
    fig.savefig(os.path.join(out, "bench_cycle.png"), dpi=120)
    write_section("cycle", "## Control cycle (real Prometheus, test exporter, directory profiles, no Redis)\n\n"
                  "One full observe → decide → publish cycle; queries per cycle must not grow with variants.\n\n"
                  "| models x variants | queries/cycle | cycle median | cycle max |\n|---|---|---|---|\n"
                  + "\n".join(rows) + "\n\nPlot: `bench/out/bench_cycle.png`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
