# One command each, on a fresh machine with nothing but Python 3.10+:
#   make serve   install into .venv if needed, build the default model if none exists, serve on 127.0.0.1:8000
#   make test    install into .venv if needed, run the whole suite
#   make demo    generate -> train -> evaluate -> recommend, end to end, in a few minutes
#   make bench   the benchmark suite at a size that finishes in about ten minutes
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install levels: the runtime (what `make serve` needs) and the development extras (tests,
# linters, pyspark, schemathesis), each recorded by a stamp file.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
ARTIFACT ?= artifacts/default
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test lint browser demo bench clean sample-data

$(RUNTIME_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# make serve: local development secrets under .dev-secrets/ (git-ignored, mode 0700), created
# once: a pseudonymisation key, a clinician and an admin token (their hashes in tokens.json).
DEV_SECRETS := .dev-secrets
DEV_KEY := $(DEV_SECRETS)/pseudonym.key
DEV_TOKENS := $(DEV_SECRETS)/tokens.json

$(DEV_KEY): | $(RUNTIME_STAMP)
	mkdir -p $(DEV_SECRETS) && chmod 700 $(DEV_SECRETS)
	$(BIN)/python -c "from recommender.data.pseudonym import create_key_file; create_key_file('$(DEV_KEY)')"

$(DEV_TOKENS): | $(RUNTIME_STAMP)
	mkdir -p $(DEV_SECRETS) && chmod 700 $(DEV_SECRETS)
	umask 077 && $(BIN)/python -m service.tokens add --file $(DEV_TOKENS) --id dev-clinician --role clinician > $(DEV_SECRETS)/clinician.token
	umask 077 && $(BIN)/python -m service.tokens add --file $(DEV_TOKENS) --id dev-admin --role admin > $(DEV_SECRETS)/admin.token

# Trained with the development key; retrained when the key is newer than the model.
$(ARTIFACT)/manifest.json: $(DEV_KEY) | $(RUNTIME_STAMP)
	$(BIN)/recommender train --data data/sample --out $(ARTIFACT) --pseudonym-key-file $(DEV_KEY)

serve: $(RUNTIME_STAMP) $(DEV_KEY) $(DEV_TOKENS) $(ARTIFACT)/manifest.json
	@echo "Development tokens are in $(DEV_SECRETS)/ (clinician.token, admin.token). Try:"
	@echo "  curl -s -H \"Authorization: Bearer \$$(cat $(DEV_SECRETS)/clinician.token)\" 'http://$(HOST):$(PORT)/v1/patients/P000001/recommendations?k=3&condition=C05'"
	@echo "  curl -s -H \"Authorization: Bearer \$$(cat $(DEV_SECRETS)/admin.token)\" -X POST http://$(HOST):$(PORT)/v1/admin/reload"
	@echo "  curl -s http://$(HOST):$(PORT)/health   (open; the API description is GET /openapi.json with a token)"
	RECOMMENDER_API_TOKENS_FILE=$(DEV_TOKENS) RECOMMENDER_PSEUDONYM_KEY_FILE=$(DEV_KEY) \
	RECOMMENDER_AUDIT_LOG=$(DEV_SECRETS)/audit.log \
	$(BIN)/recommender serve --artifact $(ARTIFACT) --host $(HOST) --port $(PORT)

# The console's browser tests drive Debian's Chromium: installed here when missing and root
# (as on CI); otherwise those tests skip and say what to install.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: $(CHROMIUM) missing; the console browser tests will skip (apt-get install chromium)"; \
	  fi; \
	fi

test: lint browser
	$(BIN)/python -m pytest

# Formatting, lint, the layering contracts (.importlinter) and type checks of the core layers.
lint: $(STAMP)
	$(BIN)/ruff format --check --quiet recommender service tests benchmarks
	$(BIN)/ruff check --quiet recommender service tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m recommender demo --out demo-output

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

sample-data: $(STAMP)
	$(BIN)/recommender generate --out data/sample --patients 2000 --seed 7  # observational

clean:
	rm -rf $(VENV) artifacts demo-output .pytest_cache
