"""Generate proto/externalscaler_pb2*.py from proto/externalscaler.proto when missing or stale.

The generated modules are not committed (the .proto is the source). Importing scaler.keda calls `ensure()`,
so a fresh clone needs no manual step; `python -m scaler.protogen` (make proto) forces it. Generation writes
into a temporary directory and renames, so parallel test processes never import a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO / "proto"
SOURCE = PROTO_DIR / "externalscaler.proto"
OUTPUTS = ("externalscaler_pb2.py", "externalscaler_pb2_grpc.py")
STAMP_PREFIX = "# gpumix source sha256: "  # first line of the generated _pb2 module


def _digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def is_fresh() -> bool:
    if not all((PROTO_DIR / name).exists() for name in OUTPUTS):
        return False
    with (PROTO_DIR / OUTPUTS[0]).open() as f:
        return f.readline().strip() == (STAMP_PREFIX + _digest()).strip()


def generate() -> None:
    import grpc_tools  # only needed when generating
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory(prefix="gpumix-protogen-", dir=PROTO_DIR) as tmp:
        # -I at the repo root makes the grpc module import `from proto import externalscaler_pb2`.
        rc = protoc.main(
            ["grpc_tools.protoc", f"-I{REPO}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
             str(SOURCE.relative_to(REPO))]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {SOURCE}")
        pb2 = Path(tmp) / "proto" / OUTPUTS[0]
        pb2.write_text(STAMP_PREFIX + _digest() + "\n" + pb2.read_text())
        # grpc module first: the stamped pb2 appearing last marks the pair complete.
        for name in reversed(OUTPUTS):
            os.replace(Path(tmp) / "proto" / name, PROTO_DIR / name)


def ensure() -> None:
    if not is_fresh():
        generate()


def main() -> int:
    generate()
    print(f"protogen: generated {', '.join(OUTPUTS)} from {SOURCE.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
