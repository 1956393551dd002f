"""The control cycle, top to bottom: observe → decide → publish.

    every `interval` seconds:
        inventory  = what exists (static file, or Kubernetes watch caches)     no I/O here: caches
        observe    = Prometheus (a fixed handful of aggregated queries), profiles (Redis MGET / files),
                     state (Redis, read once); the calibration's evidence when a new window of it has
                     arrived, and then the operator's calibration controls
        decide     = optimizer.cycle.run_cycle (pure, shared with the replay; in a worker thread so the event
                     loop stays free): demand verdict, estimate, calibration, plan, stabilize, history
        publish    = a new immutable `Published` in the Table (what gRPC and HTTP read), state and
                     calibration back to Redis, one log line per calibration change with its evidence

    every `fast_interval` seconds (scale-from-zero fast path):
        waiting requests per model (one query) → Table.set_waiting → StreamIsActive streams wake up

    every `calibration_interval` seconds (calibration evidence, off the cycle's path):
        per-pod latency histograms, completions and ages (scaler/evidence.py) → kept for the next cycle.
        Per pod and bucket these are the heaviest queries gpumix sends (at 4,000 pods they outlast a cycle),
        so the cycle never waits for them; the replay asks for them before the cycle they are due in.

The gRPC and HTTP handlers only read `Table.published` (an immutable value swapped atomically): they never
do I/O and never wait for a cycle. The replay (sim/policies.py) runs this same Controller with simulated
Prometheus, profiles and state behind the same interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from optimizer.calibrate import (
    CalibrationSettings,
    CalibrationState,
    CalibrationStep,
    Gauge,
    ModelHeadroom,
    VariantCalibration,
    VariantEvidence,
    apply_control,
    gauges,
)
from optimizer.cycle import CycleResult, CycleSettings, ModelInput, VariantInput, Verdict, run_cycle
from optimizer.decide import Settings
from optimizer.demand import Demand
from optimizer.ids import ModelId, VariantId
from optimizer.program import Planner
from scaler import evidence as calibration_evidence
from scaler import logs
from scaler.calibration_store import CalibrationStore
from scaler.config import Config
from scaler.inventory import Inventory
from scaler.prometheus import REQUIRED, Observation, Observer, StateLog
from scaler.store import ProfileStatus, ProfileStore, StateStore
from scaler.table import Published, Table, publish_cycle
from scaler.telemetry import Histogram

log = logs.get("gpumix.loop")


class InventorySource(Protocol):
    def current(self) -> Inventory: ...


class StaticInventory:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def current(self) -> Inventory:
        return self.inventory


def cycle_settings(config: Config, inventory: Inventory) -> CycleSettings:
    return CycleSettings(
        decide=Settings(utilization=config.utilization, churn=config.churn,
                        hysteresis_margin=config.hysteresis_margin, time_limit_s=config.solver_time_limit,
                        pools=dict(inventory.pools)),
        drain_time_s=config.drain_time,
        max_sample_age_s=config.max_sample_age,
        forecast_horizon_s=config.forecast_horizon,
        calibration=config.calibration_settings() if config.calibration else None,
        forecast_trend_s=config.forecast_trend,
        cold_start_s=config.cold_start,
        length_blind_share=config.length_blind_share,
        interval_s=config.interval,
    )


def model_inputs(config: Config, inventory: Inventory, obs: Observation,
                 profiles: Mapping[VariantId, ProfileStatus],
                 evidence: Mapping[VariantId, VariantEvidence] | None = None,
                 ) -> tuple[list[ModelInput], dict[VariantId, int | None]]:
    """This cycle's observations in the cycle core's terms, and the replica counts they imply."""
    inputs: list[ModelInput] = []
    currents: dict[VariantId, int | None] = {}
    errors = {q: kind for q, kind in obs.errors.items() if q in REQUIRED}
    for model in inventory.models:
        variants = []
        for v in model.variants:
            vid = VariantId(v.namespace, v.name)
            current = obs.replicas.get((v.namespace, v.name), v.current_replicas)
            ready = obs.ready_replicas.get((v.namespace, v.name), v.ready_replicas)
            currents[vid] = current
            variants.append(VariantInput(
                id=vid, profile=profiles[vid].profile, min_replicas=v.min_replicas, max_replicas=v.max_replicas,
                current_replicas=current, ready_replicas=ready, scale_down_window_s=v.scale_down_window_s,
                pool=v.accelerator, gpus_per_replica=v.gpus_per_replica if v.gpus_per_replica != 1 else None,
                evidence=None if evidence is None else evidence.get(vid),
                cold_start_s=v.cold_start_s,
            ))
        facts = obs.models.get((model.namespace, model.name))
        series = None if facts is None else facts.series(model.namespace, config.rate_window_s, config.scrape_interval)
        inputs.append(ModelInput(ModelId(model.namespace, model.name), tuple(variants), series, errors))
    return inputs, currents


_ERROR_KIND = {Verdict.MISSING: "empty", Verdict.WARMING: "empty", Verdict.STALE: "stale", Verdict.PARTIAL: "partial"}


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
        in_thread: bool = True,
        calibration: CalibrationStore | None = None,
    ) -> None:
        self.config = config
        self.inventory = inventory
        self.observer = observer
        self.profiles = profiles
        self.state = state
        self.table = table
        self.clock = clock
        self.in_thread = in_thread  # the replay runs the core inline: it has no event loop to keep free
        self.planner = Planner()
        self.problems = StateLog()
        self.cycles = 0
        self.last: CycleResult | None = None
        self.recent: dict[ModelId, list[tuple[float, Demand]]] = {}  # the forecast's look-back, in memory only
        self.calibration = calibration or CalibrationStore(None, config.calibration_settings())
        self.excluded: dict[VariantId, float] = {}  # given no load by the length-blind rule, last cycle
        self.evidence_at: float | None = None  # when the calibration's evidence was last asked for
        self.evidence: dict[VariantId, VariantEvidence] | None = None  # arrived, not yet used by a cycle

    async def cycle(self) -> Published:
        started = time.perf_counter()
        now = self.clock()
        inventory = self.inventory.current()
        evidence, self.evidence = self.evidence, None  # one calibration step per window of evidence
        obs, profiles, _ = await asyncio.gather(
            self.observer.observe(now), self.profiles.lookup(inventory), self.state.load()
        )
        inputs, currents = model_inputs(self.config, inventory, obs, profiles, evidence)
        settings = cycle_settings(self.config, inventory)
        history = self.state.history()
        learnt = self.calibration.state
        if settings.calibration is not None and evidence is not None:
            learnt = apply_control(learnt, await self.calibration.controls(), settings.calibration)
        args = (inputs, history, now, settings, self.planner, self.recent, learnt)
        result = await asyncio.to_thread(run_cycle, *args) if self.in_thread else run_cycle(*args)
        self.recent = dict(result.recent)
        if result.calibration is not None:
            await self._keep_calibration(result.calibration, before=self.calibration.state)

        for vid, entries in result.history.items():
            self.state.put(vid, entries, now if vid in result.decided else None)
        await self.state.save(list(result.history))
        self._report(result)

        published = publish_cycle(result, inventory, profiles, self.state.variants, currents,
                                  self.table.published, now)
        if settings.calibration is not None:
            published = dataclasses.replace(published, calibration=self._gauges(inputs, settings.calibration))
        self.table.publish(published)
        self.table.counters.cycle_seconds.observe(time.perf_counter() - started)
        self.cycles += 1
        self.last = result
        return published

    def _gauges(self, inputs: list[ModelInput], settings: CalibrationSettings) -> tuple[Gauge, ...]:
        """The calibration's gauges for every planned model and profiled variant: what nothing was learnt
        for yet is planned as profiled (factor 1) at the initial utilisation, and says so."""
        state = self.calibration.state
        variants = {str(v.id): state.variants.get(str(v.id), VariantCalibration())
                    for m in inputs for v in m.variants if v.profile is not None}
        models = {str(m.id): state.models.get(str(m.id), ModelHeadroom(settings.utilization_initial))
                  for m in inputs if any(v.profile is not None for v in m.variants)}
        model_of = {str(v.id): m.id.name for m in inputs for v in m.variants}
        return tuple(gauges(CalibrationState({**state.variants, **variants}, {**state.models, **models}), model_of))

    def evidence_due(self) -> bool:
        """Whether a new window of calibration evidence is due (every `calibration_interval`)."""
        return self.config.calibration and (
            self.evidence_at is None or self.clock() - self.evidence_at >= self.config.calibration_interval)

    async def gather_evidence(self) -> None:
        """Ask for this window's calibration evidence and keep it for the next cycle (nothing when a query
        failed: the Observer has said why). Its own deadline: the window comes once a `calibration_interval`,
        and the cycle does not wait for it."""
        if not self.config.calibration:
            return
        await self.calibration.load()
        now = self.evidence_at = self.clock()
        deadline = max(self.config.prometheus_timeout, self.config.calibration_interval / 2)
        found = await calibration_evidence.collect(self.config, self.observer, now, deadline)
        if found is not None:
            self.evidence = found

    async def _keep_calibration(self, step: CalibrationStep, before: CalibrationState) -> None:
        """Store the entries that changed, and log each change with its evidence."""
        for key, verdict in step.changes():
            ev = verdict.evidence
            log.info("calibration_changed", entry=key, outcome=verdict.outcome.value, before=round(verdict.before, 4),
                     after=round(verdict.after, 4), detail=verdict.detail, load=ev.load,
                     latency_ratio=ev.latency_ratio, attainment=ev.attainment, completions=ev.completions,
                     replicas_used=ev.replicas_used, replicas_warming=ev.replicas_warming, estimate=ev.estimate)
        await self.calibration.save(step.state, step.state.changed_since(before))

    def _report(self, result: CycleResult) -> None:
        """Logs once per change of a model's verdict, and counts what went wrong."""
        for mid, outcome in result.models.items():
            ok = outcome.verdict in (Verdict.FRESH, Verdict.IDLE)
            self.problems.report(f"demand:{mid}", "ok" if ok else outcome.verdict.value, why=outcome.why)
            if (kind := _ERROR_KIND.get(outcome.verdict)) is not None:
                self.table.counters.error(kind)
            est = outcome.estimate
            if est is not None and est.crosscheck is not None:
                state = "ok" if 0.5 <= est.crosscheck <= 2.0 else "mismatch"
                self.problems.report(f"crosscheck:{mid}", state, ratio=round(est.crosscheck, 2),
                                     hint="prompt-length histogram and token rate disagree")
        for vid in result.excluded.keys() - self.excluded.keys():
            log.info("length_blind_excluded", variant=str(vid), share=round(result.excluded[vid], 3),
                     why="a length-blind router sends every replica every length: this share of the demand lies "
                         "where its profile claims nothing while another variant's claims it")
        # Only a variant planned from this cycle's data leaves the set: a cycle without demand judged nothing.
        for vid in (self.excluded.keys() - result.excluded.keys()) & result.decided:
            log.info("length_blind_included", variant=str(vid))
            del self.excluded[vid]
        self.excluded.update(result.excluded)
        plan = result.plan
        if plan is None:
            return
        for mkey in plan.models:
            hist = self.table.counters.solve_seconds.setdefault(mkey, Histogram())
            hist.observe(plan.solve_ms / 1e3)
            if not plan.exact(mkey):
                fb = self.table.counters.solver_fallback
                fb[mkey] = fb.get(mkey, 0) + 1
        self.problems.report("solver", "ok" if not plan.greedy else "fallback", status=plan.status)

    # -- running

    async def fast_path(self) -> None:
        waiting = await self.observer.waiting(self.clock())
        if waiting is not None:
            before = self.table.waiting
            now_waiting = {ModelId(ns, m): w for (ns, m), w in waiting.items()}
            self.table.set_waiting(now_waiting)
            woke = [str(mid) for mid, w in now_waiting.items() if w > 0 and before.get(mid, 0.0) <= 0]
            if woke:
                log.info("demand_seen", models=woke)

    def background(self, stop: asyncio.Event, leading: Callable[[], bool] = lambda: True) -> list[asyncio.Task[None]]:
        """The steps that run beside the cycle: the fast path, and the calibration's evidence while `leading`."""
        async def evidence() -> None:
            if leading():
                await self.gather_evidence()

        tasks = [asyncio.create_task(self._every(self.config.fast_interval, self.fast_path, stop, "fast_path"))]
        if self.config.calibration:
            tasks.append(asyncio.create_task(
                self._every(self.config.calibration_interval, evidence, stop, "calibration_evidence")))
        return tasks

    async def run(self, stop: asyncio.Event) -> None:
        tasks = self.background(stop)
        try:
            await self._every(self.config.interval, self.cycle, stop, "cycle")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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
