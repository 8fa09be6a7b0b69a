"""monitoring/ as code: every filter and extractor names a real field of the request line with the
right type; dashboard and alert files have the shapes the Cloud Monitoring API requires; the
apply script's dry run prints the full, idempotent command list."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from billingproxy.metering import UsageRecord
from billingproxy.metering.request_log import MESSAGE, fields

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
METRICS = sorted((MONITORING / "metrics").glob("*.yaml"))
ALERTS = sorted((MONITORING / "alerts").glob("*.json"))
FIELD = re.compile(r"jsonPayload\.([A-Za-z_]+)")
COMPARISON = re.compile(r'jsonPayload\.([A-Za-z_]+)\s*(=|>=|>|<=|<|!=)\s*("?[^"\s)]+"?)')


def emitted_line(status: str = "success") -> dict:
    record = UsageRecord.from_json(dict(
        request_id="req-1", tenant_id="tn_1", api_key_id="key_1", model="gpt-4o", model_group="gpt-4o",
        provider="openai", call_type="acompletion", prompt_tokens=10, completion_tokens=5, cached_tokens=2,
        reasoning_tokens=0, total_tokens=15, cost_usd=Decimal("0.0000725000"), latency_ms=321, status=status,
        http_status=200 if status == "success" else 500, error_type=None if status == "success" else "APIError",
        stream=False, cache_hit=False, customer_id="cus_1", trace_id="ab" * 16,
        start_time=datetime(2026, 11, 1, tzinfo=UTC), end_time=datetime(2026, 11, 1, tzinfo=UTC),
    ))  # fmt: skip
    severity = {"success": "INFO", "failure": "ERROR"}[status]
    return {"severity": severity, "message": MESSAGE, **json.loads(json.dumps(fields(record, "proj")))}


def test_the_emitted_line_matches_the_schema():
    schema = json.loads((MONITORING / "request_log.schema.json").read_text())
    for status in ("success", "failure"):
        jsonschema.validate(emitted_line(status), schema)


def test_the_line_carries_the_product_docs_logs_explorer_fields():
    line = emitted_line()
    assert line["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert line["cost"] == line["cost_usd"] == 0.0000725
    assert line["latency"] == 0.321  # seconds; latency_ms stays 321
    schema = json.loads((MONITORING / "request_log.schema.json").read_text())
    for missing in ("usage", "cost", "latency"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({k: v for k, v in line.items() if k != missing}, schema)


@pytest.mark.parametrize("path", METRICS, ids=lambda p: p.stem)
def test_metric_filters_and_extractors_name_real_fields_of_the_right_type(path):
    metric = yaml.safe_load(path.read_text())
    assert metric["name"] == path.stem
    line = emitted_line("failure") if "failure" in metric["filter"] else emitted_line()
    for name, op, literal in COMPARISON.findall(metric["filter"]):
        assert name in line, name
        value = line[name]
        if literal.startswith('"'):
            assert isinstance(value, str) and (op != "=" or value == literal.strip('"')), (name, value)
        else:
            assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
    extractors = dict(metric.get("labelExtractors", {}))
    if "valueExtractor" in metric:
        extractors["value"] = metric["valueExtractor"]
        (name,) = FIELD.findall(metric["valueExtractor"])
        assert isinstance(line[name], int | float), f"{name} must be a JSON number for EXTRACT"
        assert metric["metricDescriptor"]["valueType"] == "DISTRIBUTION" and "bucketOptions" in metric
    for label, extractor in extractors.items():
        assert re.fullmatch(r"EXTRACT\(jsonPayload\.[A-Za-z_]+\)", extractor), extractor
        assert FIELD.findall(extractor)[0] in line, (label, extractor)
    declared = {label["key"] for label in metric["metricDescriptor"].get("labels", [])}
    assert declared == set(metric.get("labelExtractors", {}))
    assert metric["metricDescriptor"]["metricKind"] == "DELTA"


def test_the_product_docs_metric_definitions_work_verbatim():
    by_name = {p.stem: yaml.safe_load(p.read_text()) for p in METRICS}
    assert by_name["litellm_total_tokens"]["filter"] == 'jsonPayload.message="litellm_request"'
    assert by_name["litellm_total_tokens"]["valueExtractor"] == "EXTRACT(jsonPayload.total_tokens)"
    assert by_name["litellm_cost_usd"]["valueExtractor"] == "EXTRACT(jsonPayload.cost_usd)"


def test_dashboard_has_the_monitoring_api_shape():
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["displayName"]
    tiles = dashboard["mosaicLayout"]["tiles"]
    titles = " | ".join(t["widget"]["title"] for t in tiles)
    for wanted in ("Tokens per minute by tenant", "Cost", "P95 latency", "5xx", "Instances"):
        assert wanted in titles
    for tile in tiles:
        assert {"xPos", "yPos", "width", "height", "widget"} <= set(tile)
        assert tile["xPos"] + tile["width"] <= dashboard["mosaicLayout"]["columns"]
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            assert data_set["timeSeriesQuery"]["prometheusQuery"].strip()


@pytest.mark.parametrize("path", ALERTS, ids=lambda p: p.stem)
def test_alert_policies_have_the_monitoring_api_shape(path):
    policy = json.loads(path.read_text())
    assert policy["displayName"] and policy["combiner"] in {"OR", "AND", "AND_WITH_MATCHING_RESOURCE"}
    assert policy["conditions"]
    for condition in policy["conditions"]:
        assert condition["displayName"]
        promql = condition["conditionPrometheusQueryLanguage"]
        assert re.fullmatch(r"\d+s", promql["duration"])
        assert re.search(r"> \$\{[A-Z_]+\}$", promql["query"]), "the threshold must be a variable"


def test_alerts_cover_the_required_signals():
    names = {p.stem for p in ALERTS}
    assert names == {"token_surge", "cost_surge", "error_ratio", "latency_p95"}


def test_apply_dry_run_prints_every_command_with_thresholds_substituted(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TOKEN_SURGE_PER_MIN": "12345", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(MONITORING / "apply.sh"), "--project", "proj-x", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    out = result.stdout
    for metric in METRICS:
        assert f"gcloud logging metrics create {metric.stem} --project proj-x --config-from-file" in out
    assert out.count("gcloud alpha monitoring policies create") == len(ALERTS)
    assert "gcloud monitoring dashboards create --project proj-x" in out
    assert "gcloud logging sinks create litellm-bq-sink bigquery.googleapis.com/projects/proj-x/datasets/" in out
    assert "dry run for proj-x: nothing was applied" in out and "applied to" not in out


def test_rendered_alerts_substitute_thresholds():
    import string

    env = {
        "SERVICE": "litellm-proxy",
        "TOKEN_SURGE_PER_MIN": "12345",
        "COST_SURGE_USD_PER_MIN": "5",
        "ERROR_RATIO_PCT": "5",
        "LATENCY_SLO_MS": "30000",
        "NOTIFICATION_CHANNEL": "",
    }
    rendered = string.Template((MONITORING / "alerts" / "token_surge.json").read_text()).substitute(env)
    assert "> 12345" in json.loads(rendered)["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
