"""A first deploy that works: what the dry runs print (no gcloud on this machine), and the real
code paths of the grant and the optional secrets against a fake gcloud/bq on PATH (only Google's
CLIs are faked; the scripts run as written).

- the BigQuery sink's writer identity gets access to the dataset (else the sink exports nothing);
- every query on a log-based metric selects monitored_resource="cloud_run_revision";
- a manual build gets a real image tag (no SHORT_SHA outside triggers);
- optional secrets (anthropic-api-key, stripe-api-key, stripe-webhook-secret) are created with a
  version when given, else neither created nor mounted (Cloud Run refuses a secret without one);
- the cost metric's unit is in Google's unit grammar.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit.fakes.gcloud import fake_cli
from testkit.support import REPO

MONITORING = REPO / "monitoring"
LOG_METRIC = re.compile(r"logging_googleapis_com:user_[a-z_]+(\{[^}]*\})?")
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PROJECT_ID": "proj-x", "CLOUDSQL_INSTANCE": "proj-x:r:sql"}
REQUIRED = {"DATABASE_URL": "postgresql://u:pw@/db", "PROXY_MASTER_KEY": "mk-value", "OPENAI_API_KEY": "sk-openai"}
OPTIONAL = {"ANTHROPIC_API_KEY": "sk-ant", "STRIPE_API_KEY": "sk_live_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"}


def run_script(script: Path, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run([str(script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def log_metric_queries(document: dict) -> list[str]:
    text = json.dumps(document)
    found = re.findall(r'"(?:prometheusQuery|query)": "((?:[^"\\]|\\.)*)"', text)
    return [json.loads(f'"{q}"') for q in found if "logging_googleapis_com:user_" in q]


# ---- monitoring/apply.sh ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def apply_dry_run(tmp_path_factory) -> tuple[str, Path]:
    keep = tmp_path_factory.mktemp("rendered")
    out = run_script(
        MONITORING / "apply.sh", "--project", "proj-x", "--dry-run", env={**BASE_ENV, "DRY_RUN_DIR": str(keep)}
    )
    return out, keep


def test_apply_dry_run_shows_the_sink_writer_grant(apply_dry_run):
    out, _ = apply_dry_run
    lines = out.splitlines()
    sink = next(i for i, line in enumerate(lines) if line.startswith("gcloud logging sinks create litellm-bq-sink"))
    after = "\n".join(lines[sink:])
    assert "gcloud logging sinks describe litellm-bq-sink --project proj-x --format='value(writerIdentity)'" in after
    assert '"role": "WRITER"' in after and "userByEmail" in after  # BigQuery Data Editor on the dataset
    assert "bq --project_id proj-x update --source dataset.json proj-x:litellm_logs" in after


def test_apply_dry_run_names_only_files_that_exist_and_never_says_applied(apply_dry_run):
    out, keep = apply_dry_run
    named = re.findall(r"--(?:config-from-file|policy-from-file) (\S+)", out)
    rendered = [Path(p) for p in named if not p.startswith("metrics/")]
    assert len(rendered) == 1 + len(list((MONITORING / "alerts").glob("*.json")))
    for path in rendered:
        assert path.parent == keep and path.is_file(), path  # not a deleted temp file
        json.loads(path.read_text())
    assert "applied to" not in out and "nothing was applied" in out


def test_every_log_metric_query_selects_the_cloud_run_revision_resource(apply_dry_run):
    _, keep = apply_dry_run
    documents = [json.loads(p.read_text()) for p in sorted(keep.glob("*.json"))]
    queries = [q for document in documents for q in log_metric_queries(document)]
    assert len(queries) >= 8  # 4 dashboard tiles, 4 alerts
    for query in queries:
        for match in LOG_METRIC.finditer(query):
            selector = match.group(1) or ""
            assert 'monitored_resource="cloud_run_revision"' in selector, query
            assert 'service_name="litellm-proxy"' in selector, query  # rendered: no ${SERVICE} left


def test_metric_units_are_in_googles_unit_grammar():
    units = {p.stem: yaml.safe_load(p.read_text())["metricDescriptor"]["unit"] for p in MONITORING.glob("metrics/*")}
    assert units["litellm_cost_usd"] == "{USD}"
    for name, unit in units.items():
        assert re.fullmatch(r"1|ms|s|By|\{[A-Za-z_.]+\}", unit), (name, unit)


def test_apply_grants_the_sink_writer_on_the_dataset_for_real(tmp_path):
    env = {**BASE_ENV, **fake_cli(tmp_path)}
    out = run_script(MONITORING / "apply.sh", "--project", "proj-x", env=env)
    assert "monitoring: applied to proj-x" in out
    updated = json.loads((tmp_path / "updated.json").read_text())
    assert {"role": "WRITER", "userByEmail": "service-42@gcp-sa-logging.iam.gserviceaccount.com"} in updated["access"]
    assert {"role": "OWNER", "specialGroup": "projectOwners"} in updated["access"]  # nothing else dropped
    calls = (tmp_path / "calls.log").read_text()
    assert calls.index("gcloud logging sinks create") < calls.index("bq --project_id proj-x update --source")


# ---- deploy/deploy.sh and cloudbuild.yaml ---------------------------------------------------------


def deploy_dry_run(**extra: str) -> str:
    return run_script(REPO / "deploy" / "deploy.sh", "--dry-run", env={**BASE_ENV, **REQUIRED, **extra})


def secrets_of(output: str, command: str) -> set[str]:
    line = next(line for line in output.splitlines() if line.startswith(command))
    value = re.search(r"--set-secrets (\S+)", line)[1].replace("\\,", ",")
    return {pair.split("=")[0] for pair in value.split(",")}


def test_deploy_dry_run_skips_optional_secrets_that_have_no_value():
    out = deploy_dry_run()
    for name in ("anthropic-api-key", "stripe-api-key", "stripe-webhook-secret"):
        assert f"# skipped: {name}" in out
        assert f"gcloud secrets create {name} " not in out and f"add-iam-policy-binding {name} " not in out
    assert secrets_of(out, "gcloud run deploy litellm-proxy ") == {
        "BILLINGPROXY_DATABASE_URL", "PROXY_MASTER_KEY", "OPENAI_API_KEY",
    }  # fmt: skip
    assert secrets_of(out, "gcloud run deploy billing-service ") == {"DATABASE_URL", "PROXY_MASTER_KEY"}
    assert secrets_of(out, "gcloud run jobs deploy billingproxy-stripe-relay ") == {"DATABASE_URL"}


def test_deploy_dry_run_gives_each_optional_secret_a_version_when_its_value_is_set():
    out = deploy_dry_run(**OPTIONAL)
    for name, var in (("anthropic-api-key", "ANTHROPIC_API_KEY"), ("stripe-api-key", "STRIPE_API_KEY"),
                      ("stripe-webhook-secret", "STRIPE_WEBHOOK_SECRET")):  # fmt: skip
        create = out.index(f"gcloud secrets create {name} ")
        assert out.index(f'printf %s "${var}" | gcloud secrets versions add {name} --data-file=-') > create
    assert "ANTHROPIC_API_KEY" in secrets_of(out, "gcloud run deploy litellm-proxy ")
    assert {"STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"} <= secrets_of(out, "gcloud run deploy billing-service ")
    for value in (*OPTIONAL.values(), *REQUIRED.values()):
        assert value not in out


def test_deploy_dry_run_builds_a_tagged_image():
    out = deploy_dry_run()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    build = next(line for line in out.splitlines() if line.startswith("gcloud builds submit"))
    tag = re.search(r"--tag \S+/billingproxy:(\S*)", build)[1]
    assert tag and tag == (head.stdout.strip() or "latest")


def test_the_manual_cloud_build_gets_a_real_tag():
    text = (REPO / "cloudbuild.yaml").read_text()
    build = yaml.safe_load(text)
    assert "SHORT_SHA}" not in text.replace("$SHORT_SHA;", "")  # only a trigger has SHORT_SHA
    assert build["substitutions"]["_TAG"].strip() and build["options"]["dynamicSubstitutions"] is True
    assert all(image.endswith(":${_TAG}") for image in build["images"])
    readme = (REPO / "README.md").read_text()
    manual = next(line for line in readme.splitlines() if "gcloud builds submit --config cloudbuild.yaml" in line)
    assert "_TAG=$(git rev-parse --short HEAD)" in manual
    assert "_TAG=${HEAD_SHA::7}" in (REPO / ".github" / "workflows" / "deploy.yml").read_text()


def cloud_build_step(step_id: str) -> str:
    """A step's bash -c text as Cloud Build runs it: substitutions applied, $$ → $."""
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    step = next(s for s in build["steps"] if s["id"] == step_id)
    values = {**build["substitutions"], "PROJECT_ID": "proj-x", "_TAG": "abc1234", "_CLOUDSQL_INSTANCE": "p:r:i"}
    text = step["args"][-1]
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text.replace("$$", "$")


