"""The admitted line and the interrupted row built from it (usage audit), without prompt text."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from decimal import Decimal

from billingproxy.metering import ModelPrice, PriceTable, UsageRecord
from billingproxy.metering.admitted import emit, interrupted_record, prompt_chars, read_admitted

PRICES = PriceTable({"m": ModelPrice(Decimal("0.000001"), Decimal("0.000002"), Decimal("0.0000005"))})
AUTH = {"tenant_id": "tn_1", "api_key_id": "key_1", "customer_id": "cus_1"}
SECRET = "the secret prompt text"


def admitted_line(body: dict) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        emit("req-1", AUTH, "m", "acompletion", body, None)
    return out.getvalue()


def test_the_admitted_line_carries_no_prompt_text_and_reads_back():
    body = {"model": "m", "messages": [{"role": "user", "content": SECRET}], "stream": True}
    line = admitted_line(body)
    assert SECRET not in line
    assert json.loads(line)["prompt_chars"] == len(SECRET)
    [admitted] = read_admitted([line, "not json", '{"message": "litellm_request"}'])
    assert (admitted.request_id, admitted.tenant_id, admitted.stream) == ("req-1", "tn_1", True)


def test_an_interrupted_row_is_estimated_and_survives_the_json_round_trip():
    [admitted] = read_admitted([admitted_line({"messages": [{"role": "user", "content": "x" * 41}]})])
    record = interrupted_record(admitted, PRICES, "estimate")
    assert (record.status, record.usage_estimated, record.prompt_tokens) == ("interrupted", True, 11)
    assert record.cost_usd == Decimal("0.0000110000")
    assert record.billable
    assert UsageRecord.from_json(json.loads(record.to_json_line())) == record
    assert interrupted_record(admitted, PRICES, "zero").cost_usd == 0


def test_prompt_chars_counts_text_parts_only():
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "abc"}, {"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": None},
        ],
        "prompt": "de",
    }
    assert prompt_chars(body) == 5
