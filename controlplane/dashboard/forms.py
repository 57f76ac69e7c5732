"""The stack edit form: HTML form fields ⇄ the API's stack body, as pure functions.

Every input is named after the path that `agent.schema.ValidationError.field` uses
(``services[1].port``, ``services[0].health.path``, ``proxy.port``), so an error from the
shared validator lands next to the input that caused it with no per-field mapping. The
only exception is env: inputs are rows (``services[0].env[2].name`` / ``.value``) while the
validator names the variable (``services[0].env.FOO``); `input_for_error` maps it back.

A row can be marked secret (``.secret``): its value input is a password field that is
always rendered empty, so a stored secret never reaches the browser. Left empty it keeps
the stored value; typed into, it replaces it. A stack is shown through
`controlplane.secrets.masked_document`, so the form only ever knows set / not set and a
fingerprint.

`parse_form` never raises: it returns the typed form (what the user typed, kept verbatim
so a rejected save re-renders it intact), the body to validate, and the errors found while
converting text to numbers. `apply_action` handles the add/remove buttons server-side, so
the form works without JavaScript and loses nothing.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.schema.stack import (
    DEFAULT_DNS_SUFFIX,
    DEFAULT_HEALTH_INTERVAL_S,
    DEFAULT_HEALTH_RETRIES,
    DEFAULT_HEALTH_START_PERIOD_S,
    DEFAULT_HEALTH_TIMEOUT_S,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_PROXY_PORT,
    DEFAULT_SECURITY_MODE,
)

MAX_SERVICES = 50
MAX_ENV_ROWS = 200
BLANK_ENV_ROWS = 1  # an empty row to type into, after the existing ones

_SERVICE_KEY = re.compile(r"^services\[(\d{1,3})\]\.")
_ENV_KEY = re.compile(r"services\[(\d{1,3})\]\.env\[(\d{1,3})\]\.(name|value|secret|fingerprint)")
_ENV_ERROR = re.compile(r"(services\[\d+\]\.env)\.(.+)", re.DOTALL)


@dataclass
class EnvRow:
    name: str = ""
    value: str = ""  # for a secret row: a new value typed in, never a stored one
    secret: bool = False
    fingerprint: str = ""  # a stored secret's fingerprint (display only); "" when not set


@dataclass
class ServiceForm:
    name: str = ""
    repo: str = ""
    ref: str = "main"
    build: str = ""
    run: str = ""
    port: str = ""
    path: str = ""
    strip_prefix: bool = False
    env: list[EnvRow] = field(default_factory=list)
    health_enabled: bool = False
    health_path: str = "/healthz"
    health_interval_s: str = f"{DEFAULT_HEALTH_INTERVAL_S:g}"
    health_timeout_s: str = f"{DEFAULT_HEALTH_TIMEOUT_S:g}"
    health_retries: str = str(DEFAULT_HEALTH_RETRIES)
    health_start_period_s: str = f"{DEFAULT_HEALTH_START_PERIOD_S:g}"
    commit: str | None = None  # the resolved commit of the stored version (display only)


@dataclass
class StackForm:
    name: str = ""
    security_mode: str = DEFAULT_SECURITY_MODE
    poll_interval_s: str = f"{DEFAULT_POLL_INTERVAL_S:g}"
    proxy_port: str = str(DEFAULT_PROXY_PORT)
    dns_suffix: str = DEFAULT_DNS_SUFFIX
    services: list[ServiceForm] = field(default_factory=list)

    def with_blank_rows(self) -> "StackForm":
        """For display: every service gets an empty env row to type into."""
        services = [
            replace(s, env=[*s.env, *(EnvRow() for _ in range(BLANK_ENV_ROWS))])
            for s in self.services
        ]
        return replace(self, services=services)


@dataclass(frozen=True)
class Parsed:
    form: StackForm
    body: dict[str, Any]
    errors: dict[str, str]


def _num(value: float | int | None) -> str:
    return "" if value is None else f"{value:g}"


def _env_row(name: str, value: Any) -> EnvRow:
    if isinstance(value, dict):  # a secret: only whether it is set, never its value
        return EnvRow(name, "", secret=True, fingerprint=value.get("fingerprint") or "")
    return EnvRow(name, str(value))


def from_stack(stack: Mapping[str, Any]) -> StackForm:
    """The form showing a stored stack (`stacks.stack_json` or a masked document)."""
    services = []
    for s in stack.get("services", []):
        health = s.get("health")
        svc = ServiceForm(
            name=s["name"],
            repo=s["repo"],
            ref=s.get("ref") or "HEAD",
            build=s.get("build") or "",
            run=s["run"],
            port=_num(s.get("port")),
            path=s.get("path") or "",
            strip_prefix=bool(s.get("strip_prefix")),
            env=[_env_row(k, v) for k, v in (s.get("env") or {}).items()],
            commit=s.get("commit"),
        )
        if health:
            svc.health_enabled = True
            svc.health_path = health.get("path", "/")
            svc.health_interval_s = _num(health.get("interval_s"))
            svc.health_timeout_s = _num(health.get("timeout_s"))
            svc.health_retries = _num(health.get("retries"))
            svc.health_start_period_s = _num(health.get("start_period_s"))
        services.append(svc)
    return StackForm(
        name=stack.get("name", ""),
        security_mode=stack.get("security_mode", DEFAULT_SECURITY_MODE),
        poll_interval_s=_num(stack.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S)),
        proxy_port=_num((stack.get("proxy") or {}).get("port", DEFAULT_PROXY_PORT)),
        dns_suffix=(stack.get("dns") or {}).get("suffix", DEFAULT_DNS_SUFFIX),
        services=services,
    )


def read_form(data: Mapping[str, str]) -> StackForm:
    """The typed form from submitted fields, verbatim (no validation, nothing dropped)."""
    indices = sorted({int(m.group(1)) for k in data if (m := _SERVICE_KEY.match(k))})[:MAX_SERVICES]
    services = []
    for i in indices:
        p = f"services[{i}]."

        def get(key: str, default: str = "", p: str = p) -> str:
            return str(data.get(p + key, default))

        rows: dict[int, EnvRow] = {}
        for key, value in data.items():
            m = _ENV_KEY.fullmatch(key)
            if m and int(m.group(1)) == i:
                row = rows.setdefault(int(m.group(2)), EnvRow())
                if m.group(3) == "secret":
                    row.secret = True
                else:
                    setattr(row, m.group(3), str(value))
        env = [rows[k] for k in sorted(rows)][:MAX_ENV_ROWS]
        services.append(
            ServiceForm(
                name=get("name").strip(),
                repo=get("repo").strip(),
                ref=get("ref").strip(),
                build=get("build"),
                run=get("run"),
                port=get("port").strip(),
                path=get("path").strip(),
                strip_prefix=p + "strip_prefix" in data,
                env=[r for r in env if r.name.strip() or r.value],
                health_enabled=p + "health.enabled" in data,
                health_path=get("health.path").strip(),
                health_interval_s=get("health.interval_s").strip(),
                health_timeout_s=get("health.timeout_s").strip(),
                health_retries=get("health.retries").strip(),
                health_start_period_s=get("health.start_period_s").strip(),
                commit=get("commit") or None,
            )
        )
    return StackForm(
        name=str(data.get("name", "")).strip(),
        security_mode=str(data.get("security_mode", DEFAULT_SECURITY_MODE)),
        poll_interval_s=str(data.get("poll_interval_s", "")).strip(),
        proxy_port=str(data.get("proxy.port", "")).strip(),
        dns_suffix=str(data.get("dns.suffix", "")).strip(),
        services=services,
    )


class _Converter:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def integer(self, raw: str, where: str) -> int | None:
        if raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            self.errors.setdefault(where, f"must be a whole number, not {raw!r}")
            return None

    def number(self, raw: str, where: str) -> float | None:
        if raw == "":
            return None
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            self.errors.setdefault(where, f"must be a number, not {raw!r}")
            return None
        return int(value) if value.is_integer() else value


def to_body(form: StackForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body for `form`, and errors of fields that are not even numbers."""
    conv = _Converter()
    services = []
    for i, s in enumerate(form.services):
        p = f"services[{i}]"
        svc: dict[str, Any] = {"name": s.name, "repo": s.repo, "build": s.build, "run": s.run}
        if s.ref:
            svc["ref"] = s.ref
        if (port := conv.integer(s.port, f"{p}.port")) is not None:
            svc["port"] = port
        if s.path:
            svc["path"] = s.path
        svc["strip_prefix"] = s.strip_prefix
        env: dict[str, Any] = {}
        for k, row in enumerate(s.env):
            name = row.name.strip()
            if not name:
                conv.errors.setdefault(f"{p}.env[{k}].name", "give the variable a name")
            elif name in env:
                conv.errors.setdefault(f"{p}.env[{k}].name", f"{name} is set twice")
            if row.secret:  # no value: keep the stored one
                env[name] = {"secret": True, **({"value": row.value} if row.value else {})}
            else:
                env[name] = row.value
        svc["env"] = env
        if s.health_enabled:
            health: dict[str, Any] = {"path": s.health_path or "/"}
            for key in ("interval_s", "timeout_s", "start_period_s"):
                raw = getattr(s, f"health_{key}")
                if (value := conv.number(raw, f"{p}.health.{key}")) is not None:
                    health[key] = value
            if (retries := conv.integer(s.health_retries, f"{p}.health.retries")) is not None:
                health["retries"] = retries
            svc["health"] = health
        services.append(svc)
    body: dict[str, Any] = {
        "name": form.name,
        "security_mode": form.security_mode,
        "services": services,
    }
    if (poll := conv.number(form.poll_interval_s, "poll_interval_s")) is not None:
        body["poll_interval_s"] = poll
    if (proxy_port := conv.integer(form.proxy_port, "proxy.port")) is not None:
        body["proxy"] = {"port": proxy_port}
    if form.dns_suffix:
        body["dns"] = {"suffix": form.dns_suffix}
    return body, conv.errors


