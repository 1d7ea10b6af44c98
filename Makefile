# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The language-model tests' server (the `llm-server` extra). llama-cpp-python has no binary wheel
# on PyPI: it compiles (about 5 minutes on 2 cores) once per machine into LLM_WHEELS, a cache
# outside the clone, keyed by the CPU's instruction set since the build targets this CPU.
LLM_STAMP := $(VENV)/.llm-installed
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama_cpp_python==//p' requirements.lock)
CPU_KEY := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cksum | cut -d' ' -f1)
LLM_WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/onduty/wheels/cpu-$(CPU_KEY)

.PHONY: demo test test-embeddings lint typecheck bench docs golden lock clean

# The optional `embeddings` extra (similar incidents by sentence embeddings) lives in a venv of
# its own, so that `make test` never needs PyTorch. TORCH is its CPU build, installed first (a
# bare `torch` would take a CUDA build of several GB).
EMB_VENV := .venv-embeddings
EMB_STAMP := $(EMB_VENV)/.installed
TORCH := torch==2.13.0

# Dependencies go through the lock file: pyproject.toml says what onduty needs, requirements.lock
# the exact versions installed.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

$(LLM_STAMP): $(STAMP)
	@if ! ls $(LLM_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "Compiling llama-cpp-python $(LLAMA_CPP_VERSION) for the language-model tests:" \
			"about 5 minutes on 2 cores, once per machine (cached in $(LLM_WHEELS))"; \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip wheel --no-deps \
			--progress-bar off -w $(LLM_WHEELS) 'llama-cpp-python==$(LLAMA_CPP_VERSION)' \
			|| exit 1; \
	fi
	@$(BIN)/python -m pip install --quiet -c requirements.lock --find-links $(LLM_WHEELS) \
		--only-binary llama-cpp-python -e '.[dev,llm-server]'
	@touch $(LLM_STAMP)

$(EMB_STAMP): pyproject.toml requirements.lock
	@test -x $(EMB_VENV)/bin/python || $(PYTHON) -m venv $(EMB_VENV)
	@$(EMB_VENV)/bin/python -m pip install --quiet --upgrade pip
	@$(EMB_VENV)/bin/python -m pip install --quiet -c requirements.lock '$(TORCH)'
	@$(EMB_VENV)/bin/python -m pip install --quiet -c requirements.lock -e '.[dev,embeddings]'
	@touch $(EMB_STAMP)

demo: $(STAMP)
	$(BIN)/onduty demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) $(LLM_STAMP)
	@bash scripts/services.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The tests marked `embeddings` (deselected by `make test`): the real model, loaded offline.
test-embeddings: $(EMB_STAMP)
	$(EMB_VENV)/bin/python -m pytest -q -m embeddings

bench: $(STAMP)
	$(BIN)/onduty bench

docs: $(STAMP)
	$(BIN)/python scripts/config_reference.py --write

# Regenerate the golden decision logs tests/test_golden.py replays. Run it only when a change is
# meant to alter decisions; review the diff and say why in the commit.
golden: $(STAMP)
	$(BIN)/python scripts/golden.py

# Resolve pyproject.toml's dependencies afresh in a scratch environment and pin the result
# (llama-cpp-python from the wheel cache when its newest version is there, else it compiles;
# the embeddings extra's too, PyTorch pinned by TORCH above, not in the lock, since its CPU build
# carries a local version).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '$(TORCH)'
	.lock-venv/bin/python -m pip install --quiet --find-links $(LLM_WHEELS) \
	  -e '.[dev,llm-server,embeddings]'
	{ sed -n '1,2p' requirements.lock; .lock-venv/bin/python -m pip freeze --exclude-editable \
	  | grep -v '^torch=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(EMB_VENV) .pytest_cache .mypy_cache .ruff_cache onduty-demo.db*
