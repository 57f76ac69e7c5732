# Berth: `make demo` runs the main job, `make test` the whole suite.
# Both create .venv when missing and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint imports typecheck bench-deps clean fuzz-proxy

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/berth demo

test: $(VENV)/.installed
	@./tests/install-system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the import contracts in .importlinter (components never import each other, ...)
imports: $(VENV)/.installed
	$(BIN)/lint-imports --no-logo --no-cache

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Long run of the proxy's property tests (docs/proxy.md); `make test` runs a few dozen.
FUZZ_EXAMPLES ?= 20000
fuzz-proxy: $(VENV)/.installed
	BERTH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider tests/agent/proxy/test_core_properties.py

bench-deps:
	apt-get install -y wrk nginx-light caddy dnsperf dnsmasq-base

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
