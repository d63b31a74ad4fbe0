"""RFC 9457 problem details: one map from domain error to HTTP status, and the handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo import errors as e

log = logging.getLogger("citygrid")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://citygrid.example/errors/"

STATUS: dict[type[e.DomainError], int] = {
    e.Unauthenticated: 401,
    e.InvalidCredentials: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.OutsideJurisdiction: 422,
    e.InvalidInput: 422,
    e.TooManyAttempts: 429,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
}

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Sign-in required"),
    403: ("forbidden", "Not allowed for your role"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Request too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    503: ("unavailable", "Service unavailable"),
}


def status_of(error: e.DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(e.DomainError)
    async def domain_error(_: Request, exc: e.DomainError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if "retry_after_s" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after_s"])
        return problem(status, exc.code, exc.title, exc.detail, exc.errors, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(err["loc"])), "message": err["msg"]} for err in exc.errors()]
        return problem(
            422,
            "invalid_input",
            "The input is not valid",
            "; ".join(f"{x['field']}: {x['message']}" for x in errors),
            errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("error", "Error"))
        return problem(exc.status_code, code, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "Internal error", "An unexpected error occurred")
