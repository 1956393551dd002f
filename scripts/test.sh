#!/usr/bin/env bash
# The whole suite: lint, types, then pytest. pytest's exit 5 ("no tests collected") is a failure here:
# a suite that runs nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests" >&2
  exit 1
fi
exit $rc
