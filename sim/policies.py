"""Scaling policies replayed against the simulated fleet. Each one sees the fleet only as a controller
would (arrivals so far, the fleet's snapshot) except `oracle`, which knows the future by design.

- `gpumix`: the real per-cycle decision (`optimizer.decide`: planner + held capacity + hysteresis) every
  15 s, published through the in-process external scaler to the KEDA+HPA emulator (`sim.hpa_emulator`),
  which moves the Deployments. Demand: arrival rate per bucket over the last minute (the joint length
  distribution, exactly) plus the backlog to drain. The service estimates the same total from completions
  + waiting/drain_time and spreads it by marginal length histograms, so this is slightly optimistic.
  The service's defaults apply; each variant's cold start comes from the fleet (the inventory's
  `cold_start_s`).
- `gpumix-uncalibrated`: `gpumix` with the online calibration off (`calibration: false`): profiles as
  they are and the utilisation target fixed, as before issue 13.
- `gpumix-trend:<seconds>`: the same with the trend forecast on (`forecast_trend`: the linear trend of that
  look-back projected one cold start ahead, optimizer.forecast.trend_peak).
- `gpumix-hold[:seconds]`: the same, also holding the peak demand of the recent horizon (default: the
  longest cold start) instead of the last minute (optimizer.forecast.peak_hold).
- `hpa-gke:<variant>`: the HPA as GKE's LLM-inference guide sets it up on one accelerator type: waiting +
  running requests per pod (queue plus batch) as an AverageValue metric, the target from a load test of one
  replica, the HPA's default stabilization (up at once, down after the scale-down window).
- `hpa-queue:<variant>`: the earlier HPA baseline on queue size only — total `num_requests_waiting` as an
  AverageValue metric (target 3 per pod), min 1 replica, default HPA behaviour — on one accelerator type.
- `static-peak`: the cheapest single type that serves every bucket some type can serve, sized from its
  profile for the trace's peak one-minute demand; fixed for the whole run (rule: `static_peak_choice`).
- `oracle`: every interval, the optimal mix for the *next* minute's actual demand, applied instantly with no
  cold start and no HPA in between: the cost lower bound for meeting the profiles if replicas started
  instantly, which they do not.
- `clairvoyant` (sim/clairvoyant.py): the oracle's criterion over the whole known trace, solved as one MILP
  in which every replica is ordered (and paid) a cold start before it serves: the reachable cost bound.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from optimizer.decide import ModelState, VariantState, decide
from optimizer.demand import Demand, from_trace
from optimizer.hpa import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, Behavior, ScalingRules
from optimizer.ids import VariantId
from optimizer.profile import Grid, Profile, common_grid, resample
from optimizer.program import ModelProblem, Planner, PlanRequest, Variant
from scaler.config import Config
from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.loop import Controller, StaticInventory, cycle_settings
from scaler.store import ProfileStatus, StateStore
from scaler.table import Table
from sim.engine import Completion, Fleet, Request
from sim.exposition import fleet_samples
from sim.fleet import FleetSpec
from sim.inprocess import InProcessScaler
from sim.keda_emulator import MetricSpec, MetricValue, ScaledObjectEmulator, ScaledObjectRef, ScaledObjectSpec
from sim.promsim import TSDB, SimObserver, SimPrometheus
from sim.realtime import PodStats

CYCLE_S = 15.0  # gpumix's control interval (and the HPA's sync period)
DEMAND_WINDOW_S = 60.0
DRAIN_S = 60.0  # backlog is demand to clear within this long
QUEUE_TARGET = 3.0  # waiting requests per pod for hpa-queue
GKE_LOAD_TEST_S = 600.0  # hpa-gke's load test: this long at the target load
UTILIZATION = 0.8

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Trace:
    """Arrivals sorted by time: seconds from the start, prompt tokens, output tokens."""

    times: FloatArray
    prompts: IntArray
    outputs: IntArray

    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def duration(self) -> float:
        return float(self.times[-1]) if self.times.size else 0.0

    def window(self, start: float, end: float) -> tuple[IntArray, IntArray]:
        lo, hi = np.searchsorted(self.times, [start, end], side="left")
        return self.prompts[lo:hi], self.outputs[lo:hi]


def demand_between(model: str, grid: Grid, trace: Trace, start: float, end: float) -> Demand:
    prompts, outputs = trace.window(max(0.0, start), end)
    return from_trace(model, grid, prompts, outputs, max(end - max(0.0, start), 1e-9))


def fleet_grid(profiles: dict[str, Profile]) -> Grid:
    return common_grid(p.grid for p in profiles.values())


def replicas_for(profile: Profile, demand: Demand, utilization: float = UTILIZATION) -> int | None:
    """Replicas of one type that carry `demand` at utilisation u, or None when some bucket is unservable."""
    mu = resample(profile, demand.grid).capacity
    lam = demand.rates
    if np.any((lam > 0) & (mu <= 0)):
        return None
    work = float(np.sum(np.where(mu > 0, lam / np.where(mu > 0, mu, 1.0), 0.0)))
    return math.ceil(work / utilization - 1e-9)


def peak_demand(model: str, grid: Grid, trace: Trace, window_s: float = DEMAND_WINDOW_S) -> Demand:
    """Per bucket, the highest one-minute rate over the trace (buckets may peak at different times)."""
    peak = np.zeros(grid.shape)
    t = 0.0
    while t <= trace.duration:
        peak = np.maximum(peak, demand_between(model, grid, trace, t, t + window_s).rates)
        t += window_s / 4
    return Demand(model, grid, peak)


def default_horizon(spec: FleetSpec) -> float:
    """A replica ordered now serves after its cold start, so demand seen within the longest cold start is
    demand that can come back before released capacity could be bought again."""
    return max((v.cold_start_s for v in spec.variants), default=0.0)


class Policy:
    name = "policy"
    cold_start = True  # False: replicas are ready the moment they are asked for

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        """Replicas running (and ready) when the trace starts, as if the policy had been in charge before."""
        return {}

    def attach(self, fleet: Fleet, trace: Trace) -> None:
        self.fleet = fleet
        self.trace = trace

    def completed(self, completions: list[Completion]) -> None:
        """The requests that finished during the step (before `step`): what the pods' counters record."""

    def step(self, now: float) -> None:
        """Called every CYCLE_S; may change replica counts on the fleet."""


