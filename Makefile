# gpt2lab: two commands set everything up on a fresh machine.
#   make book   execute every notebook at the default scale and build the site
#   make test   run the test suite (unit tests + notebooks at smoke scale + the site in a browser)
# Both create .venv and install the project with its dev extras on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0: on PyPI a CUDA build for Linux GPUs; on CPU-only CI machines a local CPU wheel.
# A GPU user who wants a specific CUDA build: `make TORCH="torch --index-url https://download.pytorch.org/whl/cu126" book`.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.gpt2lab-installed
NB_SRC := $(sort $(wildcard notebooks/[0-9]*.md))
NB_TEST_DIR := build/test-notebooks
# make test executes each notebook once: the smoke book build runs those in the table of contents (a failing
# cell or assert fails the build); nbval runs the rest (a chapter not yet listed in book/_toc.yml).
TOC_FILES := $(shell sed -n 's/^[ -]*file: *//p' book/_toc.yml)
NB_OUTSIDE_TOC := $(filter-out $(addsuffix .md,$(TOC_FILES)),$(NB_SRC))
# The book's HellaSwag chapter reads a local copy when there is one (else it downloads and verifies, else it
# uses the packaged 40-row sample and says so on the page).
SHARED_HELLASWAG := $(wildcard ../shared/data/hellaswag/hellaswag_val.jsonl)
HELLASWAG_ENV := $(if $(SHARED_HELLASWAG),GPT2LAB_HELLASWAG=$${GPT2LAB_HELLASWAG:-$(abspath $(SHARED_HELLASWAG))})
BOOK_ARGS := --config book/_config.yml --toc book/_toc.yml
# make test builds the book as a fresh clone on a plane would: no network (tests/offline/sitecustomize.py refuses
# every connection beyond this machine, in the build and its kernels), no ../shared, no $$GPT2LAB_HELLASWAG.
SMOKE_ENV := GPT2LAB_SCALE=smoke GPT2LAB_CACHE=$(CURDIR)/build/cache PYTHONPATH=$(CURDIR)/tests/offline \
  GPT2LAB_HELLASWAG= GPT2LAB_GPT2_WEIGHTS=
# make test's own build of the book (smoke scale), which the browser test reads; `make book`'s stays in book/_build.
SMOKE_BOOK := build/smoke-book
# JupyterLab for `make lab` (tests/test_lab.py starts the server with these same flags): local only, and the
# project's settings (.jupyter/lab/settings/overrides.json: .md chapters open as notebooks through jupytext).
LAB_FLAGS := --ServerApp.ip=127.0.0.1 --LabApp.app_settings_dir=.jupyter/lab/settings
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# The browser test drives Debian's chromium (never a browser Playwright downloads); GPT2LAB_CHROMIUM overrides.
CHROMIUM_INSTALL := apt-get install chromium

.DEFAULT_GOAL := help
.PHONY: help install test browser smoke-book book lab bench gpu-cache gpu-check clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install gpt2lab with its dev extras (done by test/book)

test: $(STAMP) browser ## run all tests: pytest suite, the book at smoke scale (every notebook runs), the site in a browser
	rm -rf $(NB_TEST_DIR) && mkdir -p $(NB_TEST_DIR)
	$(if $(NB_OUTSIDE_TOC),@echo "not in book/_toc.yml (nbval runs them instead of the book build): $(NB_OUTSIDE_TOC)")
	for f in $(NB_OUTSIDE_TOC); do $(BIN)/jupytext --quiet --to ipynb -o $(NB_TEST_DIR)/$$(basename $$f .md).ipynb $$f || exit 1; done
	$(MAKE) --no-print-directory smoke-book
	GPT2LAB_SCALE=smoke GPT2LAB_CACHE=$(CURDIR)/build/cache MPLBACKEND=Agg GPT2LAB_SITE=$(CURDIR)/$(SMOKE_BOOK)/_build/html \
	  $(BIN)/python -m pytest tests $(NB_TEST_DIR) --nbval-lax -p no:cacheprovider --durations=10

smoke-book: $(STAMP) ## build the book at smoke scale into build/smoke-book (what make test's browser test reads)
	rm -rf $(SMOKE_BOOK)
	$(SMOKE_ENV) $(BIN)/python -m gpt2lab.cli.precheck
	$(SMOKE_ENV) $(BIN)/jupyter-book build . $(BOOK_ARGS) --path-output $(SMOKE_BOOK)

browser: ## make sure the browser test has a Chromium (installs Debian's with apt-get when run as root)
	@if [ -n "$$GPT2LAB_CHROMIUM" ] && [ -x "$$GPT2LAB_CHROMIUM" ] || command -v chromium >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0; \
	fi; \
	echo "make test needs Chromium for the browser test: run '$(CHROMIUM_INSTALL)' as root (Debian), or set GPT2LAB_CHROMIUM=/path/to/chromium"; \
	exit 1

book: $(STAMP) ## execute every notebook at the default scale (GPT2LAB_SCALE to override) and build the site
	@$(HELLASWAG_ENV) $(BIN)/python -m gpt2lab.cli.precheck
	$(HELLASWAG_ENV) $(BIN)/jupyter-book build . $(BOOK_ARGS) --path-output book
	@echo "Open book/_build/html/index.html"

lab: $(STAMP) ## JupyterLab in .venv: the .md chapters open as notebooks (jupytext); Ctrl-C stops it
	$(HELLASWAG_ENV) $(BIN)/jupyter lab $(LAB_FLAGS) $(LAB_AS_ROOT)

bench: $(STAMP) ## time the optimization ladder on this machine (results in results/)
	$(BIN)/python -m gpt2lab bench --rungs all --json results/ladder.jsonl

# gpu-check runs without .venv and without Jupyter: a GPU machine often has torch but not the notebook tools.
GPU_PYTHON ?= python3
GPU_CACHE  ?= $(CURDIR)/build/gpu-cache

gpu-cache: $(STAMP) ## prepare the packaged corpora's shards in build/gpu-cache, to carry to a GPU machine without `datasets`
	GPT2LAB_CACHE=$(GPU_CACHE) $(BIN)/python -m gpt2lab.cli.chapters --prepare-cache

gpu-check: ## run every chapter as a plain script at gpu scale with GPU_PYTHON (default python3), no Jupyter needed; one line per chapter
	$(HELLASWAG_ENV) GPT2LAB_CACHE=$${GPT2LAB_CACHE:-$(GPU_CACHE)} PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m gpt2lab.cli.chapters --scale gpu --out build/gpu-check

clean: ## remove build outputs (keeps .venv)
	rm -rf build book/_build .pytest_cache
