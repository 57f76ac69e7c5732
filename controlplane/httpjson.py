"""Small HTTP helpers shared by the blueprints: reading JSON bodies, ETags, long-poll waits.

`etag_matches` and `parse_wait` are pure; `read_json` reads the current request.
"""

import json
import re
from itertools import accumulate
from typing import Any

from quart import request

from controlplane.errors import BadRequest, Unprocessable


async def read_json(*, allow_empty: bool = False) -> Any:
    """The request body as JSON; 400 naming the position of a syntax error."""
    raw = await request.get_data(as_text=False)
    return parse_json_body(raw if isinstance(raw, bytes) else raw.encode(), allow_empty=allow_empty)


# No body Berth accepts nests deeper than a few levels; a bound far below the parser's
# recursion limit keeps 1 MB of "[[[[" (no credential needed for /agent/register) a 400.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_NESTING = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth_within(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `raw`'s arrays and objects nest at most `limit` deep (brackets inside
    strings do not count). Cheap when there are few brackets, which is nearly always."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return all(depth <= limit for depth in accumulate(_NESTING[b] for b in brackets))


def parse_json_body(raw: bytes, *, allow_empty: bool = False) -> Any:
    """`raw` as JSON, or a 400 `BadRequest` that says what is wrong and where."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; send a JSON object", code="malformed_json")
    if not json_depth_within(raw):
        raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep", code="too_deep")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 JSON", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            code="malformed_json",
        ) from None


def batch_items(body: Any, key: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """The objects of a batch body `{key: [...]}` with their field paths (`key[i]`): the
    envelope checks every agent batch (events, log chunks) shares."""
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BadRequest(f'body must be {{"{key}": [...]}}', field=key)
    raw = body[key]
    if len(raw) > limit:
        raise Unprocessable(f"at most {limit} {key} per batch", field=key)
    items = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise Unprocessable("must be an object", field=where)
        items.append((where, item))
    return items


def json_object(body: Any, what: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object", field=what)
    return body


def etag_matches(if_none_match: str | None, current: str) -> bool:
    """Whether an If-None-Match header names `current` (weak or strong, list, or *)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == current:
            return True
    return False


def parse_wait(raw: str | None, max_wait_s: float) -> float:
    """`?wait=SECONDS` as a float in [0, max_wait_s]; 400 otherwise."""
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= max_wait_s or wait != wait:
        raise BadRequest(f"must be a number of seconds from 0 to {max_wait_s:g}", field="wait")
    return wait
