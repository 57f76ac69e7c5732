"""HTTP client for the control plane's agent API (requests; called from worker threads).

The agent always calls out (never listens), so a server with zero inbound ports works.
Transient failures raise `Unreachable` (retry with backoff); a refused credential raises
`Rejected` (permanent until an operator re-enrolls the server). A 429 raises `Throttled`,
an `Unreachable` that says how long to wait (Retry-After): keep what was sent, send later.
"""

import socket
from dataclasses import dataclass
from typing import Any

import requests

from agent.schema.registration import Registration
from agent.schema.report import Heartbeat, LogChunk
from agent.version import installed as installed_version

AGENT_VERSION = installed_version()  # of the package this process imports


class Unreachable(Exception):
    """The control plane could not be reached or answered 5xx: retry later."""


class Throttled(Unreachable):
    """429: the control plane asks us to wait `retry_after_s` before sending more."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_s(header: str | None, default: float = 60.0) -> float:
    """Retry-After in seconds (the delta form; Berth sends no dates), within 1..600."""
    try:
        value = float(header) if header is not None else default
    except ValueError:
        value = default
    return min(600.0, max(1.0, value)) if value == value else default


class Rejected(Exception):
    """The control plane refused us (401/403/4xx): retrying will not help."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    changed: bool
    document: dict[str, Any] | None
    etag: str | None


class ControlPlaneClient:
    def __init__(
        self, base_url: str, credential: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.timeout_s = timeout_s
        self._http = requests.Session()

    def _call(
        self, method: str, path: str, *, timeout_s: float | None = None, **kw: Any
    ) -> requests.Response:
        headers = kw.pop("headers", {})
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        try:
            resp = self._http.request(
                method,
                self.base_url + path,
                headers=headers,
                timeout=timeout_s or self.timeout_s,
                **kw,
            )
        except requests.RequestException as exc:
            raise Unreachable(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code == 429:
            wait = retry_after_s(resp.headers.get("Retry-After"))
            raise Throttled(f"{method} {path}: HTTP 429, retry in {wait:g} s", wait)
        if resp.status_code >= 500:
            raise Unreachable(f"{method} {path}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise Rejected(
                f"{method} {path}: HTTP {resp.status_code}: {resp.text[:300]}", resp.status_code
            )
        return resp

    def register(self, token: str) -> Registration:
        resp = self._call(
            "POST",
            "/api/v1/agent/register",
            json={"token": token, "hostname": socket.gethostname()},
        )
        return Registration.from_json(resp.json())

    def fetch_desired(self, etag: str | None, wait_s: float = 0) -> Fetched:
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        params = {"wait": f"{wait_s:g}"} if wait_s else {}
        resp = self._call(
            "GET",
            "/api/v1/agent/desired-state",
            headers=headers,
            params=params,
            timeout_s=self.timeout_s + wait_s,
        )
        if resp.status_code == 304:
            return Fetched(False, None, etag)
        return Fetched(True, resp.json(), (resp.headers.get("ETag") or "").strip('"') or None)

    def heartbeat(self, snapshot: Heartbeat) -> dict[str, Any]:
        """Send a snapshot; the answer says e.g. the heartbeat interval to keep, or (`upgrade`)
        that it is this server's turn in a rolling agent upgrade."""
        resp = self._call("POST", "/api/v1/agent/heartbeat", json=snapshot.to_json())
        try:
            body = resp.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def send_metrics(self, points: list[dict[str, Any]]) -> None:
        """One batch of metric points (agent/metrics/batch.py)."""
        self._call("POST", "/api/v1/agent/metrics", json={"points": points})

    def send_logs(self, chunks: list[LogChunk]) -> None:
        self._call("POST", "/api/v1/agent/logs", json={"chunks": [c.to_json() for c in chunks]})

    def send_events(self, events: list[dict[str, Any]]) -> list[str]:
        resp = self._call("POST", "/api/v1/agent/events", json={"events": events})
        accepted = resp.json().get("accepted", [])
        if isinstance(accepted, list):
            return [str(a) for a in accepted]
        return [e["id"] for e in events]  # a count: everything we sent was stored
