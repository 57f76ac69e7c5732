"""A channel's settings: validated once here (pure), with errors naming the field.

    {"name": "ops", "kind": "webhook", "url": "https://hooks.example/berth",
     "stack": null, "events": ["deploy.failed", "server.offline"], "enabled": true,
     "rate_per_hour": 60, "group_window_s": 300}

`webhook` posts signed JSON (a `secret` is generated when none is given); `slack` posts
`{"text": ...}` to a Slack-compatible incoming webhook; `email` needs `smtp_host`,
`from` and `to` (and `smtp_port`, `username`, `password`, `starttls`). Passwords and
secrets are kept out of `config`: they go to the channel's `secret` column.
"""

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from controlplane.errors import Unprocessable
from controlplane.models import NotificationChannel, iso
from controlplane.notify.events import EVENTS

KINDS = ("webhook", "slack", "email")
DEFAULT_RATE_PER_HOUR = 60
DEFAULT_GROUP_WINDOW_S = 300
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    kind: str
    stack_id: str | None
    events: list[str]
    enabled: bool
    rate_per_hour: int
    group_window_s: int
    config: dict[str, Any]
    secret: str | None  # None: keep the stored one (update) or none at all


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Unprocessable(f"must be a whole number from {low} to {high}", field=key)
    return value


def _str(
    body: dict[str, Any], key: str, *, required: bool = True, max_len: int = 500
) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise Unprocessable(
            f"must be a non-empty string of at most {max_len} characters", field=key
        )
    return value.strip()


def _url(body: dict[str, Any]) -> str:
    url = _str(body, "url", max_len=2000) or ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unprocessable("must be an http:// or https:// URL", field="url")
    return url


def parse_channel(body: Any, *, creating: bool) -> ChannelSpec:
    if not isinstance(body, dict):
        raise Unprocessable("must be a JSON object", field="body")
    name = _str(body, "name", max_len=100) or ""
    if not _NAME.match(name):
        raise Unprocessable(
            "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    kind = body.get("kind")
    if kind not in KINDS:
        raise Unprocessable(f"must be one of {', '.join(KINDS)}", field="kind")
    stack = body.get("stack")
    if stack is not None and (not isinstance(stack, str) or not stack):
        raise Unprocessable("must be a stack id, or null for every stack", field="stack")
    events = body.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise Unprocessable("must be a list of event names (empty: every event)", field="events")
    for i, e in enumerate(events):
        if e not in EVENTS or e == "test":
            raise Unprocessable(
                f"unknown event {e!r}; one of {', '.join(k for k in EVENTS if k != 'test')}",
                field=f"events[{i}]",
            )
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Unprocessable("must be true or false", field="enabled")
    config: dict[str, Any]
    secret: str | None = None
    if kind in ("webhook", "slack"):
        config = {"url": _url(body)}
        if kind == "webhook":
            secret = _str(body, "secret", required=False, max_len=200)
            if secret is None and creating:
                secret = secrets.token_hex(32)
    else:
        to = body.get("to")
        to_list = [to] if isinstance(to, str) else to
        if (
            not isinstance(to_list, list)
            or not to_list
            or not all(isinstance(a, str) and _EMAIL.match(a) for a in to_list)
        ):
            raise Unprocessable("must be an email address or a list of them", field="to")
        sender = _str(body, "from", max_len=200) or ""
        if not _EMAIL.match(sender.split("<")[-1].rstrip(">")):
            raise Unprocessable("must be an email address", field="from")
        starttls = body.get("starttls", True)
        if not isinstance(starttls, bool):
            raise Unprocessable("must be true or false", field="starttls")
        config = {
            "smtp_host": _str(body, "smtp_host", max_len=255),
            "smtp_port": _int(body, "smtp_port", 587, 1, 65535),
            "from": sender,
            "to": to_list,
            "username": _str(body, "username", required=False, max_len=200),
            "starttls": starttls,
        }
        secret = _str(body, "password", required=False, max_len=500)
    return ChannelSpec(
        name=name,
        kind=kind,
        stack_id=stack,
        events=list(dict.fromkeys(events)),
        enabled=enabled,
        rate_per_hour=_int(body, "rate_per_hour", DEFAULT_RATE_PER_HOUR, 1, 3600),
        group_window_s=_int(body, "group_window_s", DEFAULT_GROUP_WINDOW_S, 0, 86400),
        config=config,
        secret=secret,
    )


def channel_json(row: NotificationChannel) -> dict[str, Any]:
    """The API view. A webhook's signing secret is shown (the receiver needs it, as with
    a stack's git webhook); an SMTP password never is."""
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "stack": row.stack_id,
        "events": row.events,
        "enabled": row.enabled,
        "rate_per_hour": row.rate_per_hour,
        "group_window_s": row.group_window_s,
        **row.config,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if row.kind == "webhook":
        out["secret"] = row.secret
        out["signature_header"] = "X-Berth-Signature-256"
    if row.kind == "email":
        out["password_set"] = bool(row.secret)
    return out
