"""CLI conventions: `--version` from the one version in pyproject.toml, `python -m gpumix`, defaults in every
`--help`, the README's synopses, and `--json` output that a pipe into a JSON parser accepts."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scaler import cli
from tests.conftest import DATA, REPO

GPUMIX = str(REPO / ".venv" / "bin" / "gpumix")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", [[GPUMIX], [sys.executable, "-m", "gpumix"]], ids=["gpumix", "python -m"])
def test_version_is_pyprojects(command: list[str]) -> None:
    done = _run(*command, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"gpumix {VERSION}", done


def test_python_m_gpumix_is_the_same_command() -> None:
    done = _run(sys.executable, "-m", "gpumix", "solve", "--help")
    assert done.returncode == 0 and done.stdout == _run(GPUMIX, "solve", "--help").stdout


def _parsers() -> dict[str, argparse.ArgumentParser]:
    return cli.build_parser(cli.COMMANDS)[1]


def _help_lines(parser: argparse.ArgumentParser, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    return parser.format_help().splitlines()


def _option_line(lines: list[str], flag: str) -> str:
    """The option's entry in --help: its line and the help text argparse may put on the next one."""
    starts = [i for i, line in enumerate(lines) if re.match(rf"^  (-\w, )?{re.escape(flag)}(?=[ ,]|$)", line)]
    assert len(starts) == 1, (flag, starts)
    entry = [lines[starts[0]]]
    for line in lines[starts[0] + 1:]:
        if not line.startswith("   "):  # the next option, or the end of the section
            break
        entry.append(line.strip())
    return " ".join(entry)


@pytest.mark.parametrize(("command", "flag", "shown"), [
    ("solve", "--utilization", "(default: 0.8)"),
    ("solve", "--time-limit", "(default: 5.0)"),
    ("replay", "--speedup", "(default: 1.0)"),
    ("replay", "--routing", "(default: least-outstanding)"),
    ("replay", "--seed", "(default: 0)"),
    ("benchmark", "--requests", "(default: 100)"),
    ("benchmark", "--input", "(default: [128, 512])"),
    ("profile", "--gpus-per-replica", "(default: 1)"),
    ("rightsize", "--context", "(default: 1024.0)"),
    ("rightsize", "--grid-outputs", "(default: 16,32,64,128,256,512)"),
    ("serve", "--grpc-port", "(default: 9090)"),  # the built-in Config default behind a None flag
    ("serve", "--interval", "(default: 15.0)"),
    ("serve", "--log-level", "(default: info)"),
])
def test_help_shows_defaults(command: str, flag: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown in _option_line(_help_lines(_parsers()[command], monkeypatch), flag)


def test_every_option_with_a_default_says_it_and_no_help_says_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, parser in _parsers().items():
        lines = _help_lines(parser, monkeypatch)
        text = "\n".join(lines)
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text, name
        for action in parser._actions:
            d = action.default
            meaningful = not (d is None or d is False or d is argparse.SUPPRESS or d == [])  # 0 is meaningful
            if action.option_strings and meaningful and not isinstance(action, argparse._HelpAction):
                assert "default" in _option_line(lines, action.option_strings[-1]), (name, action.option_strings)


def test_replay_writes_outside_the_working_directory_by_default() -> None:
    out = Path(next(a.default for a in _parsers()["replay"]._actions if a.dest == "out"))
    assert out.is_absolute() and not out.is_relative_to(REPO), out
    assert "replay-out/" in (REPO / ".gitignore").read_text().splitlines()  # the old default, if given by hand


# ------------------------------------------------------------------------------------------ README synopses

SYNOPSIS = re.compile(r"^\| `(gpumix [^`]+)` \|", re.M)


def _synopses() -> dict[str, str]:
    found = {}
    for line in SYNOPSIS.findall((REPO / "README.md").read_text()):
        text = line.replace("\\|", "|")
        found[text.split()[1]] = text
    return found


def test_readme_lists_every_command() -> None:
    assert set(_synopses()) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_readme_synopsis_matches_the_command(command: str) -> None:
    synopsis = _synopses()[command]
    done = _run(GPUMIX, command, "--help")
    assert done.returncode == 0, done.stderr
    parser = _parsers()[command]
    options = {s for a in parser._actions for s in a.option_strings}
    written = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", synopsis))
    assert written <= options, f"{synopsis!r}: no such option {sorted(written - options)}"
    assert all(flag in done.stdout for flag in written)
    required = [a.option_strings for a in parser._actions if a.required and a.option_strings]
    missing = [flags[-1] for flags in required if not set(flags) & written]
    assert not missing, f"README synopsis of `gpumix {command}` omits required {missing}"
    for group in parser._mutually_exclusive_groups:
        if group.required:
            assert any(set(a.option_strings) & written for a in group._group_actions), \
                f"README synopsis of `gpumix {command}` omits one of {[a.option_strings for a in group._group_actions]}"
    positionals = [a for a in parser._actions if not a.option_strings and a.nargs != 0
                   and not isinstance(a, argparse._SubParsersAction)]
    bare = [w for w in synopsis.split()[2:] if not w.startswith(("-", "[", "(")) and not w.endswith(("]", ")"))]
    assert len(bare) >= len(positionals), f"{synopsis!r}: {len(positionals)} positional argument(s)"


# --------------------------------------------------------------------------------- --json through a pipe


def _pipe_into_json_tool(command: str, cwd: Path = REPO) -> dict:  # type: ignore[type-arg]
    """`command | python -m json.tool` in a real shell pipeline, stderr kept apart (logs and progress go
    there): stdout must be one JSON document and nothing else."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} | {sys.executable} -m json.tool"],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, f"{command}\nstdout: {done.stdout[:2000]}\nstderr: {done.stderr[-2000:]}"
    return dict(json.loads(done.stdout))


def test_solve_json_pipes_into_a_json_parser() -> None:
    plan = _pipe_into_json_tool(
        f"{GPUMIX} solve --profiles {DATA / 'aibrix'} --demand {REPO / 'examples' / 'demand-llama2-7b.json'} --json")
    assert plan["replicas"] and all(isinstance(n, int) for n in plan["replicas"].values())


def test_replay_json_pipes_into_a_json_parser(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    with (DATA / "traces" / "azure-llm-2023-code.csv").open() as f:
        trace.write_text("".join(line for _, line in zip(range(301), f, strict=False)))  # header + 300 requests
    doc = _pipe_into_json_tool(f"{GPUMIX} replay {trace} --policy gpumix --json --out {tmp_path / 'out'}")
    assert [r["policy"] for r in doc["results"]] == ["gpumix"]
    assert (tmp_path / "out" / "results.json").is_file()


def test_json_commands_are_all_covered() -> None:
    with_json = {name for name, p in _parsers().items() if any("--json" in a.option_strings for a in p._actions)}
    # calibrate's JSON is read back against a real Prometheus in tests/calibration/test_command.py.
    assert with_json == {"solve", "replay", "calibrate"}, "a new --json command needs its pipe test here"
