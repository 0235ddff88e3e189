# gpt2lab: two commands set everything up on a fresh machine.
#   make book   execute every notebook at the default scale and build the site
#   make test   run the test suite (unit tests + notebooks at smoke scale)
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
# The book's HellaSwag chapter reads a local copy when there is one (else it downloads and verifies).
SHARED_HELLASWAG := $(wildcard ../shared/data/hellaswag/hellaswag_val.jsonl)

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-notebooks book bench gpu-cache gpu-check clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install gpt2lab with its dev extras (done by test/book)

test: $(STAMP) ## run all tests: pytest suite plus every notebook at smoke scale (nbval)
	rm -rf $(NB_TEST_DIR) && mkdir -p $(NB_TEST_DIR)
	for f in $(NB_SRC); do $(BIN)/jupytext --quiet --to ipynb -o $(NB_TEST_DIR)/$$(basename $$f .md).ipynb $$f || exit 1; done
	GPT2LAB_SCALE=smoke GPT2LAB_CACHE=$(CURDIR)/build/cache MPLBACKEND=Agg $(BIN)/python -m pytest tests $(NB_TEST_DIR) --nbval-lax -p no:cacheprovider

book: $(STAMP) ## execute every notebook at the default scale (GPT2LAB_SCALE to override) and build the site
	$(if $(SHARED_HELLASWAG),GPT2LAB_HELLASWAG=$${GPT2LAB_HELLASWAG:-$(abspath $(SHARED_HELLASWAG))}) \
	  $(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book
	@echo "Open book/_build/html/index.html"

bench: $(STAMP) ## time the optimization ladder on this machine (results in results/)
	$(BIN)/python -m gpt2lab bench --rungs all --json results/ladder.jsonl

# gpu-check runs without .venv and without Jupyter: a GPU machine often has torch but not the notebook tools.
GPU_PYTHON ?= python3
GPU_CACHE  ?= $(CURDIR)/build/gpu-cache

gpu-cache: $(STAMP) ## prepare the packaged corpora's shards in build/gpu-cache, to carry to a GPU machine without `datasets`
	GPT2LAB_CACHE=$(GPU_CACHE) $(BIN)/python -m gpt2lab.chapters --prepare-cache

gpu-check: ## run every chapter as a plain script at gpu scale with GPU_PYTHON (default python3), no Jupyter needed; one line per chapter
	GPT2LAB_CACHE=$${GPT2LAB_CACHE:-$(GPU_CACHE)} PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m gpt2lab.chapters --scale gpu --out build/gpu-check

clean: ## remove build outputs (keeps .venv)
	rm -rf build book/_build .pytest_cache
