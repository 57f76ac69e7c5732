"""Canonical JSON and the desired-state hash.

The hash is the lowercase hex SHA-256 of the document without its ``hash`` key, encoded
as JSON with sorted keys, separators ``,`` and ``:``, UTF-8 and non-ASCII left unescaped.
"""

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_hash(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()
