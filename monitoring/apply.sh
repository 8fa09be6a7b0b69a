#!/usr/bin/env bash
# Apply BillingProxy's Cloud Logging / Monitoring configuration, idempotently (create or update):
# log-based metrics, the dashboard, alert policies and the BigQuery log sink.
#
#   monitoring/apply.sh --project my-project [--dry-run]
#
# Thresholds and names come from the environment (defaults below). --dry-run prints every gcloud
# and bq command instead of running it (no gcloud needed) and keeps the rendered dashboard and
# alert files it names (in DRY_RUN_DIR, default a new temp folder) so they can be reviewed.
set -euo pipefail
cd "$(dirname "$0")"

DRY_RUN=0
PROJECT="${PROJECT_ID:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --project) PROJECT="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$PROJECT" ] || { echo "set --project or PROJECT_ID" >&2; exit 2; }

export SERVICE="${SERVICE:-litellm-proxy}"
export TOKEN_SURGE_PER_MIN="${TOKEN_SURGE_PER_MIN:-2000000}"
export COST_SURGE_USD_PER_MIN="${COST_SURGE_USD_PER_MIN:-5}"
export ERROR_RATIO_PCT="${ERROR_RATIO_PCT:-5}"
export LATENCY_SLO_MS="${LATENCY_SLO_MS:-30000}"
export NOTIFICATION_CHANNEL="${NOTIFICATION_CHANNEL:-}"
BQ_DATASET="${BQ_DATASET:-litellm_logs}"
SINK="${SINK:-litellm-bq-sink}"
if [ "$DRY_RUN" = 1 ]; then
  WORK="${DRY_RUN_DIR:-$(mktemp -d -t billingproxy-monitoring.XXXXXX)}"   # kept: the output names these files
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi

run() {  # print in dry-run mode, execute otherwise
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
exists() {  # in dry-run mode nothing is known to exist: print the create form
  [ "$DRY_RUN" = 1 ] && return 1
  "$@" >/dev/null 2>&1
}
render() {  # substitute ${VARS} (thresholds, names) into a file; an empty channel list stays valid
  python3 - "$1" "$2" <<'PY'
import json, os, string, sys
text = string.Template(open(sys.argv[1]).read()).substitute(os.environ)
if sys.argv[1].endswith(".json"):
    data = json.loads(text)
    if "notificationChannels" in data:
        data["notificationChannels"] = [c for c in data["notificationChannels"] if c]
    text = json.dumps(data, indent=2)
open(sys.argv[2], "w").write(text)
PY
}

for file in metrics/*.yaml; do
  name="$(basename "$file" .yaml)"
  if exists gcloud logging metrics describe "$name" --project "$PROJECT"; then
    run gcloud logging metrics update "$name" --project "$PROJECT" --config-from-file "$file"
  else
    run gcloud logging metrics create "$name" --project "$PROJECT" --config-from-file "$file"
  fi
done

render dashboard.json "$WORK/dashboard.json"
dashboard="$( [ "$DRY_RUN" = 1 ] || gcloud monitoring dashboards list --project "$PROJECT" \
  --filter="displayName=\"BillingProxy ($SERVICE)\"" --format='value(name)' | head -n1 )"
if [ -n "$dashboard" ]; then
  run gcloud monitoring dashboards update "$dashboard" --project "$PROJECT" --config-from-file "$WORK/dashboard.json"
else
  run gcloud monitoring dashboards create --project "$PROJECT" --config-from-file "$WORK/dashboard.json"
fi

for file in alerts/*.json; do
  render "$file" "$WORK/$(basename "$file")"
  display="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["displayName"])' "$file")"
  policy="$( [ "$DRY_RUN" = 1 ] || gcloud alpha monitoring policies list --project "$PROJECT" \
    --filter="displayName=\"$display\"" --format='value(name)' | head -n1 )"
  if [ -n "$policy" ]; then
    run gcloud alpha monitoring policies update "$policy" --project "$PROJECT" --policy-from-file "$WORK/$(basename "$file")"
  else
    run gcloud alpha monitoring policies create --project "$PROJECT" --policy-from-file "$WORK/$(basename "$file")"
  fi
done

if ! exists bq --project_id "$PROJECT" show "$BQ_DATASET"; then
  run bq --project_id "$PROJECT" mk --dataset --description "BillingProxy request logs" "$PROJECT:$BQ_DATASET"
fi
destination="bigquery.googleapis.com/projects/$PROJECT/datasets/$BQ_DATASET"
if exists gcloud logging sinks describe "$SINK" --project "$PROJECT"; then
  run gcloud logging sinks update "$SINK" "$destination" --project "$PROJECT" \
    --log-filter='jsonPayload.message="litellm_request"' --use-partitioned-tables
else
  run gcloud logging sinks create "$SINK" "$destination" --project "$PROJECT" \
    --log-filter='jsonPayload.message="litellm_request"' --use-partitioned-tables
fi

# A sink exports nothing until its writer identity may write to the dataset: grant it
# BigQuery Data Editor (WRITER) on this dataset only, idempotently (bq show → add the entry → bq update).
grant_sink_writer() {  # $1 = the writer identity, "serviceAccount:service-…@gcp-sa-logging.iam.gserviceaccount.com"
  local email="${1#serviceAccount:}"
  bq --project_id "$PROJECT" show --format=prettyjson "$PROJECT:$BQ_DATASET" > "$WORK/dataset.json"
  if python3 - "$WORK/dataset.json" "$email" <<'PY'
import json, sys
path, email = sys.argv[1], sys.argv[2]
dataset = json.load(open(path))
access = dataset.setdefault("access", [])
if any(e.get("userByEmail") == email and e.get("role") in ("WRITER", "roles/bigquery.dataEditor") for e in access):
    sys.exit(1)  # already granted
access.append({"role": "WRITER", "userByEmail": email})
json.dump(dataset, open(path, "w"), indent=2)  # the whole dataset back, as bq update --source expects
PY
  then
    bq --project_id "$PROJECT" update --source "$WORK/dataset.json" "$PROJECT:$BQ_DATASET"
  fi
}
if [ "$DRY_RUN" = 1 ]; then
  echo "writer=\$(gcloud logging sinks describe $SINK --project $PROJECT --format='value(writerIdentity)')"
  echo "# grant the sink's writer identity roles/bigquery.dataEditor (WRITER) on the dataset $PROJECT:$BQ_DATASET:"
  echo "bq --project_id $PROJECT show --format=prettyjson $PROJECT:$BQ_DATASET > dataset.json   # add {\"role\": \"WRITER\", \"userByEmail\": \"\${writer#serviceAccount:}\"} to access"
  echo "bq --project_id $PROJECT update --source dataset.json $PROJECT:$BQ_DATASET"
else
  writer="$(gcloud logging sinks describe "$SINK" --project "$PROJECT" --format='value(writerIdentity)')"
  [ -n "$writer" ] || { echo "monitoring: the sink $SINK has no writer identity" >&2; exit 1; }
  grant_sink_writer "$writer"
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "monitoring: dry run for $PROJECT: nothing was applied (rendered files kept in $WORK)"
else
  echo "monitoring: applied to $PROJECT"
fi
