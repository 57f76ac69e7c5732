"""Validation errors that name the offending field and say what would be valid."""


class ValidationError(ValueError):
    """A field of a stack or document is invalid.

    `field` is a dotted path into the body (e.g. ``services[1].port``) so that an API
    answer, a CLI message and a dashboard form can all point at the same place.
    """

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"error": "invalid_field", "field": self.field, "detail": self.detail}
