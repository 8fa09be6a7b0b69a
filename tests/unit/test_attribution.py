"""Attribution extraction and validation (billingproxy.access.attribution), no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billingproxy.access.attribution import (
    Attribution,
    attach_attribution,
    attribution_of_auth_metadata,
    attribution_of_request,
)
from billingproxy.errors import Refusal
from billingproxy.metering import UsageRecord
from billingproxy.metering.store import attribution_rollup_rows, row_values
from billingproxy.proxy.contract import check_body_read


def test_the_header_wins_over_user_which_wins_over_metadata_user_id():
    body = {"user": "body-user", "metadata": {"user_id": "anthropic-user", "tags": ["a"]}}
    assert attribution_of_request(body, {"X-BillingProxy-End-User": "hdr"}).end_user == "hdr"
    assert attribution_of_request(body, {}).end_user == "body-user"
    assert attribution_of_request({"metadata": {"user_id": "anthropic-user"}}, {}).end_user == "anthropic-user"
    both = attribution_of_request(body, {"x-billingproxy-tags": " x, y ,x"})
    assert both.tags == ("x", "y")  # the header wins, trimmed, a repeat counted once
    assert attribution_of_request(body, {}).tags == ("a",)
    assert attribution_of_request({}, {"X-Request-Id": "req-1"}) == Attribution(client_request_id="req-1")
    assert attribution_of_request({}, {}) == Attribution()


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        ({"user": ""}, {}, "user"),
        ({"user": 7}, {}, "user"),
        ({"user": "a" * 129}, {}, "user"),
        ({"user": "tab\there"}, {}, "user"),
        ({"metadata": {"user_id": "ünï"}}, {}, "metadata.user_id"),
        ({"metadata": {"tags": ["x"] * 17}}, {}, "metadata.tags"),
        ({"metadata": {"tags": [1]}}, {}, "metadata.tags"),
        ({}, {"x-billingproxy-tags": "ok,t" + "x" * 64}, "X-BillingProxy-Tags"),
        ({}, {"x-billingproxy-end-user": "  "}, "X-BillingProxy-End-User"),
        ({}, {"x-request-id": "has space"}, "x-request-id"),
    ],
)
def test_bad_values_are_refused_naming_the_field(body, headers, param):
    with pytest.raises(Refusal) as caught:
        attribution_of_request(body, headers)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, "invalid_attribution")


def test_limits_are_inclusive():
    got = attribution_of_request(
        {"user": "u" * 128, "metadata": {"tags": ["t" * 64] * 1 + [f"t{i}" for i in range(15)]}}, {}
    )
    assert len(got.end_user) == 128 and len(got.tags) == 16


def test_attach_stores_it_in_the_auth_metadata_and_the_payload_reads_it_back():
    auth = {"tenant_id": "tn_1"}
    data = {
        "user": "alice",
        "metadata": {
            "user_api_key_auth_metadata": auth,
            "headers": {"x-billingproxy-tags": "a,b", "x-request-id": "r1"},
            "requester_metadata": {},
        },
    }
    attach_attribution(data)
    stored = data["metadata"]["user_api_key_auth_metadata"]
    assert auth == {"tenant_id": "tn_1"}  # the original dict is not changed (it may be shared)
    assert attribution_of_auth_metadata(stored) == Attribution("alice", ("a", "b"), "r1")
    assert attribution_of_auth_metadata({"attribution": {"end_user": "bad value"}}) == Attribution()
    assert attribution_of_auth_metadata(None) == Attribution()


def test_anthropic_route_metadata_lives_in_litellm_metadata():
    data = {
        "metadata": {"user_id": "carol"},
        "litellm_metadata": {
            "user_api_key_auth_metadata": {},
            "headers": {},
            "requester_metadata": {"user_id": "carol"},
        },
    }
    assert attach_attribution(data).end_user == "carol"
    assert data["litellm_metadata"]["user_api_key_auth_metadata"]["attribution"]["end_user"] == "carol"


def _record(n: int, **extra) -> UsageRecord:
    when = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    return UsageRecord.from_json(
        {
            "request_id": f"r{n}",
            "tenant_id": "tn",
            "api_key_id": "key_a",
            "model": "m",
            "status": "success",
            "start_time": when.isoformat(),
            "total_tokens": 3,
            "cost_usd": "0.5",
            **extra,
        }
    )


def test_records_round_trip_and_copy_tags_as_a_list():
    record = _record(1, end_user="u", tags=["a", "b"], client_request_id="c")
    assert UsageRecord.from_json(record.to_json()) == record
    assert record.to_json()["tags"] == ["a", "b"]
    assert ["a", "b"] in row_values(record)
    old_line = {k: v for k, v in _record(2).to_json().items() if k not in ("end_user", "tags", "client_request_id")}
    assert UsageRecord.from_json(old_line).tags == ()


def test_the_rollup_counts_a_request_under_its_end_user_each_tag_and_its_key():
    columns = attribution_rollup_rows([_record(1, end_user="u", tags=["a", "b"]), _record(2, tags=["a"])])
    rows = {(dim, value): (requests, cost) for _, dim, _, value, requests, *rest, cost in zip(*columns, strict=True)}
    assert rows == {
        ("end_user", "u"): (1, Decimal("0.5")),
        ("tag", "a"): (2, Decimal("1.0")),
        ("tag", "b"): (1, Decimal("0.5")),
        ("key", "key_a"): (2, Decimal("1.0")),
    }


def test_a_body_without_model_is_a_400_naming_content_type_when_it_was_not_json():
    check_body_read({"model": "m"}, {})
    with pytest.raises(Refusal) as caught:
        check_body_read({}, {"Content-Type": "text/plain"})
    assert (caught.value.status, caught.value.param) == (400, "model") and "Content-Type" in caught.value.message
    with pytest.raises(Refusal) as caught:
        check_body_read({}, {"content-type": "application/json"})
    assert "Content-Type" not in caught.value.message