class StaticPeak(Policy):
    """The cheapest single type that covers the trace's peak, fixed for the run.

    Rule: types are compared on the buckets *some* type's profile can serve (a bucket no type serves is no
    type's fault, and counting it made every type look partial, so the type serving least looked cheapest).
    A type must serve every one of those buckets to be chosen, and the cheapest such fleet wins. Only when
    no single type covers them all does the type with the greatest coverage of the peak demand win (then the
    cheaper), sized for what it can serve."""

    name = "static-peak"

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.profiles = spec.profiles()
        self.choice: tuple[str, int] | None = None

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        grid = fleet_grid(self.profiles)
        choice = static_peak_choice(spec, self.profiles, peak_demand(spec.model, grid, trace))
        if choice is None:
            return {}
        self.choice = choice
        return {choice[0]: choice[1]}


def static_peak_choice(spec: FleetSpec, profiles: dict[str, Profile], peak: Demand) -> tuple[str, int] | None:
    """(type, replicas) by StaticPeak's rule (at least one replica; with no servable demand, one of the
    cheapest type), or None when there are no profiles."""
    mu = {name: resample(p, peak.grid).capacity for name, p in profiles.items()}
    if not mu:
        return None
    someone = np.max(list(mu.values()), axis=0) > 0
    rates = np.where(someone, peak.rates, 0.0)  # the buckets some type can serve
    total = float(rates.sum())
    best: tuple[float, float, str, int] | None = None
    for name, profile in profiles.items():
        served = np.where(mu[name] > 0, rates, 0.0)
        coverage = float(served.sum()) / total if total > 0 else 1.0
        if coverage <= 0:
            continue
        n = replicas_for(profile, Demand(spec.model, peak.grid, served))
        assert n is not None  # `served` has no bucket this type cannot serve
        n = min(max(n, 1), spec.variant(name).max_replicas)
        # full coverage first (−coverage sorts the fullest first), then the cheaper fleet
        cand = (-round(coverage, 12), n * profile.cost_per_hour, name, n)
        if best is None or cand < best:
            best = cand
    return None if best is None else (best[2], best[3])


class QueueScaler:
    """KEDA's Prometheus trigger on sum(vllm:num_requests_waiting) for one variant (plus requests the
    gateway holds for want of a ready pod); with `running`, sum(num_requests_waiting + num_requests_running),
    the queue-plus-batch metric."""

    def __init__(self, fleet: Fleet, variant: str, target: float, running: bool = False) -> None:
        self.fleet = fleet
        self.variant = variant
        self.target = target
        self.running = running

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        kind = "requests" if self.running else "waiting"
        return [MetricSpec(f"s0-vllm-{kind}-{self.variant}", max(1, round(self.target)), self.target)]

    def _waiting(self) -> float:
        snap = self.fleet.snapshot()
        v = snap.variants[self.variant]
        return float(v.waiting + snap.pending + (v.running if self.running else 0))

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        value = self._waiting()
        return [MetricValue(metric_name, round(value), value)]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        return True


