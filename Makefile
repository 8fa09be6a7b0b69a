# BillingProxy: `make run` brings up the local stack, `make test` runs every check.
# Prerequisites: Python >= 3.11 (python3, or PYTHON=...) and GNU make. Everything else is installed
# into .venv/ with uv (pinned, bootstrapped from PyPI with pip); pip is the fallback.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV_VERSION := 0.13.8
UV     := $(VENV)/bin/uv
PINS   := -c constraints.txt -c constraints-dev.txt -r requirements-dev.txt
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt constraints-dev.txt | sha256sum | cut -c1-12)
# make load: the locust mix against the running `make run` stack.
LOAD_USERS   ?= 2
LOAD_SECONDS ?= 20

export LITELLM_LOCAL_MODEL_COST_MAP := True
# Tuned defaults (README "Performance"): LiteLLM and uvicorn log WARNING and up (our JSON request
# line replaces the per-request access line); one worker process per CPU.
export LITELLM_LOG ?= WARNING
export NUM_WORKERS ?= 1
# uvicorn's worker ping (5 s by default) is shorter than LiteLLM's import: see the Dockerfile.
export TIMEOUT_WORKER_HEALTHCHECK ?= 60
export LITELLM_DONT_SHOW_FEEDBACK_BOX ?= true
export PYTHONPATH := $(CURDIR)

.PHONY: run test lint format install clean bench soak load screenshots console-bench

# Runs a command, printing a line every 10 s while it works (a cold install is never silent long).
heartbeat = ( ( n=0; while sleep 10; do n=$$((n + 10)); echo "[install]   … still installing ($${n} s)"; done ) & \
	hb=$$!; $(1); rc=$$?; kill $$hb 2>/dev/null; wait $$hb 2>/dev/null; exit $$rc )

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "[install] Python >= 3.11 is required: '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Use PYTHON=python3.11 make …"; exit 1; }
	@start=$$(date +%s); \
	if test -x $(PY); then echo "[install] 1/3 venv: $(VENV) exists ($$($(PY) --version))"; \
	else echo "[install] 1/3 venv: creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV) || exit 1; fi; \
	if $(UV) --version 2>/dev/null | grep -q "^uv $(UV_VERSION) "; then echo "[install] 2/3 uv $(UV_VERSION): already in $(VENV)"; \
	else echo "[install] 2/3 uv $(UV_VERSION): pip install uv==$(UV_VERSION) into $(VENV)"; \
		$(call heartbeat,$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)) || true; fi; \
	if $(UV) --version 2>/dev/null | grep -q "^uv $(UV_VERSION) "; then \
		echo "[install] 3/3 pinned dependencies with uv (requirements-dev.txt, constraints.txt, constraints-dev.txt)"; \
		$(call heartbeat,$(UV) pip install --python $(PY) $(PINS)) || exit 1; \
	else echo "[install] 3/3 uv could not be installed: FALLING BACK TO PIP (slower: several minutes on a cold cache)"; \
		$(call heartbeat,$(PY) -m pip install --disable-pip-version-check --progress-bar off $(PINS)) || exit 1; fi; \
	rm -f $(VENV)/.installed-* && touch $(STAMP); \
	echo "[install] done in $$(( $$(date +%s) - start )) s"

install: $(STAMP)

run: $(STAMP)
	@$(PY) -m billingproxy.devstack

# The locust mix (tests/load/locustfile.py) headless against the running `make run` stack, for
# LOAD_SECONDS with LOAD_USERS users (2 users stay under the demo tenant's 600 requests/minute).
# BP_MODEL (demo), BP_TOKENS (the demo token) and BP_EMBEDDING_MODEL (none) can be overridden.
load: $(STAMP)
	@test -f .data/run.env || { echo "[make load] no .data/run.env: start the stack with 'make run' (another terminal) first"; exit 1; }
	@set -a; . .data/run.env; set +a; \
	$(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health/liveliness", timeout=3)' "$$PROXY_URL" 2>/dev/null || \
		{ echo "[make load] the proxy at $$PROXY_URL does not answer: is 'make run' running?"; exit 1; }; \
	echo "[make load] $(LOAD_USERS) users for $(LOAD_SECONDS) s against $$PROXY_URL, model $${BP_MODEL:-demo}"; \
	BP_TOKENS="$${BP_TOKENS:-$$DEMO_TOKEN}" BP_MODEL="$${BP_MODEL:-demo}" BP_EMBEDDING_MODEL="$${BP_EMBEDDING_MODEL:-}" \
	$(VENV)/bin/locust -f tests/load/locustfile.py --headless -u $(LOAD_USERS) -r $(LOAD_USERS) -t $(LOAD_SECONDS)s \
		--host "$$PROXY_URL" --only-summary --stop-timeout 10

lint: $(STAMP)
	@echo "[lint] ruff, hadolint, actionlint, yamllint"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/yamllint --strict config.yaml cloudbuild.yaml .github/workflows monitoring/metrics

test: lint
	@echo "[test] pytest (the whole suite)"
	$(PY) -m pytest

# Stock proxy (twice: the A/A noise floor) vs ours, same run, balanced order; table, JSON + PNG (~17 min).
bench: $(STAMP)
	$(PY) -m bench.compare --concurrency 8 64 --requests 40 256 --warmup 0 64 --rounds 150 20 --ready-starts 1 \
		--variants stock stock-again ours ours-budget ours-levels --json bench/results/compare.json
	$(PY) -m bench.chart bench/results/compare.json bench/results/compare.png

# 100k requests through our proxy; RSS growth (~15 min).
soak: $(STAMP)
	$(PY) -m bench.soak --requests 100000 --concurrency 32

# The console's browser tests, writing the README's screenshots (needs /usr/bin/chromium).
screenshots: $(STAMP)
	CONSOLE_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/browser -q

# 1,000,000 usage rows over 200 tenants in a throwaway database; each console page's server time.
console-bench: $(STAMP)
	$(PY) -m bench.console_bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
