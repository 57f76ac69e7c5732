"""The one canonical JSON encoding and the one hash over it.

`canonical_json`: sorted keys, separators ``,`` and ``:``, UTF-8 with non-ASCII left
unescaped. `content_sha256` is the lowercase hex SHA-256 of that encoding; every content
hash in Berth is it or a prefix of it: the desired-state document's hash (the document
without its ``hash`` key), and the reconciler's config hash and build key
(`agent.reconciler.policy`).
"""

import hashlib
import json
from typing import Any

from agent.schema.envwalk import map_secret_entries


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def document_hash(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "hash"}
    return content_sha256(without_secret_values(body))


def without_secret_values(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each secret env entry reduced to ``{"secret", "digest"}``.

    The hash covers a secret's keyed digest, not its value (nor the control plane's
    ciphertext of it), so a changed secret changes the hash while the hash, which users
    see, reveals nothing of the value. A document without secrets is returned as is.
    """
    return map_secret_entries(
        document, lambda _place, v: {"secret": v.get("secret"), "digest": v.get("digest")}
    )