def _scaled_object(spec: FleetSpec, variant: str, min_replicas: int, trigger: str = "external",
                   polling_s: float = 30.0, behavior: Behavior | None = None) -> ScaledObjectSpec:
    v = spec.variant(variant)
    down = ScalingRules(v.scale_down_window_s, DEFAULT_SCALE_UP.policies[:1])
    return ScaledObjectSpec(
        name=variant, namespace=spec.namespace, deployment=variant,
        metadata={"scalerAddress": "in-process", "model": spec.model, "variant": variant},
        trigger_type=trigger,  # type: ignore[arg-type]
        min_replicas=min_replicas, max_replicas=v.max_replicas, polling_interval_s=polling_s,
        behavior=behavior or Behavior(scale_down=down),
    )


def _first_minute_replicas(spec: FleetSpec, variant: str, trace: Trace) -> int:
    """What an HPA that had been running before the trace would hold: the first minute's servable demand."""
    profiles = spec.profiles()
    n = 1
    if variant in profiles:
        grid = profiles[variant].grid
        first = demand_between(spec.model, grid, trace, 0.0, DEMAND_WINDOW_S)
        mu = profiles[variant].capacity
        first = Demand(spec.model, grid, np.where(mu > 0, first.rates, 0.0))
        n = max(1, replicas_for(profiles[variant], first) or 1)
    return min(n, spec.variant(variant).max_replicas)


class HpaQueue(Policy):
    def __init__(self, spec: FleetSpec, variant: str, target: float = QUEUE_TARGET) -> None:
        self.spec = spec
        self.variant = variant
        self.target = target
        self.name = f"hpa-queue:{variant}"

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        return {self.variant: _first_minute_replicas(spec, self.variant, trace)}

    def attach(self, fleet: Fleet, trace: Trace) -> None:
        super().attach(fleet, trace)
        scaler = QueueScaler(fleet, self.variant, self.target)
        self.emulator = ScaledObjectEmulator(_scaled_object(self.spec, self.variant, 1, polling_s=15.0),
                                             scaler, created_at=0.0)

    def step(self, now: float) -> None:
        current = self.fleet.replicas(self.variant)
        n = self.emulator.advance(now, current)
        if n != current:
            self.fleet.set_replicas(self.variant, n, now)


def fleet_inventory(spec: FleetSpec) -> Inventory:
    """The inventory `gpumix serve` would be given for this fleet (one model, a Deployment per variant)."""
    variants = tuple(
        VariantInfo(name=v.name, model=spec.model, namespace=spec.namespace, accelerator=v.accelerator,
                    gpus_per_replica=v.gpus, min_replicas=v.min_replicas, max_replicas=v.max_replicas,
                    scale_down_window_s=v.scale_down_window_s, cold_start_s=v.cold_start_s)
        for v in spec.variants
    )
    return Inventory((ModelInfo(spec.model, spec.namespace, variants),))


class FixedProfiles:
    """ProfileStore's interface over the fleet's profiles (the replay's embedded default)."""

    def __init__(self, profiles: dict[str, Profile]) -> None:
        self.profiles = profiles

    async def lookup(self, inventory: Inventory) -> dict[VariantId, ProfileStatus]:
        return {
            VariantId(v.namespace, v.name): ProfileStatus(self.profiles[v.name], "ok", "fleet")
            if v.name in self.profiles else ProfileStatus(None, "missing", "fleet", "the fleet gives no profile")
            for m in inventory.models for v in m.variants
        }


