# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# Extra pytest arguments; `make test` runs everything. .ci/run's second-Python run passes
# PYTEST_ARGS='-m "not slow_family"' so the slow families run once per CI run.
PYTEST_ARGS ?=
# The media hot path compiled to C with mypyc (engine/hot_path.py): rebuilt whenever one of its
# sources changed. COMPILED=0 keeps this virtualenv interpreted (and removes its extensions);
# .ci/run's second-Python run does so, so both builds are tested.
COMPILED ?= 1

.PHONY: run test check lint typecheck pytest bench loadtest demo clean hot-path pure

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[compile]'
	touch $@

hot-path: $(VENV)/.installed
ifeq ($(COMPILED),1)
	$(BIN)/python -m engine.hot_path ensure
else
	$(BIN)/python -m engine.hot_path remove
endif

pure: $(VENV)/.installed
	$(BIN)/python -m engine.hot_path remove

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test,load]'
	touch $@

run: $(VENV)/.installed hot-path
	$(BIN)/callbridge serve --host $(HOST) --port $(PORT) --dev

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict engine media
	$(BIN)/mypy adapters benchmarks tests

pytest: $(VENV)/.installed-test hot-path
	CALLBRIDGE_TEST_COMPILED=$(COMPILED) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

check: test

bench: $(VENV)/.installed-test hot-path
	$(BIN)/python -m benchmarks

# Synthetic legs through the provider simulators; see BENCHMARKS.md. Override, e.g.
# make loadtest LOADTEST="--spawn-engine --ramp --ramp-step 50 --duration 20"
LOADTEST ?= --spawn-engine --legs 200 --duration 30
loadtest: $(VENV)/.installed-test hot-path
	$(BIN)/callbridge loadtest $(LOADTEST)

demo: $(VENV)/.installed-test hot-path
	$(BIN)/python -m benchmarks.demo

clean:
	rm -rf $(VENV) .venv313 .mypy_cache .pytest_cache .ruff_cache build
	find engine media adapters -name '*.cpython-*.so' -delete
	rm -f media/hot_path__mypyc-*.json
