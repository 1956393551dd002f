"""`gpumix render` refuses a scale-down window shorter than the variant's cold start (rent or buy)."""

from __future__ import annotations

import pytest

from scaler.inventory import ModelInfo, VariantInfo
from scaler.render import RenderError, render_all


def model(window: float, cold_start: float | None) -> ModelInfo:
    return ModelInfo("m", "llm", (VariantInfo(name="m-l4", model="m", namespace="llm", scale_down_window_s=window,
                                              cold_start_s=cold_start),))


@pytest.mark.parametrize("case, window, cold_start, refused", [
    ("window longer than the cold start", 300.0, 180.0, False),
    ("window equal to the cold start: the break-even", 180.0, 180.0, False),
    ("window shorter than the cold start", 60.0, 180.0, True),
    ("cold start unknown: nothing to check against", 60.0, None, False),
])
def test_release_window_covers_the_cold_start(case: str, window: float, cold_start: float | None,
                                              refused: bool) -> None:
    if refused:
        with pytest.raises(RenderError, match="shorter than its cold_start_s 180"):
            render_all([model(window, cold_start)])
    else:
        assert "stabilizationWindowSeconds" in render_all([model(window, cold_start)])[0][1]
