"""The ExternalScaler the replay's KEDA emulator calls, in process: the servicer's answers without gRPC.

Every answer comes from scaler/answer.py over the Controller's published table, exactly as scaler/keda.py
answers over gRPC (status codes as ScalerCallError codes, the same values, the same activation rule), so the
replay's KEDA sees what a real KEDA sees from `gpumix serve`.
"""

from __future__ import annotations

from collections.abc import Callable

from scaler.answer import Answer, Trigger, TriggerError, is_active, metric_spec, metric_value, parse_trigger
from scaler.config import Config
from scaler.metric import legacy_int, legacy_target
from scaler.table import Table
from sim.keda_emulator import MetricSpec, MetricValue, ScaledObjectRef, ScalerCallError


class InProcessScaler:
    def __init__(self, table: Table, config: Config, clock: Callable[[], float]) -> None:
        self.table = table
        self.config = config
        self.clock = clock

    def _trigger(self, ref: ScaledObjectRef) -> Trigger:
        try:
            return parse_trigger(ref.scaler_metadata, ref.namespace, self.config.target)
        except TriggerError as exc:
            raise ScalerCallError("INVALID_ARGUMENT", str(exc)) from exc

    @staticmethod
    def _raise(answer: Answer) -> None:
        if not answer.ok:
            raise ScalerCallError(answer.code.value, answer.message)

    def get_metric_spec(self, ref: ScaledObjectRef) -> list[MetricSpec]:
        trig = self._trigger(ref)
        self._raise(metric_spec(trig, self.table.published))
        return [MetricSpec(trig.metric, legacy_target(trig.target), trig.target)]

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> list[MetricValue]:
        trig = self._trigger(ref)
        answer = metric_value(trig, self.table.published, self.clock(), self.config.stale_after_s, metric_name)
        self._raise(answer)
        return [MetricValue(trig.metric, legacy_int(answer.value), answer.value)]

    def is_active(self, ref: ScaledObjectRef) -> bool:
        try:
            trig = self._trigger(ref)
        except ScalerCallError:
            return False
        return is_active(trig, self.table.published, self.table.waiting)
