"""Can this server reach the control plane? (§12.4: checked before and after an apply.)

Any HTTP answer counts: the check is about the network path the new rules could cut,
not about the control plane's health.
"""

import http.client
import urllib.parse

CHECK_TIMEOUT_S = 5.0


def check_reachable(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """None when `url` answers over HTTP(S); else why not, in words."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", parts.path or "/", headers={"User-Agent": "berth-firewall-check"})
        conn.getresponse().read(1024)
    except (OSError, http.client.HTTPException) as exc:
        return f"control plane {url} unreachable: {exc or type(exc).__name__}"
    finally:
        conn.close()
    return None
