#!/usr/bin/env bash
# Prints the --set-secrets value for Cloud Run: "ENV=secret:latest,…" for each ENV=secret argument;
# an argument ending in "?" is optional and is mounted only when its secret has an enabled version
# (Cloud Run refuses a revision that mounts a secret with no version).
#
#   deploy/secret_mounts.sh PROJECT_ID BILLINGPROXY_DATABASE_URL=billingproxy-database-url ANTHROPIC_API_KEY=anthropic-api-key?
#
# Used by cloudbuild.yaml's deploy steps (deploy.sh knows from its own run which secrets have one).
set -euo pipefail
project="$1"; shift
mounts=()
for pair in "$@"; do
  if [ "${pair%\?}" != "$pair" ]; then
    pair="${pair%\?}"
    version="$(gcloud secrets versions list "${pair#*=}" --project "$project" --filter=state=ENABLED --limit=1 \
      --format='value(name)' 2>/dev/null || true)"
    if [ -z "$version" ]; then
      echo "secret_mounts: ${pair#*=} has no version: ${pair%%=*} not mounted" >&2
      continue
    fi
  fi
  mounts+=("${pair}:latest")
done
(IFS=,; echo "${mounts[*]}")
