"""The venv is the lock: constraints.txt pins every package `make setup` installs, pyproject.toml keeps only
lower bounds (for people installing gpumix into their own environment), and the two agree."""

from __future__ import annotations

import re
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

LOCK = REPO / "constraints.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
# In the venv but never in a lock: the installer itself, and gpumix (installed editable from the tree).
NOT_LOCKED = {"pip", "gpumix"}


def parse_lock(text: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        if match is None:
            raise ValueError(f"constraints.txt line {number}: not a `name==version` pin: {stripped!r}")
        name = canonicalize_name(match.group(1))
        if name in pins:
            raise ValueError(f"constraints.txt line {number}: {name} pinned twice")
        pins[name] = match.group(2)
    return pins


@pytest.mark.parametrize(("text", "want"), [
    ("numpy==2.1.0\n    # via gpumix\n", {"numpy": "2.1.0"}),
    ("PyYAML==6.0.2\n", {"pyyaml": "6.0.2"}),
    ("# comment\n\nsetuptools==80.1\n", {"setuptools": "80.1"}),
])
def test_lock_lines_parse(text: str, want: dict[str, str]) -> None:
    assert parse_lock(text) == want


@pytest.mark.parametrize(("text", "problem"), [
    ("numpy>=2\n", "not a `name==version` pin"),
    ("-e .\n", "not a `name==version` pin"),
    ("numpy==2.1\nNumPy==2.2\n", "pinned twice"),
])
def test_lock_rejects_what_is_not_an_exact_pin(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_lock(text)


def _installed() -> dict[str, str]:
    # Only the venv's site-packages: sys.path can also hold copies vendored by other packages (setuptools puts
    # its own `packaging` there once imported), which pip did not install.
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths)}


def test_the_venv_has_exactly_the_locked_versions() -> None:
    pins, installed = parse_lock(LOCK.read_text()), _installed()
    wrong = {name: (installed.get(name), pinned) for name, pinned in pins.items() if installed.get(name) != pinned}
    assert not wrong, f"installed vs locked (run `make setup`): {wrong}"
    extra = sorted(set(installed) - set(pins) - NOT_LOCKED)
    assert not extra, f"installed but not in constraints.txt (run `make lock`, or remove them): {extra}"


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _declared() -> list[Requirement]:
    project = _pyproject()
    reqs = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["dev"],
            *project["build-system"]["requires"]]
    return [Requirement(r) for r in reqs]


def test_pyproject_keeps_lower_bounds_and_the_lock_satisfies_them() -> None:
    pins = parse_lock(LOCK.read_text())
    for req in _declared():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), \
            f"{req}: pyproject.toml keeps ranges; exact versions belong in constraints.txt"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not locked (run `make lock`)"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"lock {name}=={pins[name]} vs {req}"


def test_the_makefile_holds_back_what_the_lock_pins_for_a_reason() -> None:
    makefile = (REPO / "Makefile").read_text()
    held = re.search(r"^LOCK_PINS\s*:=\s*(.*)$", makefile, re.M)
    assert held, "Makefile: LOCK_PINS"
    pins = parse_lock(LOCK.read_text())
    for pin in held.group(1).split():
        name, version = pin.split("==")
        assert pins[canonicalize_name(name)] == version, f"constraints.txt does not hold {pin}"


@pytest.mark.parametrize("installer", [REPO / "scripts" / "setup.sh", REPO / "deploy" / "Dockerfile"])
def test_every_installer_installs_from_the_lock(installer: Path) -> None:
    text = installer.read_text()
    installs = [line for line in text.splitlines() if re.search(r"pip install\b.*(\.|-e)", line)
                and "'pip>=" not in line]
    assert installs, f"{installer.name}: no pip install of the project"
    for line in installs:
        assert "--constraint constraints.txt" in line and "--build-constraint constraints.txt" in line, \
            f"{installer.name}: {line.strip()!r} does not install from the lock"
