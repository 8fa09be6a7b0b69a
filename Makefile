# BillingProxy: `make run` brings up the local stack, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-12)

export LITELLM_LOCAL_MODEL_COST_MAP := True
# Tuned defaults (README "Performance"): LiteLLM and uvicorn log WARNING and up (our JSON request
# line replaces the per-request access line); one worker process per CPU.
export LITELLM_LOG ?= WARNING
export NUM_WORKERS ?= 1
export PYTHONPATH := $(CURDIR)

.PHONY: run test lint format install clean bench soak screenshots console-bench

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m billingproxy.devstack

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/yamllint --strict config.yaml cloudbuild.yaml .github/workflows monitoring/metrics

test: lint
	$(PY) -m pytest

# Stock proxy vs ours, same run, alternating; prints the table and writes JSON + PNG (< 10 min).
bench: $(STAMP)
	$(PY) -m bench.compare --requests 1500 --concurrency 8 64 --rounds 3 --ready-starts 1 \
		--variants stock ours --json bench/results/compare.json
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
