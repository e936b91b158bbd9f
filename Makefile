# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test benchmark clean

$(BIN)/annotomo: pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-ci.txt
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/annotomo
	$(BIN)/annotomo demo

test: $(BIN)/annotomo
	$(BIN)/python -m pytest -q

benchmark: $(BIN)/annotomo
	$(BIN)/python benchmarks/bench_speed.py --quick

clean:
	rm -rf $(VENV) demo_output
