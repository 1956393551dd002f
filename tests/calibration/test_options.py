"""The calibration's options in gpumix's configuration: validated by the calibration's own settings
(optimizer/calibrate.py), every problem named by the option a user sets, all reported together."""

from __future__ import annotations

import pytest

from scaler.config import ConfigError, load

BASE = {"prometheus": "http://127.0.0.1:9090", "redis": "redis://127.0.0.1:6379/0", "kubernetes": True}

ROWS = [
    # (case, options, the message's start)
    ("factor bounds around 1", {"calibration_factor_max": 0.5}, "calibration_factor_min/calibration_factor_max"),
    ("a negative warm-up", {"calibration_warmup": -1}, "calibration_warmup: must be ≥ 0"),
    ("an attainment target of 1 or more", {"attainment_target": 1.0}, "attainment_target: must be in (0, 1)"),
    ("utilization outside its own limits", {"utilization_min": 0.9},
     "utilization_min ≤ utilization ≤ utilization_max"),
    ("a calibration window that is no duration", {"calibration_window": "2 min"}, "calibration_window:"),
    ("a non-positive interval", {"calibration_interval": 0}, "calibration_interval: must be > 0"),
    ("a KV knee past a full cache", {"calibration_kv_knee": 1.2}, "calibration_kv_knee: must be in (0, 1]"),
]


@pytest.mark.parametrize("case, options, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_calibration_options_are_named(case: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {**BASE, **options}, environ={})
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {**BASE, "calibration_factor_max": 0.5, "attainment_target": 2.0, "calibration_warmup": -5},
             environ={})
    assert len(err.value.problems) == 3


def test_the_options_become_the_calibration_settings() -> None:
    config = load(None, {**BASE, "utilization": 0.7, "calibration_factor_max": 1.5, "calibration_warmup": 60},
                  environ={})
    settings = config.calibration_settings()
    assert (settings.utilization_initial, settings.factor_max, settings.warmup_s) == (0.7, 1.5, 60.0)
