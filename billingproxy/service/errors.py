"""The admin API's one translation of the error tree to the wire: OpenAI-shaped JSON bodies."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from billingproxy.errors import BillingProxyError, ConfigError, InvalidInput, NotFound, Refusal, Unavailable

__all__ = ["error_response", "install_error_handlers"]

_STATUS: list[tuple[type[BillingProxyError], int, str]] = [
    (InvalidInput, 400, "invalid_request"),
    (NotFound, 404, "not_found"),
    (ConfigError, 503, "not_configured"),
    (Unavailable, 503, "unavailable"),
]


def error_response(status: int, code: str, message: str, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status)


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
        code = {401: "invalid_api_key", 403: "forbidden"}.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))
