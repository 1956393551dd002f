"""`make demo`: the whole loop on one machine, in real time, for about two minutes.

    Redis, Prometheus        real servers on free loopback ports, in a temporary directory
    profiles                 the bundled fleet's profiles, loaded into Redis (gpumix:profile:<model>:<variant>)
    simulated fleet          sim/realtime.py: vLLM / DCGM / kube-state-metrics series scraped by Prometheus
    load                     a real trace (data/traces/), compressed in time and thinned to the fleet's size
    gpumix serve             a subprocess planning from Prometheus and Redis every `interval`
    KEDA + HPA               sim/keda_grpc.py driving the fleet's replicas through gRPC (external-push)

Time is compressed consistently: cold starts, windows, cooldown and intervals are seconds instead of
minutes, and the trace is played `speedup` times faster while keeping only a share of its requests so the
request rate stays one a small fleet can carry. Everything started is stopped on exit, Ctrl-C, SIGTERM or
failure (process group of `gpumix serve`, atexit, signal handlers).

`Stack` is also what the end-to-end test runs, with a synthetic load step instead of the trace.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from optimizer.hpa import Behavior, ScalingPolicy, ScalingRules
from optimizer.profile import load_profile
from scaler import logs
from sim.engine import Completion
from sim.fleet import FleetSpec, load_fleet
from sim.keda_emulator import Event, ScaledObjectSpec
from sim.realtime import RealtimeFleet, ServerThread
from sim.services import PrometheusServer, RedisServer, free_port, start_prometheus, start_redis

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TRACE = REPO / "data" / "traces" / "azure-llm-2023-code.csv"
log = logs.get("gpumix.sim.demo")


@dataclass(frozen=True)
class Timing:
    """The compressed clock of a run: every delay the real system has, in seconds."""

    cold_start_s: float = 8.0
    interval_s: float = 2.0  # gpumix serve's control cycle
    fast_interval_s: float = 1.0
    polling_s: float = 2.0  # KEDA pollingInterval
    hpa_sync_s: float = 3.0  # the HPA's sync period
    scale_down_window_s: float = 20.0
    cooldown_s: float = 20.0
    rate_window: str = "15s"
    drain_time_s: float = 10.0
    scrape_interval: str = "1s"


@dataclass(frozen=True)
class Sample:
    t: float
    replicas: dict[str, int]
    ready: dict[str, int]
    desired: dict[str, int | None]
    waiting: int  # in replicas' queues and in the fleet's (no replica to go to)
    waiting_by: dict[str, int]
    cost_per_hour: float
    cost: float
    arrivals: int


@dataclass
class Stack:
    """Everything the demo runs, started in order and stopped in reverse, idempotently."""

    spec: FleetSpec
    timing: Timing = field(default_factory=Timing)
    min_replicas: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    workdir: Path | None = None
    redis: RedisServer | None = None
    prometheus: PrometheusServer | None = None
    fleet: RealtimeFleet | None = None
    server: ServerThread | None = None
    serve: subprocess.Popen[bytes] | None = None
    driver: Any = None
    grpc_port: int = 0
    http_port: int = 0
    events: list[tuple[str, Event]] = field(default_factory=list)
    serve_log: Path | None = None
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- set-up ----------------------------------------------------------------------------------------
    def start(self) -> Stack:
        self.workdir = Path(tempfile.mkdtemp(prefix="gpumix-demo-"))
        (self.workdir / "redis").mkdir()
        (self.workdir / "prometheus").mkdir()
        self.redis = start_redis(self.workdir / "redis")
        self.prometheus = start_prometheus(self.workdir / "prometheus", scrape_interval=self.timing.scrape_interval)
        self._load_profiles()
        self.grpc_port, self.http_port = free_port(), free_port()
        self._start_serve()
        self.fleet = RealtimeFleet(self.spec, seed=self.seed)
        for v in self.spec.variants:
            n = self.min_replicas.get(v.name, 0)
            if n:
                self.fleet.set_replicas(v.name, n)
        self.server = ServerThread(self.fleet).start()
        self.prometheus.reload([self.server.target], jobs={"gpumix": [f"127.0.0.1:{self.http_port}"]})
        self._wait_serve_ready()
        self._start_driver()
        return self

    def _load_profiles(self) -> None:
        import redis as redis_lib

        assert self.redis is not None
        client = redis_lib.Redis.from_url(self.redis.url)
        try:
            for v in self.spec.variants:
                if v.profile_path is None:
                    continue
                profile = load_profile(v.profile_path, model=self.spec.model)
                profile = dataclasses.replace(profile, variant=v.name, model=self.spec.model)
                client.set(f"gpumix:profile:{self.spec.model}:{v.name}", json.dumps(profile.to_json()))
        finally:
            client.close()

    def _start_serve(self) -> None:
        assert self.workdir is not None and self.redis is not None and self.prometheus is not None
        t = self.timing
        inventory = {"models": [{
            "name": self.spec.model, "namespace": self.spec.namespace,
            "variants": [{"name": v.name, "accelerator": v.accelerator, "gpus_per_replica": v.gpus,
                          "min_replicas": self.min_replicas.get(v.name, 0), "max_replicas": v.max_replicas,
                          "scale_down_window_s": t.scale_down_window_s, "cold_start_s": v.cold_start_s}
                         for v in self.spec.variants],
        }]}
        (self.workdir / "inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        config = {
            "prometheus": self.prometheus.url, "redis": self.redis.url,
            "inventory": str(self.workdir / "inventory.yaml"),
            "grpc_port": self.grpc_port, "http_port": self.http_port, "bind": "127.0.0.1",
            "interval": t.interval_s, "fast_interval": t.fast_interval_s, "rate_window": t.rate_window,
            "drain_time": t.drain_time_s, "max_sample_age": 30.0, "log_level": "info",
            "cold_start": t.cold_start_s,
        }
        (self.workdir / "gpumix.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMIX_")}
        env["GPUMIX_LOG_FORMAT"] = "json"
        self.serve_log = self.workdir / "gpumix-serve.log"
        # Its own process group, so stopping it also stops anything it started.
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "scaler.cli", "serve", "--config", str(self.workdir / "gpumix.yaml")],
            stdout=self.serve_log.open("wb"), stderr=subprocess.STDOUT, cwd=str(REPO), env=env,
            start_new_session=True,
        )

    def _wait_serve_ready(self, timeout: float = 60.0) -> None:
        assert self.serve is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"gpumix serve exited with {self.serve.returncode}:\n{self.serve_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gpumix serve did not answer /healthz in {timeout}s:\n{self.serve_tail()}")

    def serve_tail(self, n: int = 30) -> str:
        path = self.serve_log
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def scaled_objects(self) -> list[ScaledObjectSpec]:
        t = self.timing
        up = ScalingRules(0.0, (ScalingPolicy("Percent", 100, t.hpa_sync_s), ScalingPolicy("Pods", 4, t.hpa_sync_s)))
        down = ScalingRules(t.scale_down_window_s, (ScalingPolicy("Percent", 100, t.hpa_sync_s),))
        return [
            ScaledObjectSpec(
                name=v.name, namespace=self.spec.namespace, deployment=v.name,
                metadata={"scalerAddress": f"127.0.0.1:{self.grpc_port}", "model": self.spec.model,
                          "variant": v.name, "namespace": self.spec.namespace},
                trigger_type="external-push", min_replicas=self.min_replicas.get(v.name, 0),
                max_replicas=v.max_replicas, polling_interval_s=t.polling_s, cooldown_period_s=t.cooldown_s,
                behavior=Behavior(up, down), hpa_sync_period_s=t.hpa_sync_s,  # no fallback: deploy/README.md
            )
            for v in self.spec.variants
        ]

    def _start_driver(self) -> None:
        from sim.keda_grpc import GrpcExternalScaler, KedaDriver

        assert self.fleet is not None
        fleet = self.fleet
        scaler = GrpcExternalScaler(f"127.0.0.1:{self.grpc_port}")

        def on_event(spec: ScaledObjectSpec, e: Event) -> None:
            if e.kind in ("scale", "fallback", "error"):
                self.events.append((spec.name, e))
                log.debug("keda", scaled_object=spec.name, kind=e.kind, before=e.replicas_before,
                          after=e.replicas_after, detail=e.detail)

        self.driver = KedaDriver(self.scaled_objects(), scaler, fleet.replicas, fleet.set_replicas,
                                 on_event=on_event).start()

    # -- reading -----------------------------------------------------------------------------------------
    def recommendations(self) -> dict[str, int | None]:
        """gpumix's published recommendation per variant, from its own /metrics."""
        out: dict[str, int | None] = {v.name: None for v in self.spec.variants}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return out
        for line in text.splitlines():
            if line.startswith("gpumix_desired_replicas{"):
                labels, _, value = line.rpartition(" ")
                for name in out:
                    if f'variant="{name}"' in labels:
                        out[name] = int(float(value))
        return out

    # -- tear-down ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.stop()
                self.driver.scaler.close()
        if self.serve is not None and self.serve.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.serve.pid, signal.SIGTERM)
            try:
                self.serve.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.serve.pid, signal.SIGKILL)
                self.serve.wait(5)
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        for svc in (self.prometheus, self.redis):
            if svc is not None:
                with contextlib.suppress(Exception):
                    svc.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------
