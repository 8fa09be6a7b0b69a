#!/usr/bin/env bash
# Deploy BillingProxy to Cloud Run with plain gcloud (for people without Cloud Build).
# Idempotent: every resource is created if missing and updated otherwise. --dry-run prints each
# command instead of running it (secret values are never printed).
#
#   PROJECT_ID=my-proj REGION=us-central1 CLOUDSQL_INSTANCE=my-proj:us-central1:billing \
#   DATABASE_URL='postgresql://billing:…@/billing?host=/cloudsql/my-proj:us-central1:billing' \
#   PROXY_MASTER_KEY=… OPENAI_API_KEY=… [ANTHROPIC_API_KEY=… STRIPE_API_KEY=… STRIPE_WEBHOOK_SECRET=…] \
#   deploy/deploy.sh [--dry-run] [--skip-build]
# The optional secrets are created with a version when their variable is set, else not mounted.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0; SKIP_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

: "${PROJECT_ID:?set PROJECT_ID}"
REGION="${REGION:-us-central1}"
REPOSITORY="${REPOSITORY:-billingproxy}"
PROXY_SERVICE="${PROXY_SERVICE:-litellm-proxy}"
BILLING_SERVICE="${BILLING_SERVICE:-billing-service}"
MIGRATE_JOB="${MIGRATE_JOB:-billingproxy-migrate}"
RELAY_JOB="${RELAY_JOB:-billingproxy-stripe-relay}"
CHECK_JOB="${CHECK_JOB:-billingproxy-stripe-check}"
RELAY_SCHEDULE="${RELAY_SCHEDULE:-* * * * *}"  # every minute (the default billing window)
TAG="${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo latest)}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPOSITORY}/billingproxy:${TAG}"
CLOUDSQL_INSTANCE="${CLOUDSQL_INSTANCE:-}"
# The gateway token is the front door for OpenAI SDK clients, so the proxy accepts
# unauthenticated (no Google IAM) requests by default; put it behind an LB + Cloud Armor if needed.
ALLOW_UNAUTHENTICATED="${ALLOW_UNAUTHENTICATED:-true}"
PROXY_SA="billingproxy-proxy@${PROJECT_ID}.iam.gserviceaccount.com"
BILLING_SA="billingproxy-billing@${PROJECT_ID}.iam.gserviceaccount.com"
# Secret Manager secrets: name → the environment variable holding the value to upload. The first
# three are required; the optional ones are created (with a version) only when their variable is
# set, and mounted only when they hold a version: a service that mounts a secret with no version
# is refused by Cloud Run, so someone with no Anthropic or Stripe key simply goes without.
SECRETS=(billingproxy-database-url:DATABASE_URL billingproxy-master-key:PROXY_MASTER_KEY
         openai-api-key:OPENAI_API_KEY)
OPTIONAL_SECRETS=(anthropic-api-key:ANTHROPIC_API_KEY stripe-api-key:STRIPE_API_KEY
                  stripe-webhook-secret:STRIPE_WEBHOOK_SECRET
                  stripe-event-destination-secret:STRIPE_EVENT_DESTINATION_SECRET)
