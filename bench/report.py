"""BENCHMARKS.md is shared by every benchmark: each owns one section between markers and rewrites only it,
so benches can run in any order and the file keeps what the others measured."""

from __future__ import annotations

import fcntl
import platform
import shlex
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """# Benchmarks

Figures written by the scripts in bench/. Each section names the command that produced it; rerun it to
refresh that section only. These machines are noisy: compare ratios and medians measured in the same run,
not absolute times across runs.
"""


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def command_line() -> str:
    """The command that reruns this process: `-m module` when started as a module, the script's path when
    started as a script (`python -m scripts/mutation.py` is not a command anyone can run)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *program, *sys.argv[1:]])


def routing_suffix(routing: str) -> str:
    """What a replay routing other than the default adds to section and plot names."""
    from sim.engine import DEFAULT_ROUTING

    return "" if routing == DEFAULT_ROUTING else f"-{routing}-routing"


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section `name` with `body` (markdown), stamped with command and date."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamped = (
        f"{start}\n{body.rstrip()}\n\n_Command: `{command_line()}` — {time.strftime('%Y-%m-%d')}, {machine()}._\n{end}"
    )
    BENCHMARKS.touch()
    with BENCHMARKS.open("r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = f.read() or HEADER
        if start in text and end in text:
            text = text[: text.index(start)] + stamped + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n" + stamped + "\n"
        f.seek(0)
        f.truncate()
        f.write(text)
    return BENCHMARKS