@pytest.mark.parametrize("versions", ["", "anthropic-api-key stripe-api-key stripe-webhook-secret"])
def test_cloud_build_deploy_steps_mount_optional_secrets_only_when_they_have_a_version(tmp_path, versions):
    env = {**fake_cli(tmp_path, versions), "HOME": str(tmp_path)}
    for step in ("deploy-proxy", "deploy-billing-service", "deploy-stripe-relay"):
        result = subprocess.run(["bash", "-c", cloud_build_step(step)], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
    deploys = [line for line in (tmp_path / "calls.log").read_text().splitlines() if " deploy " in line]
    mounted = " ".join(deploys)
    assert "billingproxy:abc1234" in mounted and "PROXY_MASTER_KEY=billingproxy-master-key:latest" in mounted
    for secret in ("anthropic-api-key", "stripe-api-key", "stripe-webhook-secret"):
        assert (f"={secret}:latest" in mounted) == bool(versions), secret


def test_a_real_deploy_keeps_an_existing_optional_secret_and_skips_a_missing_one(tmp_path):
    """deploy.sh for real against the fake gcloud: stripe-api-key already has a version (no value
    given), anthropic-api-key has none: the first is granted and mounted, the second neither."""
    env = {**BASE_ENV, **REQUIRED, **fake_cli(tmp_path, versions="stripe-api-key")}
    out = run_script(REPO / "deploy" / "deploy.sh", "--skip-build", env=env)
    assert "stripe-api-key: STRIPE_API_KEY not set, keeping the secret's current version" in out
    assert "# skipped: anthropic-api-key" in out and "deploy: done" in out
    calls = (tmp_path / "calls.log").read_text()
    assert "gcloud secrets versions add billingproxy-master-key --data-file=-" in calls
    assert "mk-value" not in calls  # the value went in through stdin
    assert "add-iam-policy-binding stripe-api-key" in calls and "anthropic-api-key" not in calls.replace(
        "secrets versions list anthropic-api-key", ""
    )
    relay = next(line for line in calls.splitlines() if line.startswith("gcloud run jobs deploy billingproxy-stripe"))
    assert "STRIPE_API_KEY=stripe-api-key:latest" in relay
