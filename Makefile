# Two commands for a new user: `make walkthrough` and `make test`. Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
QUIET  := | { grep -v -e Retrying -e "is ignored" || true; }
VENV   := .venv
BIN    := $(VENV)/bin
# CPU-only machines get the CPU build of torch (the default PyPI wheel for Linux is the multi-GB CUDA
# build); machines with an NVIDIA driver get the default CUDA build. Override with TORCH_SPEC=...
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= dev,local,openai

.PHONY: install test walkthrough report bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch; \
	else \
		$(BIN)/pip install -q --retries 0 "$(TORCH_SPEC)" --extra-index-url $(TORCH_CPU_INDEX) 2>&1 $(QUIET); \
	fi
	$(BIN)/pip install -q -e ".[$(EXTRAS)]" --config-settings editable_mode=compat 2>&1 $(QUIET)
	$(BIN)/python -c "import adapterkit"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest tests

walkthrough: install
	$(BIN)/python -m adapterkit.walkthrough --output-dir reports/walkthrough

bench: install
	$(BIN)/pip install -q -e ".[bench]" 2>&1 $(QUIET)
	$(BIN)/python benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) reports