# load


@dataclass(frozen=True)
class Arrivals:
    times: np.ndarray
    prompts: np.ndarray
    outputs: np.ndarray


def compressed_trace(path: Path, *, duration_s: float, window_s: float, mean_rps: float, seed: int,
                     start_s: float = 0.0) -> Arrivals:
    """`window_s` seconds of the trace from `start_s`, played in `duration_s`, thinned at random (seeded)
    to `mean_rps` on average: the trace's shape, at a rate a small simulated fleet can carry."""
    from sim.replay import load_trace

    trace = load_trace(path)
    sel = (trace.times >= start_s) & (trace.times < start_s + window_s)
    times = (trace.times[sel] - start_s) * (duration_s / window_s)
    prompts, outputs = trace.prompts[sel], trace.outputs[sel]
    keep_share = min(1.0, mean_rps * duration_s / max(1, times.size))
    keep = np.random.default_rng(seed).random(times.size) < keep_share
    return Arrivals(times[keep], prompts[keep], outputs[keep])


def step_load(rps: float, until_s: float, prompt: int, output: int, start_s: float = 0.0) -> Arrivals:
    n = int(rps * (until_s - start_s))
    times = start_s + np.arange(n) / rps
    return Arrivals(times, np.full(n, prompt), np.full(n, output))


