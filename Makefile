# Entry points: `make run` and `make test` (and `make test-quick`, `make smoke`, `make bench`,
# `make figures`).
# They create the virtual environment $(VENV) if it is missing, with the newest of python3.13,
# python3.12 and python3.11 that runs on this machine, then python3 if it is 3.11 or newer;
# `make PYTHON=/path/to/python3.x ...` wins. An existing $(VENV) is kept (and gets uv, see below).
PYTHON ?=
VENV   ?= .venv
EXTRAS ?= test,ray-backend
ARGS   ?=
TESTS  ?=
# Test workers (pytest-xdist): one per core; `make test JOBS=0` runs in this process.
JOBS   ?= auto
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-run
TSTAMP := $(VENV)/.installed-test
IS_SUPPORTED := -c 'import sys; sys.exit(sys.version_info < (3, 11))'

# Python caches compiled modules (__pycache__/, ignored by git) even where the environment says not
# to (PYTHONDONTWRITEBYTECODE=1, set on some CI machines): the tests start about 60 Python processes
# (command lines, sweep workers, shard processes), and without the cache each one compiles every
# module of sim/, experiments/ and the tests again (measured: collecting the tests took 12.6 s per
# worker without the cache, 4.8 s with it).
unexport PYTHONDONTWRITEBYTECODE

# `make smoke`: a second installed Python version (other than $(VENV)'s), in its own venv: a
# tiny run and the quick tests of the engine, backends and imports.
SMOKE_VENV  := .venv-smoke
SMOKE_ARGS  := world=tiny engine.days=0.5 engine.progress=false hydra.run.dir=outputs/smoke
SMOKE_TESTS := tests/engine/test_imports.py tests/world/test_world.py tests/engine/test_engine.py tests/scale/test_scale.py

.PHONY: run test test-quick smoke bench figures clean

$(PY):
	@py="$(PYTHON)"; \
	if [ -z "$$py" ]; then \
	  for p in python3.13 python3.12 python3.11 python3; do \
	    if $$p $(IS_SUPPORTED) >/dev/null 2>&1; then py=$$p; break; fi; \
	  done; \
	fi; \
	if [ -z "$$py" ]; then \
	  echo "No Python 3.11, 3.12 or 3.13 found: python3.13, python3.12, python3.11 and python3 on the PATH"; \
	  echo "are missing, older than 3.11, or (pyenv) installed but not enabled."; \
	  echo "Install one, for example:"; \
	  echo "  Debian/Ubuntu:  sudo apt install python3.12 python3.12-venv"; \
	  echo "  macOS:          brew install python@3.13"; \
	  echo "  pyenv:          pyenv install 3.13 && pyenv global 3.13"; \
	  echo "or name one:      make PYTHON=/path/to/python3.12 $(MAKECMDGOALS)"; \
	  exit 1; \
	fi; \
	if ! $$py $(IS_SUPPORTED) >/dev/null 2>&1; then \
	  echo "PYTHON=$$py does not run Python 3.11 or newer ($$($$py -V 2>&1 | head -1))."; exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py ($$($$py -V 2>&1))"; \
	$$py -m venv $(VENV)

# The project is installed with uv (Astral's installer, itself installed by pip into $(VENV)):
# it resolves, downloads and links the wheels in parallel. Measured on a clean clone of this
# 2-core machine, cold caches: venv + test extras took about 54 s with pip (pip upgrade 9 s,
# install, compiling site-packages to bytecode on both cores), 20 s with uv. Modules are compiled
# to bytecode on their first import instead (and cached in __pycache__/): compiling all of
# site-packages ahead took 18 s on both cores (Ray alone is thousands of files), and a warm-up
# that compiled only what the tests import (and the numba kernels) cost 18 s to save 8 s of tests.
# uv reads no pip settings (pip.conf, PIP_INDEX_URL): where uv cannot be installed or cannot
# install (a private index only pip knows), pip installs, as before.
UV := $(VENV)/bin/uv
# What to install: the project ($(SPEC), set per stamp below), editable.
INSTALL = echo "installing $(SPEC) into $(VENV)"; \
          { [ -x $(UV) ] || $(PY) -m pip install --quiet "uv>=0.5,<1"; } && \
          $(UV) pip install --quiet --python $(PY) -e "$(SPEC)" || \
          { echo "uv unavailable or failed: installing with pip"; $(PY) -m pip install --quiet -e "$(SPEC)"; }

$(STAMP): SPEC := .
$(STAMP): pyproject.toml | $(PY)
	@$(INSTALL)
	touch $@

# Tests install the Ray backend too (Ray core and client), so it is tested on a simulated
# two-node Ray cluster.
$(TSTAMP): SPEC := .[$(EXTRAS)]
$(TSTAMP): pyproject.toml | $(PY)
	@$(INSTALL)
	touch $@ $(STAMP)

# `make run ARGS="world=tiny engine.days=1"`: Hydra overrides.
run: $(STAMP)
	$(PY) -m experiments.run $(ARGS)

# One BLAS thread: on a 2-core machine, threaded BLAS in small matrix products only adds stalls.
# Test files are spread over $(JOBS) workers, whole files at a time (module fixtures built once),
# in the order tests/conftest.py gives them (longest first; xdist would otherwise reorder them by
# their number of tests, which put the longest files last: one worker ran ~25 s after the other).
PYTEST := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadfile \
          $(if $(filter-out 0,$(JOBS)),--no-loadscope-reorder)
test: $(TSTAMP)
	$(PYTEST) $(TESTS)

# Everything but the tests marked slow (a few minutes less); `TESTS=tests/engine` narrows it.
test-quick: $(TSTAMP)
	$(PYTEST) -m "not slow" $(TESTS)

smoke:
	@main=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	py=""; \
	for v in 3.13 3.12 3.11; do \
	  [ "$$v" = "$$main" ] && continue; \
	  for c in python$$v $$(pyenv root 2>/dev/null)/versions/$$v*/bin/python$$v; do \
	    if $$c $(IS_SUPPORTED) >/dev/null 2>&1; then py=$$c; break 2; fi; \
	  done; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "smoke: skipped, no Python 3.11-3.13 other than $(VENV)'s ($${main:-none}) on this machine"; exit 0; \
	fi; \
	echo "smoke: $$($$py -V 2>&1) ($$py) in $(SMOKE_VENV)"; \
	$(MAKE) --no-print-directory VENV=$(SMOKE_VENV) PYTHON=$$py run ARGS="$(SMOKE_ARGS)" && \
	$(MAKE) --no-print-directory VENV=$(SMOKE_VENV) PYTHON=$$py EXTRAS=test test-quick TESTS="$(SMOKE_TESTS)"

bench: $(STAMP)
	$(PY) -m experiments.bench

# Every figure README.md quotes, into results/figures.json (runs reused from outputs/figures/);
# then compares README.md with it. `make figures ARGS="--only baselines"` regenerates one source.
figures: $(STAMP)
	$(PY) -m experiments.figures $(ARGS)

clean:
	rm -rf $(VENV) $(SMOKE_VENV) outputs multirun
