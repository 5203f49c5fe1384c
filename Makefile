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
# mypy runs beside the tests (it needs one core for ~20 s on a fresh clone); either failing
# fails the target.
test: $(STAMP)
	@test -n "$$KUBEBUILDER_ASSETS" || echo "make test: the real kube-apiserver tier will not run: KUBEBUILDER_ASSETS is not set"
	$(BIN)/ruff check .
	@$(BIN)/mypy > .mypy.out 2>&1 & mypy=$$!; \
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadgroup; tests=$$?; \
	wait $$mypy; typed=$$?; cat .mypy.out; rm -f .mypy.out; \
	test $$tests -eq 0 && test $$typed -eq 0

test-fast: lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

# make bench BENCH_ARGS=--real: the same runs against a real kube-apiserver too ($$KUBEBUILDER_ASSETS);
# BENCH_ARGS=--sizes=100,1000: a quick run. matplotlib (the plot) is a bench-only extra.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
