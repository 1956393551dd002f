"""Scaling policies replayed against the simulated fleet. Each one sees the fleet only as a controller
would (arrivals so far, the fleet's snapshot) except `oracle`, which knows the future by design.

- `gpumix`: the real per-cycle decision (`optimizer.decide`: planner + held capacity + hysteresis) every
  15 s, published through the in-process external scaler to the KEDA+HPA emulator (`sim.hpa_emulator`),
  which moves the Deployments. Demand: arrival rate per bucket over the last minute (the joint length
  distribution, exactly) plus the backlog to drain. The service estimates the same total from completions
  + waiting/drain_time and spreads it by marginal length histograms, so this is slightly optimistic.
- `gpumix-hold[:seconds]`: the same, planning for the peak demand of the recent horizon (default: the
  longest cold start) instead of the last minute (optimizer.forecast.peak_hold).
- `hpa-queue:<variant>`: the GKE guide's HPA on queue size — total `num_requests_waiting` as an
  AverageValue metric (target 3 per pod), min 1 replica, default HPA behaviour — on one accelerator type.
- `static-peak`: the cheapest single type sized, from its profile, for the trace's peak one-minute demand;
  fixed for the whole run.
- `oracle`: every interval, the optimal mix for the *next* minute's actual demand, applied instantly with no
  cold start and no HPA in between: the cost lower bound for meeting the profiles.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from optimizer.decide import ModelState, VariantState, decide
from optimizer.demand import Demand, from_trace
from optimizer.hpa import DEFAULT_SCALE_UP, Behavior, ScalingRules
from optimizer.ids import VariantId
from optimizer.profile import Grid, Profile, common_grid, resample
from optimizer.program import ModelProblem, Planner, PlanRequest, Variant
from scaler.config import Config
from scaler.inventory import Inventory, ModelInfo, VariantInfo
from scaler.loop import Controller, StaticInventory, cycle_settings
from scaler.store import ProfileStatus, StateStore
from scaler.table import Table
from sim.engine import Completion, Fleet
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
    name = "static-peak"

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.profiles = spec.profiles()
        self.choice: tuple[str, int] | None = None

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        grid = fleet_grid(self.profiles)
        peak = peak_demand(spec.model, grid, trace)
        best: tuple[float, str, int] | None = None
        for name, profile in self.profiles.items():
            n = replicas_for(profile, peak)
            if n is None:
                # a type that cannot serve some bucket under the SLO is sized for what it can serve
                mu = resample(profile, grid).capacity
                n = replicas_for(profile, Demand(spec.model, grid, np.where(mu > 0, peak.rates, 0.0)))
                if n is None:
                    continue
                penalty = 1
            else:
                penalty = 0
            n = min(max(n, 1), spec.variant(name).max_replicas)
            # a type that serves every bucket wins over one that does not, then the cheaper
            cand = (penalty * 1e9 + n * profile.cost_per_hour, name, n)
            if best is None or cand < best:
                best = cand
        if best is None:
            return {}
        self.choice = (best[1], best[2])
        return {best[1]: best[2]}


class QueueScaler:
    """KEDA's Prometheus trigger on sum(vllm:num_requests_waiting) for one variant (plus requests the
    gateway holds for want of a ready pod)."""

    def __init__(self, fleet: Fleet, variant: str, target: float) -> None:
        self.fleet = fleet
        self.variant = variant
        self.target = target

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        return [MetricSpec(f"s0-vllm-waiting-{self.variant}", max(1, round(self.target)), self.target)]

    def _waiting(self) -> float:
        snap = self.fleet.snapshot()
        return float(snap.variants[self.variant].waiting + snap.pending)

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        value = self._waiting()
        return [MetricValue(metric_name, round(value), value)]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        return True


def _scaled_object(spec: FleetSpec, variant: str, min_replicas: int, trigger: str = "external",
                   polling_s: float = 30.0) -> ScaledObjectSpec:
    v = spec.variant(variant)
    down = ScalingRules(v.scale_down_window_s, DEFAULT_SCALE_UP.policies[:1])
    return ScaledObjectSpec(
        name=variant, namespace=spec.namespace, deployment=variant,
        metadata={"scalerAddress": "in-process", "model": spec.model, "variant": variant},
        trigger_type=trigger,  # type: ignore[arg-type]
        min_replicas=min_replicas, max_replicas=v.max_replicas, polling_interval_s=polling_s,
        behavior=Behavior(scale_down=down),
    )


class HpaQueue(Policy):
    def __init__(self, spec: FleetSpec, variant: str, target: float = QUEUE_TARGET) -> None:
        self.spec = spec
        self.variant = variant
        self.target = target
        self.name = f"hpa-queue:{variant}"

    def initial(self, spec: FleetSpec, trace: Trace) -> dict[str, int]:
        profiles = spec.profiles()
        n = 1
        if self.variant in profiles:
            grid = profiles[self.variant].grid
            first = demand_between(spec.model, grid, trace, 0.0, DEMAND_WINDOW_S)
            mu = profiles[self.variant].capacity
            first = Demand(spec.model, grid, np.where(mu > 0, first.rates, 0.0))
            n = max(1, replicas_for(profiles[self.variant], first) or 1)
        return {self.variant: min(n, spec.variant(self.variant).max_replicas)}

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
                    scale_down_window_s=v.scale_down_window_s)
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


class Gpumix(Policy):
    """`gpumix serve`'s own Controller (scaler/loop.py) on the simulated fleet: every CYCLE_S the pods are
    scraped into a Prometheus emulation (sim/promsim.py), the Controller runs its cycle on that (the same
    queries, parsing, demand verdict, estimate, plan and stabilization as the service), and the KEDA+HPA
    emulator polls an in-process scaler that answers from the Controller's table with the servicer's own
    functions (sim/inprocess.py). horizon_s > 0 (`gpumix-hold`) sets the service's `forecast_horizon`."""

    name = "gpumix"

    def __init__(self, spec: FleetSpec, horizon_s: float | None = None, config: Config | None = None) -> None:
        self.spec = spec
        self.profiles = spec.profiles()
        self.horizon_s = 0.0 if horizon_s is None else horizon_s
        if self.horizon_s > 0:
            self.name = f"gpumix-hold:{self.horizon_s:.0f}"
        self.config = config or Config(interval=CYCLE_S, scrape_interval=CYCLE_S, utilization=UTILIZATION,
                                       drain_time=DRAIN_S, forecast_horizon=self.horizon_s)
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


