"""Pure policy checks: which routes a tenant token may call, and how LiteLLM's error lines are
stripped of provider text (the end-to-end grep lives in tests/integration/test_security.py)."""

from __future__ import annotations

import io
import logging

import pytest

from billingproxy.access import check_tenant_route, tenant_may_call
from billingproxy.errors import Refusal
from billingproxy.proxy.log_redaction import ExceptionTextFilter

ALLOWED = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/models",
    "/models",
    "/v1/models/gpt-4o",
    "/openai/deployments/gpt-4o/chat/completions",
    "/engines/gpt-4o/embeddings",
]
REFUSED = [
    "/health",
    "/key/generate",
    "/spend/logs",
    "/model/info",
    "/v1/files",
    "/v1/batches",
    "/v1/responses/resp_1",
    "/v1/models/a/b",
    "/v1/chat/completions/extra",
    "/openai/deployments/x/files",
    "",
]


@pytest.mark.parametrize("route", ALLOWED)
def test_tenants_may_call_the_metered_routes(route: str) -> None:
    assert tenant_may_call(route)


@pytest.mark.parametrize("route", REFUSED)
def test_everything_else_needs_the_master_key(route: str) -> None:
    assert not tenant_may_call(route)
    with pytest.raises(Refusal) as refused:
        check_tenant_route(route)
    assert (refused.value.status, refused.value.code) == (403, "route_not_allowed")


class ProviderError(Exception):
    status_code = 400
    llm_provider = "openai"


def logged(emit) -> str:
    stream = io.StringIO()
    logger = logging.getLogger(f"redaction-test-{id(stream)}")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.addFilter(ExceptionTextFilter())
    logger.propagate = False
    emit(logger)
    return stream.getvalue()


SECRET = "the prompt: my password is hunter2"


def test_exception_arguments_and_tracebacks_lose_their_text_but_keep_type_and_frames() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            try:
                raise ValueError(SECRET)
            except ValueError as cause:
                raise ProviderError(f"invalid input: {SECRET}") from cause
        except ProviderError as exc:
            logger.exception("call failed - %s", exc)
            logger.error(f"formatted before logging: {exc}")

    text = logged(emit)
    assert "hunter2" not in text
    assert text.count("ProviderError(status_code=400, llm_provider=openai)") >= 2
    assert "Traceback" in text and "in emit" in text  # the frames survive


def test_records_without_exceptions_are_untouched() -> None:
    assert logged(lambda logger: logger.error("model %s is cooling down", "gpt-4o")) == (
        "model gpt-4o is cooling down\n"
    )


class OurRefusal(Exception):
    safe_to_log = True


def test_our_own_refusals_keep_their_message() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.error("refused - %s", OurRefusal("Model 'x' is not allowed for this tenant."))

    assert "not allowed for this tenant" in logged(emit)


def _filtered(level: int, exc: BaseException | None) -> logging.LogRecord:
    record = logging.LogRecord("LiteLLM Proxy", level, __file__, 1, "refused - %s", (exc,) if exc else (), None)
    assert ExceptionTextFilter().filter(record)
    return record


def test_a_client_refusal_of_ours_is_a_warning_not_an_error() -> None:
    record = _filtered(logging.ERROR, Refusal(429, "budget_exceeded", "Budget exceeded."))
    assert (record.levelname, record.severity) == ("WARNING", "WARNING")


def test_server_side_errors_stay_errors_and_carry_severity() -> None:
    assert _filtered(logging.ERROR, Refusal(503, "auth_unavailable", "retry")).severity == "ERROR"
    assert _filtered(logging.ERROR, RuntimeError("provider said no")).levelname == "ERROR"
    assert _filtered(logging.INFO, None).severity == "INFO"


@pytest.mark.parametrize(
    "message",
    [
        "custom_auth is configured but 'custom_auth_run_common_checks' is not set. Problem: budgets …",
        "trusted_proxy_ranges is not set or not a valid list of ranges, so failed Admin UI sign-in …",
        "Running 2 workers but Redis is not configured. Failed Admin UI sign-in attempts are counted …",
        "register_model: model=%s has custom pricing but not in built-in cost map …",
    ],
)
def test_litellm_startup_warnings_that_do_not_apply_are_info_with_the_reason(message):
    record = logging.LogRecord("LiteLLM", logging.WARNING, "x.py", 1, message, ("openai/x",) * ("%s" in message), None)
    assert ExceptionTextFilter().filter(record)
    assert (record.levelname, record.severity) == ("INFO", "INFO")
    assert "[BillingProxy: not applicable: " in record.getMessage() and "%s" not in record.getMessage()


def test_other_litellm_warnings_keep_their_level():
    for message in ("Running out of retries for model x", "Provider returned 429; retrying"):
        record = logging.LogRecord("LiteLLM", logging.WARNING, "x.py", 1, message, None, None)
        assert ExceptionTextFilter().filter(record)
        assert record.levelname == "WARNING" and "not applicable" not in record.getMessage()
