"""Cloudflare Tunnel connectivity for tunnel-only mode (§12.5).

cloudflared serves ``/ready`` on its metrics address: 200 when it holds at least one
connection to Cloudflare's edge, 503 otherwise. So:

* ``/ready`` answers 200                                  -> ``connected``
* it answers otherwise, or cloudflared is installed (binary or systemd unit) or
  running (a process named cloudflared) but does not answer -> ``disconnected``
* none of these                                           -> ``not-installed``
"""

import http.client
import shutil
from pathlib import Path

DEFAULT_METRICS = ("127.0.0.1", 20241)  # cloudflared's default metrics address
PROBE_TIMEOUT_S = 1.0
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)


def probe_ready(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> int | None:
    """The HTTP status of ``/ready``, or None when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def cloudflared_present(proc: Path = Path("/proc")) -> bool:
    if shutil.which("cloudflared"):
        return True
    if any((d / "cloudflared.service").exists() for d in UNIT_DIRS):
        return True
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "cloudflared":
                return True
        except OSError:  # the process exited while we looked
            continue
    return False


def tunnel_state(metrics: tuple[str, int] = DEFAULT_METRICS) -> str:
    status = probe_ready(*metrics)
    if status == 200:
        return "connected"
    if status is not None or cloudflared_present():
        return "disconnected"
    return "not-installed"
