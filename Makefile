# Two entry points: `make run` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-run
TSTAMP := $(VENV)/.installed-test

.PHONY: run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# Tests install the Ray extra too, so the Ray backend is tested on a local Ray instance.
$(TSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@ $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.run

# One BLAS thread: on a 2-core machine, threaded BLAS in small matrix products only adds stalls.
test: $(TSTAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m experiments.bench

clean:
	rm -rf $(VENV) outputs multirun
