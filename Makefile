# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PLUGIN := examples/plugins/endpoints-sync-csv

.PHONY: install demo test test-fast lint bench clean

# The example third-party plugin is installed like any other distribution, so `make test`
# runs its contract tests and syncs through it; --no-deps: its one dependency,
# endpoints-sync, is the checkout installed just before (pip must not fetch it from PyPI).
$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -e $(PLUGIN)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Three workers on two cores: the end-to-end tests spend much of their time waiting.
# --dist loadgroup: the real kube-apiserver tier stays on one worker (one control plane).
test: lint
	@test -n "$$KUBEBUILDER_ASSETS" || echo "make test: the real kube-apiserver tier will not run: KUBEBUILDER_ASSETS is not set"
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadgroup

test-fast: lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
