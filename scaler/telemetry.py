"""gpumix's own counters and histograms, updated by the control cycle and read by /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


class Histogram:
    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.BOUNDS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1


@dataclass
class Counters:
    observation_errors: dict[str, int] = field(default_factory=dict)
    solver_fallback: dict[str, int] = field(default_factory=dict)
    solve_seconds: dict[str, Histogram] = field(default_factory=dict)
    cycle_seconds: Histogram = field(default_factory=Histogram)

    def error(self, kind: str) -> None:
        self.observation_errors[kind] = self.observation_errors.get(kind, 0) + 1
