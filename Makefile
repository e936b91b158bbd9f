# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test tools and the optional extras the tests exercise, installed once into the same venv.
TEST_STAMP := $(VENV)/.test-extras
# napari needs a display: a virtual one (Xvfb) where there is none.
DISPLAY_RUN := $(if $(DISPLAY),,$(if $(shell command -v xvfb-run),xvfb-run -a -s "-screen 0 1600x1200x24"))

.PHONY: demo test test-fast check-wheel run-tests lint format benchmark clean

$(BIN)/annotomo: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(BIN)/annotomo
	$(BIN)/pip install -q -r requirements-ci.txt -e '.[test,napari,dask,copick,formats]'
	bash scripts/install-test-system-packages.sh
	touch $@

demo: $(BIN)/annotomo
	$(BIN)/annotomo demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(TEST_STAMP)
	$(MAKE) -s run-tests PYTEST_ARGS=""
	bash scripts/check-wheel.sh

# a wheel of this checkout in a fresh venv, as users install it; the OME-Zarr tests again under zarr 3
check-wheel: $(TEST_STAMP)
	bash scripts/check-wheel.sh

test-fast: $(TEST_STAMP)
	$(MAKE) -s run-tests PYTEST_ARGS='-m "not slow"'

# (a separate target, so that DISPLAY_RUN is evaluated after Xvfb was installed)
run-tests:
	$(DISPLAY_RUN) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

benchmark: $(BIN)/annotomo
	$(BIN)/python benchmarks/bench_speed.py --quick

clean:
	rm -rf $(VENV) demo_output
