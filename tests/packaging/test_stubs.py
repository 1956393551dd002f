"""The gRPC stubs: generated at build time from proto/externalscaler.proto into scaler._proto (no top-level
`proto` package, which is proto-plus's import name), and a wheel that ships them without grpcio-tools."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
import venv
from pathlib import Path

import pytest
from setuptools import find_packages

from scaler import protogen
from tests.conftest import REPO

STUBS = REPO / "scaler" / "_proto"


def test_the_stubs_in_the_tree_are_fresh() -> None:
    assert protogen.is_fresh(STUBS), "scaler/_proto is older than proto/externalscaler.proto: run `make proto`"


def test_generation_is_deterministic_and_stamped(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    for name in protogen.OUTPUTS:
        assert (tmp_path / name).read_text() == (STUBS / name).read_text(), name
    assert protogen.stamp(tmp_path) == protogen.source_digest()
    assert "from scaler._proto import externalscaler_pb2" in (tmp_path / "externalscaler_pb2_grpc.py").read_text()


def test_a_changed_source_makes_the_stubs_stale(tmp_path: Path) -> None:
    source = tmp_path / "externalscaler.proto"
    source.write_text(protogen.SOURCE.read_text() + "\n// changed\n")
    assert protogen.is_fresh(STUBS) and not protogen.is_fresh(STUBS, source)
    assert not protogen.is_fresh(tmp_path / "nothing-here")


def test_a_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.proto"):
        protogen.generate(tmp_path / "out", tmp_path / "nope.proto")


def test_no_top_level_proto_package_is_packaged() -> None:
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(REPO), include=include)
    assert "scaler._proto" in packages
    assert not [p for p in packages if p == "proto" or p.startswith("proto.")], packages


def test_a_missing_stub_says_how_to_get_it(tmp_path: Path) -> None:
    # A copy of the package without the generated files, imported in a fresh interpreter.
    (tmp_path / "scaler" / "_proto").mkdir(parents=True)
    (tmp_path / "scaler" / "__init__.py").write_text("")
    (tmp_path / "scaler" / "_proto" / "__init__.py").write_text((STUBS / "__init__.py").read_text())
    run = subprocess.run([sys.executable, "-c", "from scaler._proto import externalscaler_pb2"], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode != 0 and "make proto" in run.stderr, run.stderr


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked, plus new ones not ignored): a build from them proves the wheel does
    not rely on anything generated in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file() and not name.startswith(("data/traces/", "tests/", "bench/", "grafana/", "deploy/")):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
    return dest


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_pip_install_next_to_proto_plus_leaves_both_working(tmp_path: Path) -> None:
    """`pip install .` into a venv that already has proto-plus (which owns the import name `proto`, and which
    every google-cloud library depends on). Uses pip's cache; about a minute when it is warm."""
    src = _source_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    lock = str(REPO / "constraints.txt")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    run(*pip, "pip>=25.3")
    run(*pip, "--constraint", lock, "proto-plus")
    run(*pip, "--constraint", lock, "--build-constraint", lock, str(src))
    check = textwrap.dedent("""
        import importlib.metadata as md, importlib.util, pathlib, json
        import proto                                   # proto-plus, untouched
        assert proto.Message and pathlib.Path(proto.__file__).parent.name == "proto"
        from scaler._proto import externalscaler_pb2 as pb, externalscaler_pb2_grpc as pb_grpc
        assert pb.DESCRIPTOR.services_by_name["ExternalScaler"]
        assert pb_grpc.ExternalScalerStub
        import scaler.keda                              # the service imports its stubs from the wheel
        files = [str(f) for f in md.files("gpumix")]
        print(json.dumps({
            "proto_owner": [d.metadata["Name"] for d in md.distributions()
                            if any(str(f).startswith("proto/") for f in (d.files or []))],
            "gpumix_files": files,
            "grpc_tools": importlib.util.find_spec("grpc_tools") is not None,
            "version": md.version("gpumix"),
        }))
    """)
    import json

    report = json.loads(run(py, "-c", check).stdout.strip().splitlines()[-1])
    assert report["proto_owner"] == ["proto-plus"], "only proto-plus owns the top-level `proto` package"
    assert "scaler/_proto/externalscaler_pb2.py" in report["gpumix_files"]
    assert "scaler/_proto/externalscaler_pb2_grpc.py" in report["gpumix_files"]
    assert not report["grpc_tools"], "grpcio-tools is a build dependency only"
    assert report["version"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    version = run(str(env_dir / "bin" / "gpumix"), "--version").stdout.strip()
    assert version == f"gpumix {report['version']}"
