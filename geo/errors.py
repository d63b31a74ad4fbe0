"""The one hierarchy of domain errors; ``api.errors`` maps each class to an HTTP problem."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose. ``code`` is stable snake_case."""

    code = "domain_error"
    title = "The request cannot be carried out"

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra


class InvalidInput(DomainError):
    code = "invalid_input"
    title = "The input is not valid"


class NotFound(DomainError):
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict with the current state"


class OutsideJurisdiction(DomainError):
    code = "outside_jurisdiction"
    title = "Point is outside the jurisdiction"


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    title = "Wrong username or password"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = "Sign-in required"


class TooManyAttempts(DomainError):
    code = "too_many_attempts"
    title = "Too many failed attempts"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Not allowed for your role"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    title = "Request too large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    title = "Unsupported media type"