run() { if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
exists() { [ "$DRY_RUN" = 1 ] && return 1; "$@" >/dev/null 2>&1; }
auth_flag() { [ "$1" = true ] && echo --allow-unauthenticated || echo --no-allow-unauthenticated; }

run gcloud services enable run.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com \
  secretmanager.googleapis.com sqladmin.googleapis.com cloudscheduler.googleapis.com --project "$PROJECT_ID"

if ! exists gcloud artifacts repositories describe "$REPOSITORY" --location "$REGION" --project "$PROJECT_ID"; then
  run gcloud artifacts repositories create "$REPOSITORY" --repository-format docker --location "$REGION" \
    --project "$PROJECT_ID"
fi

# --- secrets: values come from the environment and go in through stdin, never argv ---
MOUNTABLE=" "   # the secrets that have (or are given) a version; a plain list: macOS ships bash 3.2
mountable() { [[ "$MOUNTABLE" == *" $1 "* ]]; }
has_version() {
  [ "$DRY_RUN" = 1 ] && return 1
  [ -n "$(gcloud secrets versions list "$1" --project "$PROJECT_ID" --filter=state=ENABLED --limit=1 \
    --format='value(name)' 2>/dev/null)" ]
}
add_version() {  # $1 = secret, $2 = variable
  if [ "$DRY_RUN" = 1 ]; then
    echo "printf %s \"\$$2\" | gcloud secrets versions add $1 --data-file=- --project $PROJECT_ID"
  else
    printf %s "${!2}" | gcloud secrets versions add "$1" --data-file=- --project "$PROJECT_ID" >/dev/null
    echo "deploy: $1: new version added"
  fi
}
for entry in "${SECRETS[@]}" "${OPTIONAL_SECRETS[@]}"; do
  name="${entry%%:*}"; var="${entry##*:}"
  optional=0; [[ " ${OPTIONAL_SECRETS[*]} " == *" $entry "* ]] && optional=1
  if [ -n "${!var:-}" ]; then
    if ! exists gcloud secrets describe "$name" --project "$PROJECT_ID"; then
      run gcloud secrets create "$name" --replication-policy automatic --project "$PROJECT_ID"
    fi
    add_version "$name" "$var"
    MOUNTABLE+="$name "
  elif has_version "$name"; then
    echo "deploy: $name: $var not set, keeping the secret's current version"
    MOUNTABLE+="$name "
  elif [ "$optional" = 1 ]; then
    echo "# skipped: $name ($var not set and the secret has no version): not created, not mounted"
  elif [ "$DRY_RUN" = 1 ]; then
    echo "# warning: $var is not set: a real run needs it, or a version of $name already in Secret Manager"
    MOUNTABLE+="$name "
  else
    echo "deploy: set $var (or add a version to the secret $name first)" >&2
    exit 2
  fi
done
# "ENV=secret:latest,…" for the given ENV=secret pairs whose secret can be mounted.
secret_mounts() {
  local out=() pair
  for pair in "$@"; do
    if mountable "${pair#*=}"; then out+=("${pair}:latest"); fi
  done
  (IFS=,; echo "${out[*]}")
}
PROXY_SECRETS="$(secret_mounts BILLINGPROXY_DATABASE_URL=billingproxy-database-url \
  PROXY_MASTER_KEY=billingproxy-master-key OPENAI_API_KEY=openai-api-key ANTHROPIC_API_KEY=anthropic-api-key)"
BILLING_SECRETS="$(secret_mounts DATABASE_URL=billingproxy-database-url PROXY_MASTER_KEY=billingproxy-master-key \
  STRIPE_API_KEY=stripe-api-key STRIPE_WEBHOOK_SECRET=stripe-webhook-secret \
  STRIPE_EVENT_DESTINATION_SECRET=stripe-event-destination-secret)"
RELAY_SECRETS="$(secret_mounts DATABASE_URL=billingproxy-database-url STRIPE_API_KEY=stripe-api-key)"
mountable stripe-api-key || \
  echo "# note: no stripe-api-key: the Stripe relay job is deployed without it and fails until STRIPE_API_KEY is set (or BILLINGPROXY_BILLING_SINK changes)"

# --- service accounts with least privilege ---
for sa in billingproxy-proxy billingproxy-billing; do
  if ! exists gcloud iam service-accounts describe "$sa@${PROJECT_ID}.iam.gserviceaccount.com" --project "$PROJECT_ID"; then
    run gcloud iam service-accounts create "$sa" --display-name "BillingProxy ${sa#billingproxy-}" --project "$PROJECT_ID"
  fi
  run gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:$sa@${PROJECT_ID}.iam.gserviceaccount.com" \
    --role roles/cloudsql.client --condition None
done
grant() {  # one secret to one service account
  run gcloud secrets add-iam-policy-binding "$1" --member "serviceAccount:$2" \
    --role roles/secretmanager.secretAccessor --project "$PROJECT_ID"
}
for secret in billingproxy-database-url billingproxy-master-key openai-api-key anthropic-api-key; do
  if mountable "$secret"; then grant "$secret" "$PROXY_SA"; fi
done
for secret in billingproxy-database-url billingproxy-master-key stripe-api-key stripe-webhook-secret \
  stripe-event-destination-secret; do
  if mountable "$secret"; then grant "$secret" "$BILLING_SA"; fi
done
run gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:$PROXY_SA" \
  --role roles/aiplatform.user --condition None   # Gemini on Vertex

# --- image ---
if [ "$SKIP_BUILD" = 0 ]; then
  run gcloud builds submit --tag "$IMAGE" --project "$PROJECT_ID" .
fi

sql_flag=()
[ -n "$CLOUDSQL_INSTANCE" ] && sql_flag=(--set-cloudsql-instances "$CLOUDSQL_INSTANCE")

# --- migrations (a Cloud Run job, run to completion before the new revision) ---
run gcloud run jobs deploy "$MIGRATE_JOB" --image "$IMAGE" --region "$REGION" --project "$PROJECT_ID" \
  --service-account "$BILLING_SA" "${sql_flag[@]}" --set-secrets DATABASE_URL=billingproxy-database-url:latest \
  --command python --args=-m,billingproxy,db,migrate --max-retries 1 --task-timeout 600s
run gcloud run jobs execute "$MIGRATE_JOB" --region "$REGION" --project "$PROJECT_ID" --wait

# --- the Stripe account check: meters and linked customers bill what we send, or the deploy stops ---
run gcloud run jobs deploy "$CHECK_JOB" --image "$IMAGE" --region "$REGION" --project "$PROJECT_ID" \
  --service-account "$BILLING_SA" "${sql_flag[@]}" \
  --set-secrets "$RELAY_SECRETS" \
  --command python --args=-m,billingproxy,stripe,check --max-retries 0 --task-timeout 300s
run gcloud run jobs execute "$CHECK_JOB" --region "$REGION" --project "$PROJECT_ID" --wait

# --- the proxy (the product docs' flags; CPU always allocated so the usage writer can flush) ---
run gcloud run deploy "$PROXY_SERVICE" --image "$IMAGE" --region "$REGION" --project "$PROJECT_ID" \
  --service-account "$PROXY_SA" "$(auth_flag "$ALLOW_UNAUTHENTICATED")" \
  --concurrency 15 --min-instances 1 --max-instances 50 --cpu 1 --memory 1Gi --no-cpu-throttling \
  --timeout 900 --cpu-boost "${sql_flag[@]}" \
  --set-env-vars "GOOGLE_CLOUD_PROJECT=${PROJECT_ID},VERTEXAI_PROJECT=${PROJECT_ID},VERTEXAI_LOCATION=${REGION}" \
  --set-secrets "$PROXY_SECRETS"

# --- the billing service (admin API, Stripe webhooks: public, protected by the master key / signatures) ---
run gcloud run deploy "$BILLING_SERVICE" --image "$IMAGE" --region "$REGION" --project "$PROJECT_ID" \
  --service-account "$BILLING_SA" --allow-unauthenticated --concurrency 40 --min-instances 0 --max-instances 5 \
  --cpu 1 --memory 512Mi --timeout 60 "${sql_flag[@]}" \
  --command python --args=-m,billingproxy,service,--host,0.0.0.0 \
  --set-env-vars "GOOGLE_CLOUD_PROJECT=${PROJECT_ID}" \
  --set-secrets "$BILLING_SECRETS"

# --- the Stripe relay: a Cloud Run job, run every minute by Cloud Scheduler ---
run gcloud run jobs deploy "$RELAY_JOB" --image "$IMAGE" --region "$REGION" --project "$PROJECT_ID" \
  --service-account "$BILLING_SA" "${sql_flag[@]}" \
  --set-secrets "$RELAY_SECRETS" \
  --command python --args=-m,billingproxy,stripe,relay --max-retries 0 --task-timeout 300s --parallelism 1
# The scheduler runs the job as the billing service account, which may invoke only this job.
run gcloud run jobs add-iam-policy-binding "$RELAY_JOB" --region "$REGION" --project "$PROJECT_ID" \
  --member "serviceAccount:$BILLING_SA" --role roles/run.invoker
RELAY_URI="https://run.googleapis.com/v2/projects/${PROJECT_ID}/locations/${REGION}/jobs/${RELAY_JOB}:run"
scheduler_verb=create
exists gcloud scheduler jobs describe "$RELAY_JOB" --location "$REGION" --project "$PROJECT_ID" && scheduler_verb=update
run gcloud scheduler jobs "$scheduler_verb" http "$RELAY_JOB" --location "$REGION" --project "$PROJECT_ID" \
  --schedule "$RELAY_SCHEDULE" --uri "$RELAY_URI" --http-method POST \
  --oauth-service-account-email "$BILLING_SA"

# --- monitoring as code ---
if [ "$DRY_RUN" = 1 ]; then
  monitoring/apply.sh --project "$PROJECT_ID" --dry-run
else
  SERVICE="$PROXY_SERVICE" monitoring/apply.sh --project "$PROJECT_ID"
fi
echo "deploy: done$( [ "$DRY_RUN" = 1 ] && echo ' (dry run: nothing was changed)')"