class Player:
    """Submits arrivals into the real-time fleet at their times (bounded by count and by `until`)."""

    def __init__(self, fleet: RealtimeFleet, arrivals: Arrivals, until: float) -> None:
        self.fleet = fleet
        self.arrivals = arrivals
        self.until = until
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gpumix-demo-load", daemon=True)
        self.t0 = 0.0

    def start(self) -> Player:
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        a = self.arrivals
        for i in range(a.times.size):
            at = float(a.times[i])
            if at > self.until:
                break
            delay = self.t0 + at - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                return
            self.fleet.submit(int(a.prompts[i]), int(a.outputs[i]))
            self.sent += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)


# ---------------------------------------------------------------------------------------------------------
# running and reporting


def sample(stack: Stack, t: float, arrivals: int) -> Sample:
    assert stack.fleet is not None
    snap = stack.fleet.snapshot()
    usage = stack.fleet.usage()
    costs = {v.name: v.cost_per_hour for v in stack.spec.variants}
    replicas = {k: v.replicas for k, v in snap.variants.items()}
    return Sample(
        t=t, replicas=replicas, ready={k: v.ready for k, v in snap.variants.items()},
        desired=stack.recommendations(), waiting=sum(v.waiting for v in snap.variants.values()) + snap.pending,
        waiting_by={k: v.waiting for k, v in snap.variants.items()},
        cost_per_hour=sum(costs[k] * n for k, n in replicas.items()), cost=usage.total_cost, arrivals=arrivals,
    )


def table(spec: FleetSpec, s: Sample) -> str:
    width = max(len(v.name) for v in spec.variants)
    lines = [f"t={s.t:6.1f}s  {'variant':<{width}}  replicas(ready)  recommendation  waiting  $/h",
             "-" * (width + 60)]
    for v in spec.variants:
        snap_waiting = s.waiting_by.get(v.name, 0)
        rec = s.desired.get(v.name)
        cost = v.cost_per_hour * s.replicas[v.name]
        lines.append(f"{'':9}{v.name:<{width}}  {s.replicas[v.name]:>4} ({s.ready[v.name]:>2})       "
                     f"{'-' if rec is None else rec:>6}        {snap_waiting:>5}  {cost:6.2f}")
    lines.append(f"{'':9}{'fleet':<{width}}  {sum(s.replicas.values()):>4} ({sum(s.ready.values()):>2})       "
                 f"{'':>6}        {s.waiting:>5}  {s.cost_per_hour:6.2f}   (spent ${s.cost:.3f})")
    return "\n".join(lines)


