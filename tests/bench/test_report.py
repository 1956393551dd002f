"""The command BENCHMARKS.md stamps on a section must rerun it."""

from __future__ import annotations

import sys
import types

import pytest

from bench import report


@pytest.mark.parametrize("case, spec_name, argv, command", [
    ("started as a module", "bench.bench_replay", ["/x/bench/bench_replay.py", "--no-write"],
     ".venv/bin/python -m bench.bench_replay --no-write"),
    ("started as a script", None, ["scripts/mutation.py", "--write"], ".venv/bin/python scripts/mutation.py --write"),
    ("arguments quoted", "bench.bench_cycle", ["x", "--models", "1 100"],
     ".venv/bin/python -m bench.bench_cycle --models '1 100'"),
])
def test_command_line(monkeypatch: pytest.MonkeyPatch, case: str, spec_name: str | None, argv: list[str],
                      command: str) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = None if spec_name is None else types.SimpleNamespace(name=spec_name)  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", argv)
    assert report.command_line() == command
