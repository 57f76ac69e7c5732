"""Redaction of secret values from what the agent ships: build and run logs, events.

Each secret value (and the forms it is commonly printed in: URL-encoded, form-encoded,
base64 and base64url, padded or not) becomes ``[secret:NAME]``. Pure code on bytes, so it
can run before a log chunk is decoded. Values shorter than `MIN_LENGTH` are left alone:
replacing every "1" or "on" would shred the logs and protect nothing.

Log chunks are cut at arbitrary offsets, so a value may straddle two chunks; `safe_length`
says how much of a chunk can be shipped now, holding back a tail that could be the start
of a value until the next chunk shows whether it is.
"""

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_LENGTH = 4
HOLD_BACK_MAX = 4096  # a value longer than this may still be split across two chunks


def forms_of(value: str) -> set[bytes]:
    raw = value.encode()
    forms = {raw, quote(value, safe="").encode(), quote(value).encode(), quote_plus(value).encode()}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms.add(encoded)
        forms.add(encoded.rstrip(b"="))
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Redactor:
    """Replaces the values of `secrets` (name → value) in bytes and text."""

    def __init__(self, secrets: Iterable[tuple[str, str]] = ()) -> None:
        self._names: dict[bytes, str] = {}
        for name, value in secrets:
            if len(value) >= MIN_LENGTH:
                for form in forms_of(value):
                    self._names.setdefault(form, name)
        # longest first, so a value is replaced whole rather than a shorter form inside it
        forms = sorted(self._names, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(f) for f in forms)) if forms else None
        self._longest = len(forms[0]) if forms else 0
        self._starts = {f[0] for f in forms}

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda m: f"[secret:{self._names[m.group()]}]".encode(), data)

    def redact_text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def safe_length(self, data: bytes) -> int:
        """How much of `data` to ship now: all of it, except a tail that is a proper
        prefix of some form (the rest of the value may be in the next chunk)."""
        if self._pattern is None:
            return len(data)
        for k in range(min(self._longest - 1, len(data), HOLD_BACK_MAX), 0, -1):
            if data[-k] not in self._starts:
                continue
            tail = data[-k:]
            if any(form.startswith(tail) for form in self._names):
                return len(data) - k
        return len(data)