@dataclass
class Summary:
    duration_s: float
    submitted: int
    completed: int
    dropped: int
    slo_met: float
    ttft_p50: float | None
    ttft_p99: float | None
    tpot_p50: float | None
    tpot_p99: float | None
    cost: float
    gpu_hours: dict[str, float]
    scale_events: int
    png: str | None = None
    peak_fleet: int = 0
    yardstick: Yardstick | None = None

    def text(self) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}s"
        gh = ", ".join(f"{k}: {v * 3600:.0f} replica-s" for k, v in self.gpu_hours.items() if v > 0)
        return (f"requests: {self.submitted} sent, {self.completed} completed, {self.dropped} dropped\n"
                f"SLO attainment (TTFT and TPOT within the fleet's SLO): {self.slo_met * 100:.1f} %\n"
                f"TTFT p50 {f(self.ttft_p50)} p99 {f(self.ttft_p99)}   TPOT p50 {f(self.tpot_p50)} "
                f"p99 {f(self.tpot_p99)}\n"
                f"cost: ${self.cost:.3f} over {self.duration_s:.0f} s ({gh})\n"
                f"scale events (KEDA/HPA): {self.scale_events}"
                + ("" if self.yardstick is None else "\n" + self.yardstick.text(self.peak_fleet))
                + (f"\nplot: {self.png}" if self.png else ""))


@dataclass(frozen=True)
class Yardstick:
    """What the load needed, worked out afterwards from the arrivals themselves."""

    need: dict[str, int]  # the cheapest fleet for the busiest window, at the planner's utilisation
    clairvoyant_cost: float | None  # the clairvoyant MILP's schedule over the load (sim/clairvoyant.py)
    cost_to_last_arrival: float  # what the demo's fleet spent until the last arrival
    window_s: float
    clairvoyant_peak: int | None = None  # the most replicas alive at once in that schedule
    # The fewest replicas alive at once of any schedule that knows the arrivals, orders every replica a cold
    # start ahead and meets the criterion in every window; and HiGHS's bound on that (equal when proven).
    fewest_peak: int | None = None
    fewest_bound: int | None = None

    def text(self, peak: int) -> str:
        total = sum(self.need.values())
        mix = ", ".join(f"{n} {name.rsplit('-', 1)[-1].upper()}" for name, n in self.need.items() if n)
        line = f"peak fleet {peak} replicas"
        if self.fewest_peak is not None:
            proven = ""
            if self.fewest_bound is None:
                proven = ", not proven the fewest"
            elif self.fewest_bound != self.fewest_peak:
                proven = f", at least {self.fewest_bound}"
            line += (f"; the burst needed {self.fewest_peak}{proven} (the fewest alive at once of any schedule "
                     f"ordering a cold start ahead): {peak / max(1, self.fewest_peak):.2f}× the need")
        line += (f"\nthe busiest {self.window_s:.0f} s alone needed {total} ({mix}): {peak / max(1, total):.2f}× "
                 "(a fleet that could reshape at once)")
        if self.clairvoyant_cost:
            line += (f"\ncost until the last arrival ${self.cost_to_last_arrival:.3f} = "
                     f"{self.cost_to_last_arrival / self.clairvoyant_cost:.2f}× the clairvoyant's "
                     f"${self.clairvoyant_cost:.3f} (knows the arrivals, orders a cold start ahead; "
                     f"its peak fleet {self.clairvoyant_peak})")
        return line