POLICY_NAMES = ("gpumix", "gpumix-hold", "hpa-queue", "static-peak", "oracle")


def make_policies(spec: FleetSpec, name: str) -> list[Policy]:
    """`name` is one of POLICY_NAMES, `hpa-queue:<variant>`, or `all`."""
    if name == "all":
        return [p for n in POLICY_NAMES for p in make_policies(spec, n)]
    if name == "gpumix":
        return [Gpumix(spec)]
    if name == "gpumix-hold":
        return [Gpumix(spec, horizon_s=default_horizon(spec))]
    if name.startswith("gpumix-hold:"):
        try:
            horizon = float(name.split(":", 1)[1])
        except ValueError:
            horizon = -1.0
        if not horizon > 0:
            raise ValueError(f"policy {name!r}: gpumix-hold:<horizon seconds> needs a positive number")
        return [Gpumix(spec, horizon_s=horizon)]
    if name == "static-peak":
        return [StaticPeak(spec)]
    if name == "oracle":
        return [Oracle(spec)]
    if name == "hpa-queue":
        return [HpaQueue(spec, v.name) for v in spec.variants]
    if name.startswith("hpa-queue:"):
        return [HpaQueue(spec, spec.variant(name.split(":", 1)[1]).name)]
    raise ValueError(f"policy {name!r}: use one of {', '.join((*POLICY_NAMES, 'all'))}, "
                     "hpa-queue:<variant> or gpumix-hold:<seconds>")


def without_cold_start(spec: FleetSpec) -> FleetSpec:
    return replace(spec, variants=tuple(replace(v, cold_start_s=0.0) for v in spec.variants))


