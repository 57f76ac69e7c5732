"""The user API over HTTP: a `requests` session with the admin token, errors as
`ClientError` with the API's message (field included)."""

import os
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """Something the user must fix; the message says what."""


class Client:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 60.0) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls) -> "Client":
        token = os.environ.get("BERTH_TOKEN")
        if not token:
            raise ClientError(
                "BERTH_TOKEN is not set: export BERTH_TOKEN=$(berth controlplane token create --name me)"
            )
        return cls(os.environ.get("BERTH_URL") or DEFAULT_URL, token)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self.http.request(method, self.base + path, json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach the control plane at {self.base}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()
                where = f" ({err['field']})" if err.get("field") else ""
                msg = f"{err.get('error', 'error')}{where}: {err.get('detail', '')}"
            except (ValueError, AttributeError):
                msg = resp.text[:300]
            raise ClientError(f"{method} {path} → HTTP {resp.status_code}: {msg}")
        return resp.json() if resp.content else None

    def find_stack(self, name_or_id: str) -> dict[str, Any] | None:
        for stack in self.call("GET", "/stacks")["stacks"]:
            if name_or_id in (stack["id"], stack["name"]):
                return stack
        return None

    def stack(self, name_or_id: str) -> dict[str, Any]:
        stack = self.find_stack(name_or_id)
        if stack is None:
            raise ClientError(f"no stack named {name_or_id!r}; `berth stack list` shows them")
        return stack