def yardstick(spec: FleetSpec, arrivals: Arrivals, timing: Timing, min_replicas: dict[str, int],
              samples: Sequence[Sample]) -> Yardstick:
    """The need and the clairvoyant bound for the load played, on the demo's compressed clock: the
    criterion's window is one cold start (no fleet follows demand faster), checked every control interval."""
    from optimizer.program import ModelProblem, Planner, PlanRequest, Variant
    from sim.clairvoyant import Schedule, solve
    from sim.policies import UTILIZATION, Trace, demand_between, fleet_grid

    window = timing.cold_start_s
    trace = Trace(arrivals.times.astype(float), arrivals.prompts.astype(np.int64), arrivals.outputs.astype(np.int64))
    profiles = spec.profiles()
    grid = fleet_grid(profiles)
    variants = tuple(Variant(name=v.name, profile=profiles[v.name], max_replicas=v.max_replicas)
                     for v in spec.variants if v.name in profiles)
    planner = Planner()
    need: dict[str, int] = {}
    t = 0.0
    while t <= trace.duration:
        plan = planner.plan(PlanRequest((ModelProblem(demand_between(spec.model, grid, trace, t, t + window),
                                                      variants),), utilization=UTILIZATION))
        if sum(plan.replicas().values()) > sum(need.values()):
            need = plan.replicas()
        t += timing.interval_s
    floors = dataclasses.replace(spec, variants=tuple(
        dataclasses.replace(v, min_replicas=min_replicas.get(v.name, 0)) for v in spec.variants))

    def schedule(fewest: bool) -> Schedule | None:
        try:
            return solve(floors, trace, decision_s=2 * timing.interval_s, check_s=timing.interval_s,
                         time_limit_s=5.0, window_s=window, fewest=fewest)
        except (RuntimeError, ValueError) as exc:  # the report goes on without that line
            log.warning("clairvoyant_failed", fewest=fewest, error=str(exc))
            return None

    cheapest, least = schedule(False), schedule(True)
    fewest_bound = None
    if least is not None and math.isfinite(least.gap):
        fewest_bound = math.ceil(least.peak * (1.0 - least.gap) - 1e-6)
    until = trace.duration
    spent = next((s.cost for s in samples if s.t >= until), samples[-1].cost if samples else 0.0)
    return Yardstick(need, None if cheapest is None else cheapest.cost, spent, window,
                     None if cheapest is None else cheapest.peak, None if least is None else least.peak,
                     fewest_bound)



def summarize(stack: Stack, completions: Sequence[Completion], submitted: int, duration: float) -> Summary:
    assert stack.fleet is not None
    slo = stack.spec.slo
    done = [c for c in completions if not c.dropped]
    ttft = np.array([c.ttft for c in done if c.ttft is not None])
    tpot = np.array([c.tpot for c in done if c.tpot is not None])
    met = sum(1 for c in done if c.ttft is not None and c.ttft <= slo.ttft and (c.tpot or 0.0) <= slo.tpot)
    usage = stack.fleet.usage()

    def pct(a: np.ndarray, q: float) -> float | None:
        return float(np.percentile(a, q)) if a.size else None

    return Summary(
        duration_s=duration, submitted=submitted, completed=len(done),
        dropped=sum(1 for c in completions if c.dropped),
        slo_met=met / max(1, len(completions)), ttft_p50=pct(ttft, 50), ttft_p99=pct(ttft, 99),
        tpot_p50=pct(tpot, 50), tpot_p99=pct(tpot, 99), cost=usage.total_cost,
        gpu_hours={k: v / 3600 for k, v in usage.replica_seconds.items()},
        scale_events=sum(1 for _, e in stack.events if e.kind == "scale"),
    )


def plot(spec: FleetSpec, samples: Sequence[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s.t for s in samples])
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    arrivals = np.array([s.arrivals for s in samples], dtype=float)
    rate = np.diff(arrivals, prepend=0.0) / np.maximum(np.diff(t, prepend=t[0] - 1.0), 1e-9)
    axes[0].plot(t, rate, color="black", lw=1)
    axes[0].set_ylabel("arrivals (req/s)")
    axes[0].set_title(f"gpumix demo: {spec.model}, real time (compressed)")
    for i, v in enumerate(spec.variants):
        color = f"C{i}"
        axes[1].step(t, [s.replicas[v.name] for s in samples], where="post", color=color, label=f"{v.name}")
        desired = [np.nan if s.desired.get(v.name) is None else s.desired[v.name] for s in samples]
        axes[1].step(t, desired, where="post", color=color, ls=":", alpha=0.8)
    axes[1].set_ylabel("replicas (— actual, ··· gpumix)")
    axes[1].legend(fontsize=8, loc="upper left")
    axes[2].plot(t, [s.cost for s in samples], color="C3")
    ax2 = axes[2].twinx()
    ax2.plot(t, [s.waiting for s in samples], color="grey", lw=0.8)
    ax2.set_ylabel("waiting requests", color="grey")
    axes[2].set_ylabel("cumulative cost ($)")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_fleet(timing: Timing) -> FleetSpec:
    spec = load_fleet()
    return dataclasses.replace(spec, variants=tuple(
        dataclasses.replace(v, cold_start_s=timing.cold_start_s, initial_replicas=0,
                            max_replicas=min(v.max_replicas, 8))
        for v in spec.variants))


