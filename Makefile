# gpumix — every target sets itself up first, so a fresh clone needs only `make demo` or `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed

.PHONY: setup demo test lint typecheck bench clean proto lock mutation

setup: $(STAMP)

# Re-run when the lock or the .proto changes too: the editable install regenerates scaler/_proto/.
$(STAMP): pyproject.toml constraints.txt proto/externalscaler.proto scripts/setup.sh
	bash scripts/setup.sh
	@touch $(STAMP)

# Regenerate the gRPC stubs (scaler/_proto/) from proto/externalscaler.proto in the source tree.
proto: setup
	$(PY) -m scaler.protogen

# Refresh constraints.txt — the lock `make setup`, CI and deploy/Dockerfile install from — to the newest
# versions pyproject.toml allows (runtime, dev extras and build requirements), for Python 3.11. Needs PyPI.
# pip-tools runs from a throwaway venv so it is no dependency of the project. LOCK_PINS hold versions back:
#   highspy 1.15.1: 1.16.0 prints its banner to stdout when a solver is created, which breaks `--json`
#   output (checked: `python -c "import highspy; highspy.Highs()"` is silent on 1.15.1, not on 1.16.0).
LOCK_PINS := highspy==1.15.1
LOCK_VENV := build/lock-venv
lock:
	rm -rf $(LOCK_VENV)
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade 'pip>=25.3' 'pip-tools==7.6.2'
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --upgrade $(addprefix --upgrade-package ,$(LOCK_PINS)) \
	  --extra dev --all-build-deps --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file constraints.txt pyproject.toml
	rm -rf $(LOCK_VENV)

demo: setup
	$(PY) -m sim.demo

test: setup
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

mutation: setup
	$(PY) scripts/mutation.py --write

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build *.egg-info scaler/_proto/*_pb2*.py
