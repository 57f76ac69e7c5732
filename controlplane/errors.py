"""API errors: one hierarchy, mapped to HTTP in one place (`app._api_error`).

Every 4xx answer is JSON ``{error, detail}`` (plus ``field`` for validation) where `error`
is a stable machine-readable code and `detail` tells a person what to do.
"""

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