def gke_batch_target(spec: FleetSpec, variant: str, trace: Trace, utilization: float = UTILIZATION,
                     seconds: float = GKE_LOAD_TEST_S, seed: int = 0) -> float:
    """Per-pod target of waiting + running requests for `hpa-gke`, found as the GKE guide says to: by a load
    test. One replica of the variant (the simulated one) is offered the trace's own length mix (the
    requests its profile can serve) as Poisson arrivals at `utilization` × the rate its profile says it
    sustains for that mix; the target is the mean waiting + running requests it holds after a minute's
    warm-up. That is the queue-plus-batch level at which the replica works at the same headroom the other
    policies plan with."""
    profiles = spec.profiles()
    v = spec.variant(variant)
    if variant not in profiles or not len(trace):
        return float(QUEUE_TARGET)
    mu = profiles[variant].capacity
    out_idx, in_idx = profiles[variant].grid.indices(trace.prompts, trace.outputs)
    ok = mu[out_idx, in_idx] > 0
    if not ok.any():
        return float(QUEUE_TARGET)
    rate = utilization / float(np.mean(1.0 / mu[out_idx[ok], in_idx[ok]]))  # req/s one replica carries
    rng = np.random.default_rng(seed)
    n = max(1, int(rate * seconds))
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    pick = rng.choice(np.flatnonzero(ok), n)
    one = replace(spec, variants=(replace(v, initial_replicas=1, min_replicas=1, max_replicas=1),))
    fleet = Fleet(one, seed=seed)
    samples: list[float] = []
    t, i = 0.0, 0
    while t < times[-1]:
        t += 5.0
        while i < n and times[i] < t:
            fleet.submit(Request(int(trace.prompts[pick[i]]), int(trace.outputs[pick[i]])), float(times[i]))
            i += 1
        fleet.advance(t)
        if t > DEMAND_WINDOW_S:
            snap = fleet.snapshot()
            samples.append(float(snap.variants[variant].waiting + snap.variants[variant].running + snap.pending))
    return max(1.0, round(float(np.mean(samples)), 1)) if samples else float(QUEUE_TARGET)


class HpaGke(Policy):
    """`hpa-gke:<variant>`: the HPA as GKE's best-practice guide for LLM inference sets it up on one
    accelerator type (cloud.google.com/kubernetes-engine/docs/best-practices/machine-learning/inference/
    autoscaling: queue size maximises throughput within a latency target, batch size reaches lower
    latency; both are per-pod server metrics; thresholds come from load tests).

    Metric: waiting + running requests per pod (queue plus batch), an AverageValue target from
    `gke_batch_target`'s load test. Stabilization: the HPA's defaults, scale-up with no window (+100 % or
    +4 pods per 15 s), scale-down only after the variant's scale-down window (default 300 s) of lower
    recommendations. Unlike `hpa-queue` (waiting only) the metric does not fall to 0 whenever the queue
    drains, so it does not swing between 1 and the maximum."""

    def __init__(self, spec: FleetSpec, variant: str, target: float | None = None) -> None:
        self.spec = spec
        self.variant = variant
        self.target = target
        self.name = f"hpa-gke:{variant}"

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        if self.target is None:
            self.target = gke_batch_target(spec, self.variant, trace)
        return {self.variant: _first_minute_replicas(spec, self.variant, trace)}

    def attach(self, fleet: Fleet, trace: Trace) -> None:
        super().attach(fleet, trace)
        assert self.target is not None, "initial() sets the target"
        v = self.spec.variant(self.variant)
        behavior = Behavior(DEFAULT_SCALE_UP, ScalingRules(v.scale_down_window_s, DEFAULT_SCALE_DOWN.policies))
        scaler = QueueScaler(fleet, self.variant, self.target, running=True)
        self.emulator = ScaledObjectEmulator(
            _scaled_object(self.spec, self.variant, 1, polling_s=15.0, behavior=behavior), scaler, created_at=0.0)
        n = fleet.replicas(self.variant)
        if n:  # the HPA has been running at this count
            self.emulator.hpa.recommendations.append((0.0, n))

    def step(self, now: float) -> None:
        current = self.fleet.replicas(self.variant)
        n = self.emulator.advance(now, current)
        if n != current:
            self.fleet.set_replicas(self.variant, n, now)


