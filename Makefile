# Two entry points: `make flow` and `make test`. Both bootstrap .venv from nothing.
PYTHON ?= python3
# Training is bit-reproducible on one machine, but MKL picks its kernels by processor, and two
# x86 processors then train to different weights (a point of accuracy apart on the digits
# CNN). Its conditional numerical reproducibility mode gives every x86 processor the same
# results from MKL (tests/conftest.py and `import squeezeforge` set it too).
export MKL_CBWR ?= COMPATIBLE
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: flow sweep test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

flow: $(STAMP)
	$(VENV)/bin/squeezeforge flow

# The default design-space sweep (codegen/sweeps/digits-cnn.toml) on a local Dask cluster, one
# worker per core; a rerun resumes. docs/sweep.md has the spec format and the cluster set-up.
sweep: $(STAMP)
	$(VENV)/bin/squeezeforge sweep digits-cnn -o runs/sweep

# One pytest worker per core (override: make test WORKERS=1). A file's tests stay on one worker,
# so a module's Verilator build or trained net is made once. Files go out in the order
# tests/conftest.py gives them (longest first); xdist would otherwise reorder them by their
# number of tests and hand the longest file out last.
WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not rtl and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(PY) scripts/lint_imports.py

clean:
	rm -rf build .pytest_cache
