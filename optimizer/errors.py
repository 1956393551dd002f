"""The one shape of "this input cannot be used": where it came from, and every problem found in it, each
naming its field, so a user fixes them all in one go (like KEDA's scaler config parsing)."""

from __future__ import annotations

from collections.abc import Sequence


class InputError(ValueError):
    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))