def parse_form(data: Mapping[str, str]) -> Parsed:
    form = read_form(data)
    body, errors = to_body(form)
    return Parsed(form, body, errors)


def input_for_error(field_path: str, form: StackForm) -> str:
    """The input name an error about `field_path` belongs next to."""
    m = _ENV_ERROR.fullmatch(field_path)
    if not m:
        return field_path
    prefix, var = m.group(1), m.group(2)
    i = int(prefix[len("services[") : prefix.index("]")])
    if i < len(form.services):
        for k, row in enumerate(form.services[i].env):
            if row.name.strip() == var:
                return f"{prefix}[{k}].name"
    return prefix


def apply_action(form: StackForm, action: str) -> StackForm:
    """Handle `add_service`, `remove_service:I` and `add_env:I` (unknown: unchanged)."""
    services = list(form.services)
    verb, _, arg = action.partition(":")
    if verb == "add_service" and len(services) < MAX_SERVICES:
        services.append(ServiceForm())
    elif verb in ("remove_service", "add_env") and arg.isdigit() and int(arg) < len(services):
        i = int(arg)
        if verb == "remove_service":
            del services[i]
        elif len(services[i].env) < MAX_ENV_ROWS:
            services[i] = replace(services[i], env=[*services[i].env, EnvRow()])
    return replace(form, services=services)