class Gpumix(Policy):
    """`gpumix serve`'s own Controller (scaler/loop.py) on the simulated fleet: every CYCLE_S the pods are
    scraped into a Prometheus emulation (sim/promsim.py), the Controller runs its cycle on that (the same
    queries, parsing, demand verdict, estimate, plan and stabilization as the service), and the KEDA+HPA
    emulator polls an in-process scaler that answers from the Controller's table with the servicer's own
    functions (sim/inprocess.py). horizon_s > 0 (`gpumix-hold`) sets the service's `forecast_horizon`."""

    name = "gpumix"

    def __init__(self, spec: FleetSpec, horizon_s: float | None = None, config: Config | None = None,
                 trend_s: float | None = None, calibration: bool = True) -> None:
        self.spec = spec
        self.profiles = spec.profiles()
        self.horizon_s = 0.0 if horizon_s is None else horizon_s
        if self.horizon_s > 0:
            self.name = f"gpumix-hold:{self.horizon_s:.0f}"
        trend = {} if trend_s is None else {"forecast_trend": trend_s}
        if trend_s is not None:
            self.name = f"gpumix-trend:{trend_s:.0f}"
        if not calibration:
            self.name += "-uncalibrated"
        self.config = config or Config(interval=CYCLE_S, scrape_interval=CYCLE_S, utilization=UTILIZATION,
                                       drain_time=DRAIN_S, forecast_horizon=self.horizon_s, calibration=calibration,
                                       **trend)
        self.grid = fleet_grid(self.profiles)
        self.now = 0.0
        self.table = Table()
        self.tsdb = TSDB()
        self.controller = Controller(
            self.config, StaticInventory(fleet_inventory(spec)), SimObserver(self.config, SimPrometheus(
                self.config, self.tsdb)), FixedProfiles(self.profiles), StateStore(None), self.table,
            clock=lambda: self.now, in_thread=False)
        self.pods: dict[str, PodStats] = {}
        self.solve_ms: list[float] = []
        self.last_loads: dict[str, float] = {}
        self.active: dict[str, bool] = {}
        # (time, factor per variant, utilisation target, last attainment) after each calibration step
        self.calibration_trace: list[tuple[float, dict[str, float], float, float | None]] = []

    def recommendations(self) -> dict[str, int]:
        return {vid.name: v.recommendation for vid, v in self.table.published.variants.items()
                if v.recommendation is not None}

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        """As if gpumix had been in charge before the trace starts: the plan for the first minute's demand
        (the one place the replay looks ahead), recorded as the service's published history."""
        demand = demand_between(spec.model, self.grid, trace, 0.0, DEMAND_WINDOW_S)
        states = [VariantState(name=v.name, profile=self.profiles.get(v.name), max_replicas=v.max_replicas,
                               scale_down_window_s=v.scale_down_window_s, gpus_per_replica=v.gpus)
                  for v in spec.variants]
        settings = cycle_settings(self.config, fleet_inventory(spec)).decide
        decision = decide([ModelState(spec.model, demand, tuple(states))], {}, 0.0, settings, Planner())
        for name, n in decision.recommendations.items():
            self.controller.state.put(VariantId(spec.namespace, name), [(0.0, n)], 0.0)
        return dict(decision.recommendations)

    def attach(self, fleet: Fleet, trace: Trace) -> None:
        super().attach(fleet, trace)
        scaler = InProcessScaler(self.table, self.config, clock=lambda: self.now)
        self.emulators = {
            v.name: ScaledObjectEmulator(_scaled_object(self.spec, v.name, v.min_replicas, "external-push"),
                                         scaler, created_at=0.0)
            for v in self.spec.variants if v.name in self.profiles
        }
        self.scaler = scaler
        for name, em in self.emulators.items():  # the HPA has been running at these counts
            n = fleet.replicas(name)
            if n:
                em.hpa.recommendations.append((0.0, n))
                em.last_active = 0.0

    def completed(self, completions: list[Completion]) -> None:
        for c in completions:
            if c.dropped or c.pod is None:
                continue
            stats = self.pods.get(c.pod)
            if stats is None:
                stats = self.pods[c.pod] = PodStats(c.variant or "")
            stats.record(c)

    def step(self, now: float) -> None:
        self.now = now
        snap = self.fleet.snapshot()
        alive = {r.pod for r in snap.replicas}
        self.pods = {pod: s for pod, s in self.pods.items() if pod in alive}
        self.tsdb.scrape(now, fleet_samples(self.spec.model, self.spec.namespace, snap, self.pods))
        asyncio.run(self._cycle())
        result = self.controller.last
        if result is not None and result.calibration is not None:
            state = result.calibration.state
            settings = self.controller.calibration.settings
            mkey = f"{self.spec.namespace}/{self.spec.model}"
            head = state.models.get(mkey)
            factors = {k.partition("/")[2]: v.factor for k, v in state.variants.items()}
            seen = None if head is None else head.attainment
            self.calibration_trace.append((now, factors, state.utilization(mkey, settings), seen))
        if result is not None and result.plan is not None:
            self.solve_ms.append(result.plan.solve_ms)
            mp = result.plan.models.get(f"{self.spec.namespace}/{self.spec.model}")
            if mp is not None:  # for plan-weighted routing
                self.last_loads = {name.partition("/")[2]: float(load.sum()) for name, load in mp.load.items()}
        for name, em in self.emulators.items():
            cur = self.fleet.replicas(name)
            n = cur
            ref = em.ref
            active = self.scaler.is_active(ref)
            if active and not self.active.get(name, False):
                n = em.push(True, now, cur)  # StreamIsActive: a transition to active is pushed at once
            self.active[name] = active
            n = em.advance(now, n)
            if n != cur:
                self.fleet.set_replicas(name, n, now)

    async def _cycle(self) -> None:
        await self.controller.fast_path()
        if self.controller.evidence_due():  # the service asks on its own task; here, in the cycle it is due in
            await self.controller.gather_evidence()
        await self.controller.cycle()


