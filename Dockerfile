# BillingProxy: one image for the proxy (default CMD), the billing service and the CLI jobs.
#   proxy:            (default)  litellm --config config.yaml --host 0.0.0.0 --port $PORT
#   billing service:  python -m billingproxy service --host 0.0.0.0
#   migrations job:   python -m billingproxy db migrate

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt constraints.txt ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

FROM python:3.11.11-slim-bookworm
RUN groupadd --gid 10001 billingproxy \
    && useradd --uid 10001 --gid billingproxy --no-create-home --shell /usr/sbin/nologin billingproxy
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY config.yaml pyproject.toml ./
COPY callbacks/ callbacks/
COPY billingproxy/ billingproxy/
COPY db/ db/
# No secrets here: keys, the master key and database URLs come from Secret Manager at deploy time.
# Tuned defaults (README "Performance"): LITELLM_LOG=WARNING drops uvicorn's per-request access
# line (our JSON request line carries more); NUM_WORKERS is LiteLLM's worker count: one per vCPU;
# JSON_LOGS makes LiteLLM's own lines JSON (with ``severity``, added by our log filter).
# TIMEOUT_WORKER_HEALTHCHECK: with NUM_WORKERS > 1 uvicorn kills a worker that does not answer its
# ping within 5 s, and importing LiteLLM takes longer than that on one vCPU: the worker restarts forever.
# LITELLM_DONT_SHOW_FEEDBACK_BOX: no 15-line ASCII banner in Cloud Logging at every start.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_LOG=WARNING \
    JSON_LOGS=True \
    NUM_WORKERS=1 \
    TIMEOUT_WORKER_HEALTHCHECK=60 \
    LITELLM_DONT_SHOW_FEEDBACK_BOX=true \
    BILLINGPROXY_SPILL_DIR=/tmp/billingproxy-spill \
    PORT=8080
USER 10001
EXPOSE 8080
CMD ["sh", "-c", "exec litellm --config \"${BILLINGPROXY_LITELLM_CONFIG:-config.yaml}\" --host 0.0.0.0 --port \"${PORT}\""]
