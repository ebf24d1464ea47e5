# mmcontrast: `make demo` and `make test` do all the set-up themselves (virtualenv + install).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DOCS_STAMP := $(VENV)/.docs-installed-stamp
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all bench lint format docs

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# lightly's loss modules (peer-parity tests) need only torch, torchvision and numpy: its training stack is left out
	$(BIN)/python -m pip install --quiet --no-deps "lightly==1.6.0"
	touch $(STAMP)

install: $(STAMP)

# the docs extra (mkdocs, material theme) on top of the dev install; redone when pyproject.toml changes
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/mmcontrast demo

test: $(STAMP)
	$(BIN)/pytest -q

test-all: $(STAMP)
	$(BIN)/pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/sbert_vs_st.py
	$(BIN)/python benchmarks/clip_vs_open_clip.py
	$(BIN)/python benchmarks/clap_vs_transformers.py
	$(BIN)/python benchmarks/cached_step_bench.py
	$(BIN)/python benchmarks/loss_bench.py
	$(BIN)/python benchmarks/video_decode.py
	$(BIN)/python benchmarks/ssl_digits.py
	$(BIN)/python benchmarks/simcse_stsb.py
	$(BIN)/python benchmarks/matryoshka_stsb.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# the documentation site (mkdocs.yml, docs/) into site/; any warning (a broken link, a page missing from the
# nav) fails the build. Offline: math is typeset in the browser.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