class Oracle(Policy):
    name = "oracle"
    cold_start = False

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.profiles = spec.profiles()
        self.grid = fleet_grid(self.profiles)
        self.planner = Planner()

    def _plan(self, now: float) -> dict[str, int]:
        demand = demand_between(self.spec.model, self.grid, self.trace, now, now + DEMAND_WINDOW_S)
        variants = tuple(
            Variant(name=v.name, profile=self.profiles[v.name], min_replicas=v.min_replicas,
                    max_replicas=v.max_replicas)
            for v in self.spec.variants if v.name in self.profiles
        )
        plan = self.planner.plan(PlanRequest((ModelProblem(demand, variants),), utilization=UTILIZATION))
        return plan.replicas()

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        self.trace = trace
        return self._plan(0.0)

    def step(self, now: float) -> None:
        for name, n in self._plan(now).items():
            if n != self.fleet.replicas(name):
                self.fleet.set_replicas(name, n, now)


POLICY_NAMES = ("gpumix", "gpumix-uncalibrated", "gpumix-hold", "hpa-gke", "hpa-queue", "static-peak", "oracle",
                "clairvoyant")


def make_policies(spec: FleetSpec, name: str) -> list[Policy]:
    """`name` is one of POLICY_NAMES, `hpa-queue:<variant>`, `hpa-gke:<variant>`, `gpumix-hold:<seconds>`,
    `gpumix-trend:<seconds>`,
    `clairvoyant:<MILP time limit seconds>`, or `all`."""
    if name == "all":
        return [p for n in POLICY_NAMES for p in make_policies(spec, n)]
    if name == "gpumix":
        return [Gpumix(spec)]
    if name == "gpumix-uncalibrated":
        return [Gpumix(spec, calibration=False)]
    if name == "gpumix-hold":
        return [Gpumix(spec, horizon_s=default_horizon(spec))]
    if name.startswith("gpumix-hold:"):
        return [Gpumix(spec, horizon_s=_seconds(name, "horizon"))]
    if name.startswith("gpumix-trend:"):
        return [Gpumix(spec, trend_s=_seconds(name, "look-back"))]
    if name == "static-peak":
        return [StaticPeak(spec)]
    if name == "oracle":
        return [Oracle(spec)]
    if name == "hpa-queue":
        return [HpaQueue(spec, v.name) for v in spec.variants]
    if name.startswith("hpa-queue:"):
        return [HpaQueue(spec, spec.variant(name.split(":", 1)[1]).name)]
    if name == "hpa-gke":
        return [HpaGke(spec, v.name) for v in spec.variants]
    if name.startswith("hpa-gke:"):
        return [HpaGke(spec, spec.variant(name.split(":", 1)[1]).name)]
    if name == "clairvoyant" or name.startswith("clairvoyant:"):
        from sim.clairvoyant import Clairvoyant  # it builds on this module

        if name == "clairvoyant":
            return [Clairvoyant(spec)]
        return [Clairvoyant(spec, time_limit_s=_seconds(name, "MILP time limit"))]
    raise ValueError(f"policy {name!r}: use one of {', '.join((*POLICY_NAMES, 'all'))}, "
                     "hpa-queue:<variant>, hpa-gke:<variant>, gpumix-hold:<seconds>, gpumix-trend:<seconds> or "
                     "clairvoyant:<seconds>")


def _seconds(name: str, what: str) -> float:
    """The seconds after the colon of a policy name like `gpumix-hold:180`."""
    kind, _, text = name.partition(":")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"policy {name!r}: {kind}:<{what} seconds> needs a positive number")
    return value


def without_cold_start(spec: FleetSpec) -> FleetSpec:
    return replace(spec, variants=tuple(replace(v, cold_start_s=0.0) for v in spec.variants))