_LABELS = {
    "name": "name", "security_mode": "security mode", "poll_interval_s": "poll interval",
    "proxy.port": "proxy port", "dns.suffix": "DNS suffix", "services": "services",
    "repo": "git repository", "ref": "ref", "build": "build command", "run": "run command",
    "port": "port", "path": "public path", "strip_prefix": "strip prefix",
    "health.path": "health check path", "health.interval_s": "health check interval",
    "health.timeout_s": "health check timeout", "health.retries": "health check retries",
    "health.start_period_s": "health check start period", "env": "environment",
}  # fmt: skip
_IN_SERVICE = re.compile(r"services\[(\d+)\]\.(.+)", re.DOTALL)


def describe_field(input_name: str, form: StackForm) -> str:
    """A reader's name for an input: ``services[1].port`` → ``Service 2 (api): port``."""
    m = _IN_SERVICE.fullmatch(input_name)
    if not m:
        return _LABELS.get(input_name, input_name).capitalize()
    i, rest = int(m.group(1)), m.group(2)
    name = form.services[i].name if i < len(form.services) else ""
    env = re.fullmatch(r"env\[(\d+)\]\.(name|value)", rest)
    what = f"environment variable {int(env.group(1)) + 1}" if env else _LABELS.get(rest, rest)
    return f"Service {i + 1}{f' ({name})' if name else ''}: {what}"
