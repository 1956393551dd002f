"""The control cycle, top to bottom: observe → decide → publish.

    every `interval` seconds:
        inventory  = what exists (static file, or Kubernetes watch caches)     no I/O here: caches
        observe    = Prometheus (a fixed handful of aggregated queries), profiles (Redis MGET / files),
                     state (Redis, read once)
        estimate   = demand per model (scaler.prometheus.estimate_demand), None when its data is missing
        decide     = optimizer.decide.decide (pure; run in a worker thread so the event loop stays free)
        publish    = a new immutable Snapshot in the Table (what gRPC and HTTP read), state back to Redis

    every `fast_interval` seconds (scale-from-zero fast path):
        waiting requests per model (one query) → Table.set_waiting → StreamIsActive streams wake up

The gRPC and HTTP handlers only read `Table.snapshot` (an immutable value swapped atomically): they never
do I/O and never wait for a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from optimizer.decide import ModelState, Settings, VariantState, decide
from optimizer.demand import Demand, zero_demand
from optimizer.profile import Profile, common_grid
from optimizer.program import Plan, Planner
from scaler import logs
from scaler.config import Config
from scaler.inventory import DEFAULT_TOLERANCE, Inventory, ModelInfo
from scaler.prometheus import Observation, Observer, StateLog, bucket_rates, estimate_demand
from scaler.store import ProfileStatus, ProfileStore, StateStore
from scaler.telemetry import Counters, Histogram

log = logs.get("gpumix.loop")

Key = tuple[str, str]  # (namespace, name)


# ------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class VariantView:
    namespace: str
    model: str
    variant: str
    profile_status: str  # ok | missing | invalid
    profile_detail: str = ""
    replicas: int | None = None  # the published recommendation
    decided_at: float | None = None  # unix time it was last decided from fresh data
    current: int | None = None
    held: int | None = None  # what the HPA keeps inside its scale-down window (from the published history)
    reason: str = ""
    tolerance_up: float = DEFAULT_TOLERANCE  # the HPA's, from the ScaledObject: GetMetrics aims knowing it
    tolerance_down: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class ModelView:
    namespace: str
    model: str
    demand_rps: float | None = None
    buckets: tuple[tuple[int, int, float], ...] = ()
    waiting: float = 0.0
    data_age: float | None = None
    cost_per_hour: float | None = None
    coverage: float | None = None
    first_responder: str | None = None  # the variant woken when the idle model sees waiting requests
    idle: bool = True  # no variant recommended or running: waiting requests must wake the first responder



@dataclass(frozen=True)
class Snapshot:
    variants: Mapping[Key, VariantView] = field(default_factory=dict)
    models: Mapping[Key, ModelView] = field(default_factory=dict)
    planned_at: float | None = None  # last cycle in which at least one model was planned from fresh data


class Table:
    """What the handlers read. Writers replace whole values; readers never lock."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.waiting: Mapping[Key, float] = {}
        self.counters = Counters()
        self._changed = asyncio.Event()

    def publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._wake()

    def set_waiting(self, waiting: Mapping[Key, float]) -> None:
        self.waiting = dict(waiting)
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def changed(self) -> asyncio.Event:
        """An event set at the next publish or waiting update (take it before checking the state)."""
        return self._changed

    def is_active(self, namespace: str, model: str, variant: str) -> bool:
        """Should this variant have replicas? Never raises. Missing data keeps what is there.

        Waiting requests wake an idle model through one variant only, its first responder (cheapest per
        req/s of capacity): KEDA scales every active variant from 0 to 1, and waking them all would leave
        the dear ones running until the planner's next recommendation and KEDA's cooldown undo it."""
        snap = self.snapshot
        view = snap.variants.get((namespace, variant))
        if view is not None and view.replicas is not None and view.replicas > 0:
            return True
        if self.waiting.get((namespace, model), 0.0) > 0:
            mview = snap.models.get((namespace, model))
            if mview is None or (mview.idle and variant == (mview.first_responder or variant)):
                return True
        if view is None:
            return False
        if view.replicas is not None:
            return view.replicas > 0
        return (view.current or 0) > 0


def first_responder(model: ModelInfo, profiles: Mapping[Key, ProfileStatus]) -> str | None:
    """The variant with a usable profile that costs least per req/s of its mean servable capacity."""
    best: tuple[float, str] | None = None
    for v in model.variants:
        profile = profiles[(v.namespace, v.name)].profile
        if profile is None or not (profile.capacity > 0).any():
            continue
        price = profile.cost_per_hour / float(profile.capacity[profile.capacity > 0].mean())
        if best is None or price < best[0]:
            best = (price, v.name)
    return None if best is None else best[1]


# ------------------------------------------------------------------------------------- the cycle


class InventorySource(Protocol):
    def current(self) -> Inventory: ...


class StaticInventory:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def current(self) -> Inventory:
        return self.inventory


