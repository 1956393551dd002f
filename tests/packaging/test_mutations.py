"""`make mutation` only proves a rule when its snippet still names the rule: each must be found exactly once,
or the run stops with "the rule moved" after minutes. Checked here, in `make test`, in milliseconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpumix_mutation", ROOT / "scripts" / "mutation.py")
assert _spec is not None and _spec.loader is not None
mutation = importlib.util.module_from_spec(_spec)
sys.modules["gpumix_mutation"] = mutation
_spec.loader.exec_module(mutation)


@pytest.mark.parametrize("m", mutation.MUTATIONS, ids=[m.rule for m in mutation.MUTATIONS])
def test_each_mutation_names_its_rule_exactly_once(m: Any) -> None:
    found = (ROOT / m.path).read_text().count(m.before)
    assert found == 1, f"{m.rule}: the snippet occurs {found} times in {m.path}"
    assert m.before != m.after
