# One command each, on a fresh machine with nothing but Python 3.10+:
#   make serve   install into .venv if needed, build the default model if none exists, serve on 127.0.0.1:8000
#   make test    install into .venv if needed, run the whole suite
#   make demo    generate -> train -> evaluate -> recommend, end to end, in a few minutes
#   make bench   the benchmark suite at a size that finishes in about ten minutes
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARTIFACT ?= artifacts/default
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test demo bench clean sample-data

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(ARTIFACT)/manifest.json: | $(STAMP)
	$(BIN)/recommender train --data data/sample --out $(ARTIFACT) --model als

serve: $(STAMP) $(ARTIFACT)/manifest.json
	$(BIN)/recommender serve --artifact $(ARTIFACT) --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python -m recommender demo --out demo-output

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

sample-data: $(STAMP)
	$(BIN)/recommender generate --out data/sample --patients 2000 --seed 7

clean:
	rm -rf $(VENV) artifacts demo-output .pytest_cache
