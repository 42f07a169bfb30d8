# nabaa — the two commands a new user needs: `make demo` and `make test`.
# Everything runs offline: no model hub, no dataset hub, no metric scripts.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_EVALUATE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-browser demo lint bench clean help

help:
	@echo "make demo   # set up, build the embedded backbone, train on seeds/, evaluate, score a dump"
	@echo "make test   # set up and run the test-suite"
	@echo "make lint   # ruff"
	@echo "make test-browser  # install chromium + playwright, open the analysis report headless"
	@echo "make bench  # quick benchmarks (docs/benchmarks.md)"

# torch first, pinned to the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=10

# Debian's chromium (playwright's own browser downloads are not used), driven by playwright.
test-browser: $(STAMP)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pip install -q -e '.[browser]'
	$(PY) -m pytest -q -m browser -rs tests/test_analyze.py

lint: $(STAMP)
	$(VENV)/bin/ruff check model training inference tests bench

demo: $(STAMP)
	$(PY) -m training.demo

bench: $(STAMP)
	$(PY) -m bench.run --quick

clean:
	rm -rf runs/demo bench/out .pytest_cache
