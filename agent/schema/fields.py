"""Reading one untrusted JSON object field by field: the one validator behind the stack
schema and the firewall helper's requests.

`Fields` refuses keys nobody asked for (a typo never silently does nothing) and raises
the given `ValidationError` class naming the field as a dotted path (``services[0].port``,
``options.ssh_port``) and saying what would be valid.
"""

from typing import Any

from agent.schema.errors import ValidationError


def join_path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_no_nul(value: str, where: str, error: type[ValidationError] = ValidationError) -> None:
    """No NUL byte: no command line, environment or file name can carry one, and the
    agent could never start what it was sent."""
    if "\x00" in value:
        raise error(where, "must not contain a NUL byte (\\0)")


class Fields:
    """Typed reads from one JSON object, refusing keys nobody asked for."""

    def __init__(
        self,
        value: Any,
        where: str,
        allowed: set[str],
        error: type[ValidationError] = ValidationError,
    ) -> None:
        self.error = error
        if not isinstance(value, dict):
            raise error(where or "body", "must be a JSON object")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise error(
                join_path(where, unknown[0]),
                f"unknown key; allowed keys are {', '.join(sorted(allowed))}",
            )
        self.value: dict[str, Any] = value
        self.where = where

    def path(self, key: str) -> str:
        return join_path(self.where, key)

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def string(self, key: str, default: str | None = None, *, max_len: int = 4096) -> str:
        raw = self.value.get(key, default)
        if raw is None:
            raise self.error(self.path(key), "is required")
        if not isinstance(raw, str):
            raise self.error(self.path(key), "must be a string")
        if len(raw) > max_len:
            raise self.error(self.path(key), f"must be at most {max_len} characters")
        check_no_nul(raw, self.path(key), self.error)
        return raw

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        raw = self.value.get(key, default)
        if raw is None:
            raise self.error(self.path(key), f"required; one of {', '.join(choices)}")
        if not isinstance(raw, str) or raw not in choices:
            raise self.error(self.path(key), f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        raw = self.value.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise self.error(self.path(key), f"must be a number between {low:g} and {high:g}")
        if not low <= raw <= high:
            raise self.error(self.path(key), f"must be between {low:g} and {high:g}, got {raw}")
        return float(raw)

    def integer(self, key: str, default: int | None, *, low: int, high: int) -> int | None:
        raw = self.value.get(key, default)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.error(self.path(key), f"must be an integer between {low} and {high}")
        if not low <= raw <= high:
            raise self.error(self.path(key), f"must be between {low} and {high}, got {raw}")
        return raw

    def port(self, key: str, default: int | None) -> int | None:
        """A TCP port 1-65535, or None when absent and `default` is None."""
        raw = self.value.get(key, default)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
            raise self.error(self.path(key), f"must be a port number 1-65535, got {raw!r}")
        return raw

    def boolean(self, key: str, default: bool = False) -> bool:
        raw = self.value.get(key, default)
        if not isinstance(raw, bool):
            raise self.error(self.path(key), "must be true or false")
        return raw
