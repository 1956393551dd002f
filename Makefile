# gpumix — every target sets itself up first, so a fresh clone needs only `make demo` or `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed

.PHONY: setup demo test lint typecheck bench clean proto mutation

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $(STAMP)

proto: setup
	$(PY) -m scaler.protogen

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
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build *.egg-info