def variant_key(namespace: str, variant: str) -> str:
    return f"{namespace}/{variant}"


class Controller:
    def __init__(
        self,
        config: Config,
        inventory: InventorySource,
        observer: Observer,
        profiles: ProfileStore,
        state: StateStore,
        table: Table,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.inventory = inventory
        self.observer = observer
        self.profiles = profiles
        self.state = state
        self.table = table
        self.clock = clock
        self.planner = Planner()
        self.problems = StateLog()
        self.settings = Settings(
            utilization=config.utilization,
            churn=config.churn,
            hysteresis_margin=config.hysteresis_margin,
            time_limit_s=config.solver_time_limit,
        )
        self.cycles = 0

    # -- observe → estimate

    def _demand(self, model: ModelInfo, obs: Observation, currents: Mapping[str, int | None],
                profiles: list[Profile]) -> tuple[Demand | None, str, float | None]:
        """(demand or None, where it came from or why it is missing, data age)."""
        key = variant_key(model.namespace, model.name)
        if not profiles:
            return None, "no variant has a usable profile", None
        if not obs.complete:
            missing = ", ".join(f"{q}: {k}" for q, k in obs.errors.items())
            return None, f"prometheus: {missing}", None
        grid = common_grid(p.grid for p in profiles)
        facts = obs.models.get((model.namespace, model.name))
        idle = all(c == 0 for c in currents.values())
        if facts is None or not ({"waiting", "completions"} & facts.seen):
            # No series at all: legitimate only when the model runs no replicas (nothing to scrape).
            if idle:
                return zero_demand(key, grid), "no replicas, no series", None
            self.table.counters.error("empty")
            return None, "no vLLM series for this model while it has (or may have) replicas", None
        if "completions" not in facts.seen and not idle:
            # A running server exports its completion counter from the start; no rate yet means Prometheus
            # has fewer than two samples, and a zero here would shrink a busy fleet.
            self.table.counters.error("empty")
            return None, "no completion rate yet for a model with replicas", None
        age = None if facts.newest_sample is None else max(0.0, obs.at - facts.newest_sample)
        if age is not None and age > self.config.max_sample_age:
            if idle:  # series of replicas that are gone linger; nothing runs, nothing to keep
                return zero_demand(key, grid), "no replicas, only old series", age
            self.table.counters.error("stale")
            return None, f"newest sample is {age:.0f} s old (max_sample_age {self.config.max_sample_age:.0f} s)", age
        estimate = estimate_demand(key, facts, grid, self.config.drain_time)
        if estimate.crosscheck is not None and not 0.5 <= estimate.crosscheck <= 2.0:
            self.problems.report(f"crosscheck:{key}", "mismatch", ratio=round(estimate.crosscheck, 2),
                                 hint="prompt-length histogram and token rate disagree")
        elif estimate.crosscheck is not None:
            self.problems.report(f"crosscheck:{key}", "ok")
        return estimate.demand, estimate.source, age

    async def cycle(self) -> Snapshot:
        started = time.perf_counter()
        now = self.clock()
        inventory = self.inventory.current()
        obs, profiles, _ = await asyncio.gather(
            self.observer.observe(now), self.profiles.lookup(inventory), self.state.load()
        )
        model_states: list[ModelState] = []
        info: dict[str, tuple[ModelInfo, Demand | None, float | None]] = {}
        currents: dict[Key, int | None] = {}
        for model in inventory.models:
            variant_states = []
            usable: list[Profile] = []
            for v in model.variants:
                status = profiles[(v.namespace, v.name)]
                current = obs.replicas.get((v.namespace, v.name), v.current_replicas)
                currents[(v.namespace, v.name)] = current
                if status.profile is not None:
                    usable.append(status.profile)
                variant_states.append(VariantState(
                    name=variant_key(v.namespace, v.name),
                    profile=status.profile,
                    min_replicas=v.min_replicas,
                    max_replicas=v.max_replicas,
                    current_replicas=current,
                    scale_down_window_s=v.scale_down_window_s,
                    pool=v.accelerator,
                    gpus_per_replica=v.gpus_per_replica if v.gpus_per_replica != 1 else None,
                ))
            demand, source, age = self._demand(
                model, obs, {v.name: currents[(v.namespace, v.name)] for v in model.variants}, usable
            )
            mkey = variant_key(model.namespace, model.name)
            state_name = "ok" if demand is not None else "missing"
            self.problems.report(f"demand:{mkey}", state_name, level="warning", why=source)
            info[mkey] = (model, demand, age)
            model_states.append(ModelState(mkey, demand, tuple(variant_states)))

        history = self.state.history()
        settings = Settings(**{**self.settings.__dict__, "pools": dict(inventory.pools)})
        decision = await asyncio.to_thread(decide, model_states, history, now, settings, self.planner)

        keep_s = max((v.scale_down_window_s for m in inventory.models for v in m.variants), default=300.0)
        for name, replicas in decision.recommendations.items():
            model_key = name_to_model(inventory, name)
            fresh = decision.model_plan(model_key) is not None if model_key else False
            self.state.record(name, replicas, now, fresh, keep_s)
        await self.state.save(decision.recommendations)

        if decision.plan is not None:
            for mkey in decision.plan.models:
                hist = self.table.counters.solve_seconds.setdefault(mkey, Histogram())
                hist.observe(decision.plan.solve_ms / 1e3)
                if decision.plan.solver != "highs":
                    fb = self.table.counters.solver_fallback
                    fb[mkey] = fb.get(mkey, 0) + 1
            if decision.plan.solver != "highs":
                self.problems.report("solver", "fallback", status=decision.plan.status)
            else:
                self.problems.report("solver", "ok")

        snapshot = self._snapshot(inventory, info, profiles, currents, decision.reasons, now, decision.plan,
                                  decision.held)
        self.table.publish(snapshot)
        self.table.counters.cycle_seconds.observe(time.perf_counter() - started)
        self.cycles += 1
        log.debug("cycle", seconds=round(time.perf_counter() - started, 3),
                  recommendations={k: v for k, v in decision.recommendations.items()})
        return snapshot

    def _snapshot(self, inventory: Inventory, info: Mapping[str, tuple[ModelInfo, Demand | None, float | None]],
                  profiles: Mapping[Key, ProfileStatus], currents: Mapping[Key, int | None],
                  reasons: Mapping[str, str], now: float, plan: Plan | None,
                  held: Mapping[str, int]) -> Snapshot:
        variants: dict[Key, VariantView] = {}
        models: dict[Key, ModelView] = {}
        for mkey, (model, demand, age) in info.items():
            model_plan = plan.models.get(mkey) if plan else None
            models[(model.namespace, model.name)] = ModelView(
                namespace=model.namespace,
                model=model.name,
                demand_rps=None if demand is None else demand.total,
                buckets=() if demand is None else tuple(bucket_rates(demand)),
                waiting=self.table.waiting.get((model.namespace, model.name), 0.0),
                data_age=age,
                cost_per_hour=None if model_plan is None else model_plan.cost_per_hour,
                coverage=None if model_plan is None else model_plan.coverage,
                first_responder=first_responder(model, profiles),
            )
            for v in model.variants:
                status = profiles[(v.namespace, v.name)]
                st = self.state.variants.get(variant_key(v.namespace, v.name))
                variants[(v.namespace, v.name)] = VariantView(
                    namespace=v.namespace,
                    model=model.name,
                    variant=v.name,
                    profile_status=status.status,
                    profile_detail=status.detail,
                    replicas=None if st is None else st.replicas,
                    decided_at=None if st is None else st.at,
                    current=currents.get((v.namespace, v.name)),
                    held=held.get(variant_key(v.namespace, v.name)),
                    reason=reasons.get(variant_key(v.namespace, v.name), ""),
                    tolerance_up=v.tolerance_up,
                    tolerance_down=v.tolerance_down,
                )
        for (namespace, name), mview in models.items():  # idleness is per cycle: work it out once here
            idle = all((v.replicas or 0) == 0 and (v.current or 0) == 0
                       for v in variants.values() if v.namespace == namespace and v.model == name)
            models[(namespace, name)] = replace(mview, idle=idle)
        previous = self.table.snapshot.planned_at
        return Snapshot(variants, models, planned_at=now if plan is not None else previous)

    # -- running

    async def fast_path(self) -> None:
        waiting = await self.observer.waiting(self.clock())
        if waiting is not None:
            before = self.table.waiting
            self.table.set_waiting(waiting)
            woke = [f"{ns}/{m}" for (ns, m), w in waiting.items() if w > 0 and before.get((ns, m), 0.0) <= 0]
            if woke:
                log.info("demand_seen", models=woke)

    async def run(self, stop: asyncio.Event) -> None:
        fast = asyncio.create_task(self._every(self.config.fast_interval, self.fast_path, stop, "fast_path"))
        try:
            await self._every(self.config.interval, self.cycle, stop, "cycle")
        finally:
            fast.cancel()
            await asyncio.gather(fast, return_exceptions=True)

    async def _every(self, interval: float, step: Callable[[], Awaitable[object]], stop: asyncio.Event,
                     what: str) -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad cycle must not end the service
                self.table.counters.error(f"{what}_error")
                log.exception(f"{what}_failed", error=str(exc))
            delay = max(0.0, interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.01))


def name_to_model(inventory: Inventory, name: str) -> str | None:
    namespace, _, variant = name.partition("/")
    for m in inventory.models:
        if m.namespace == namespace and any(v.name == variant for v in m.variants):
            return variant_key(m.namespace, m.name)
    return None


def is_fresh(view: VariantView, now: float, stale_after: float) -> bool:
    return view.replicas is not None and view.decided_at is not None and now - view.decided_at <= stale_after

