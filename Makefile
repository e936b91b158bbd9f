# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test tools and the optional extras the tests exercise, installed once into the same venv.
TEST_STAMP := $(VENV)/.test-extras

.PHONY: demo test test-fast lint format benchmark clean

$(BIN)/annotomo: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(BIN)/annotomo
	$(BIN)/pip install -q -r requirements-ci.txt -e '.[test]'
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
	$(BIN)/python -m pytest -q

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

benchmark: $(BIN)/annotomo
	$(BIN)/python benchmarks/bench_speed.py --quick

clean:
	rm -rf $(VENV) demo_output
