#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine with Python 3.11: a venv under the repo, the project with
# its dev extras at exactly the versions in constraints.txt (the lock; `make lock` refreshes it), and the
# Debian prometheus and redis-server packages the integration tests and demo run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade 'pip>=25.3'  # 25.3: --build-constraint
# The lock constrains the build too (setuptools, grpcio-tools generating scaler/_proto in the editable build),
# so the stubs' protobuf gencode matches the locked protobuf runtime.
.venv/bin/python -m pip install --quiet --constraint constraints.txt --build-constraint constraints.txt -e '.[dev]'

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The packages enable system services; gpumix starts its own on loopback, so stop any that started.
  for svc in prometheus redis-server; do
    (command -v service >/dev/null 2>&1 && $SUDO service "$svc" stop >/dev/null 2>&1) || true
  done
fi
echo "setup: ok ($(.venv/bin/python --version), prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), $(redis-server --version | awk '{print $3}'))"
