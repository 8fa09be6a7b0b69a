"""The admin API's one translation of the error tree to the wire: OpenAI-shaped JSON bodies."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from billingproxy.errors import BillingProxyError, ConfigError, InvalidInput, NotFound, Refusal, Unavailable

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("billingproxy.service")

_STATUS: list[tuple[type[BillingProxyError], int, str]] = [
    (InvalidInput, 400, "invalid_request"),
    (NotFound, 404, "not_found"),
    (ConfigError, 503, "not_configured"),
    (Unavailable, 503, "unavailable"),
]


def error_response(
    status: int, code: str, message: str, type_: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    """OpenAI's error shape: ``{"error": {"message", "type", "code", "param"}}``."""
    return JSONResponse({"error": {"message": message, "type": type_, "code": code, "param": param}}, status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BillingProxyError)
    async def _ours(_: Request, exc: BillingProxyError) -> JSONResponse:
        if isinstance(exc, Refusal):
            return error_response(exc.status, exc.code, exc.message, exc.type)
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                return error_response(status, code, exc.message)
        return error_response(500, "internal_error", exc.message, "api_error")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {401: "invalid_api_key", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, code.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """pydantic's 422 list, as one OpenAI-shaped 400 naming the first bad field."""
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return error_response(400, "invalid_request", "body: not valid JSON")
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")) or None
        return error_response(400, "invalid_request", "; ".join(problems) or "invalid request", param=param)

    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unreachable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return error_response(503, "database_unavailable", "The database is unreachable; retry.", "service_unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error in the billing service", exc_info=exc)
        return error_response(500, "internal_error", "Internal error; see the service log.", "api_error")