def run_demo(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    from tqdm import tqdm

    timing = Timing(cold_start_s=args.cold_start)
    spec = demo_fleet(timing)
    cheapest = min(spec.variants, key=lambda v: v.cost_per_hour)
    # Pods export the metrics gpumix plans from; with none at all there is nothing to see (a gateway metric
    # would be needed), so the cheapest variant keeps one replica, AIBrix's min_replicas label.
    stack = Stack(spec, timing, min_replicas={cheapest.name: 1}, seed=args.seed)
    _install_cleanup(stack)
    arrivals = compressed_trace(Path(args.trace), duration_s=args.load_seconds, window_s=args.window,
                                mean_rps=args.rps, seed=args.seed, start_s=args.offset)
    out(f"gpumix demo: {spec.model} on {', '.join(v.accelerator for v in spec.variants)}; "
        f"{arrivals.times.size} requests from {Path(args.trace).name} ({args.window:.0f} s of trace in "
        f"{args.load_seconds:.0f} s), then {args.tail:.0f} s without load")
    out("starting Redis, Prometheus, the simulated fleet, gpumix serve and the KEDA/HPA emulator ...")
    samples: list[Sample] = []
    completions: list[Completion] = []
    total = args.load_seconds + args.tail
    try:
        stack.start()
        assert stack.fleet is not None
        stack.fleet.listeners.append(completions.append)
        assert stack.prometheus is not None and stack.server is not None
        out(f"  prometheus {stack.prometheus.url}   fleet {stack.server.url}   gpumix grpc 127.0.0.1:{stack.grpc_port}"
            f" http 127.0.0.1:{stack.http_port}   workdir {stack.workdir}")
        player = Player(stack.fleet, arrivals, until=args.load_seconds).start()
        t0 = time.monotonic()
        last_print = -1e9
        with tqdm(total=int(total), unit="s", desc="demo", leave=False, file=sys.stderr,
                  disable=not sys.stderr.isatty()) as bar:
            while (now := time.monotonic() - t0) < total:
                s = sample(stack, now, player.sent)
                samples.append(s)
                if now - last_print >= args.table_every:
                    tqdm.write(table(spec, s), file=sys.stdout)
                    last_print = now
                bar.n = int(now)
                bar.refresh()
                if stack.serve is not None and stack.serve.poll() is not None:
                    raise RuntimeError(f"gpumix serve exited with {stack.serve.returncode}:\n{stack.serve_tail()}")
                time.sleep(1.0)
        player.stop()
        summary = summarize(stack, completions, player.sent, total)
        summary.peak_fleet = max((sum(s.replicas.values()) for s in samples), default=0)
        summary.yardstick = yardstick(spec, arrivals, timing, stack.min_replicas, samples)
        png = Path(args.out) / "demo.png"
        plot(spec, samples, png)
        summary.png = str(png)
        out("\nsummary")
        out(summary.text())
        if stack.driver is not None and stack.driver.errors:
            out(f"KEDA driver errors: {stack.driver.errors[:3]}")
        return 0
    except KeyboardInterrupt:
        out("interrupted: stopping everything")
        return 130
    finally:
        stack.stop()


def _install_cleanup(stack: Stack) -> None:
    atexit.register(stack.stop)

    def on_signal(signum: int, frame: object) -> None:
        stack.stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Ctrl-C must reach us even when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0])
    p.add_argument("--trace", default=str(DEFAULT_TRACE), help="Azure CSV or Mooncake JSONL trace")
    p.add_argument("--window", type=float, default=1800.0, help="seconds of trace to play")
    p.add_argument("--offset", type=float, default=0.0, help="where in the trace to start (s)")
    p.add_argument("--load-seconds", type=float, default=80.0, help="real seconds the trace window takes")
    p.add_argument("--tail", type=float, default=45.0, help="seconds without load at the end (scale-down)")
    p.add_argument("--rps", type=float, default=2.5, help="mean request rate after thinning")
    p.add_argument("--cold-start", type=float, default=8.0, help="seconds before a new replica serves")
    p.add_argument("--table-every", type=float, default=5.0, help="seconds between printed tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "out" / "demo"), help="directory for the PNG")
    args = p.parse_args(argv)
    logs.configure("warning", "console")
    return run_demo(args)


if __name__ == "__main__":
    raise SystemExit(main())
