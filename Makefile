# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing. torch is pinned and installed first so that
# a CPU machine gets the CPU build instead of a multi-GB CUDA one.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.liveroom-installed

.PHONY: test lint test-llm local-llm demo venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# lint (ruff: errors and import order) and types (mypy on liveroom/, as configured in pyproject.toml) first.
# The tests run in 4 processes (pytest-xdist): they wait on servers, subprocesses and timers so much
# that one process keeps 2 cores only about a third busy; tests sharing a module-scoped fixture stay
# in one process (loadgroup, see tests/conftest.py). TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 4
test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# slow integration tests against a real local LLM server (built once per machine)
test-llm: $(STAMP)
	$(BIN)/python -m pytest -q -m llm -p no:cacheprovider || test $$? -eq 5  # 5: no llm test collected

# the real local LLM server (llama.cpp's llama-server and the tiny models) that test-llm and
# `make demo LLM=local` use: built once per machine (about 20 minutes on 2 cores) into
# ${LIVEROOM_CACHE:-~/.cache/liveroom}/llama, outside the checkout; fast when already there
local-llm: $(STAMP)
	$(BIN)/python bin/local-llm install

# LLM=local scores a few pitches through a real local LLM server instead of the simulator
demo: $(STAMP) $(if $(filter local,$(LLM)),local-llm)
	$(BIN)/python bin/demo $(if $(filter local,$(LLM)),--backend local)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
