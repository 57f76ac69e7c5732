"""API errors: one hierarchy, rendered to HTTP in one place (`rendered`, used by the Quart
app's error handlers and by the agents' fast path alike, so both answer byte for byte
the same).

Every 4xx answer is JSON ``{error, detail}`` (plus ``field`` for validation) where `error`
is a stable machine-readable code and `detail` tells a person what to do.
"""

import json
import math
from typing import Any

from agent.schema import ValidationError


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        if code:
            self.code = code

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        return body


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unprocessable(ApiError):
    status, code = 422, "invalid_field"


class TooManyRequests(ApiError):
    """Over a rate limit: answered 429 with a Retry-After header (`app._api_error`)."""

    status, code = 429, "rate_limited"

    def __init__(self, detail: str, retry_after_s: float, *, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.retry_after_s = retry_after_s


def from_validation(exc: ValidationError) -> Unprocessable:
    return Unprocessable(exc.detail, field=exc.field, code="invalid_field")


def dumps(body: dict[str, Any]) -> bytes:
    """What the Quart app's JSON provider renders: compact, keys in order, newline."""
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


def rendered(exc: ApiError) -> tuple[int, bytes, list[tuple[str, str]]]:
    """(status, JSON body, headers) of the answer to `exc`."""
    headers = [("Content-Type", "application/json")]
    if isinstance(exc, TooManyRequests):
        headers.append(("Retry-After", str(max(1, math.ceil(exc.retry_after_s)))))
    return exc.status, dumps(exc.as_dict()), headers


def crash_body(exc: BaseException) -> dict[str, Any]:
    """The 500 answer's body for an unexpected exception (the log has the traceback)."""
    return {
        "error": "internal_error",
        "detail": f"{type(exc).__name__}: see the control plane's log",
    }
