"""The one walk over a desired-state document's secret env entries (an env entry given
as an object is a secret, see `stack._split_env`), for both sides: the document hash
reduces each to its digest, the control plane masks, seals and opens them.
"""

from collections.abc import Callable
from typing import Any

Place = tuple[str, str]  # (service, variable)


def is_object_entry(value: Any) -> bool:
    return isinstance(value, dict)


def map_secret_entries(
    document: dict[str, Any],
    fn: Callable[[Place, dict[str, Any]], Any],
    is_secret: Callable[[Any], bool] = is_object_entry,
) -> dict[str, Any]:
    """`document` with `fn(place, entry)` in place of every entry `is_secret` accepts.

    Copies only what changes; a document without such entries is returned as is (so a
    document without secrets hashes and reads exactly as before secrets existed).
    """
    services = document.get("services")
    if not isinstance(services, list):
        return document
    out = []
    for svc in services:
        env = svc.get("env") if isinstance(svc, dict) else None
        if isinstance(env, dict) and any(is_secret(v) for v in env.values()):
            name = str(svc.get("name"))
            env = {k: fn((name, k), v) if is_secret(v) else v for k, v in env.items()}
            svc = {**svc, "env": env}
        out.append(svc)
    return {**document, "services": out}
