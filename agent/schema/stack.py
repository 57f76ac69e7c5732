"""The stack: what a user asks one server (or several identical ones) to run.

`parse_stack` turns an untrusted JSON body into frozen dataclasses, validating every field
once, here, at the boundary. Each error names the field (``services[0].port``) and says
what would be valid. Unknown keys are refused so that a typo never silently does nothing.
"""

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.schema.dnsnames import DEFAULT_DNS_SUFFIX, MAX_SUFFIX_LEN, valid_label, valid_suffix
from agent.schema.errors import ValidationError
from agent.schema.fields import Fields, check_no_nul
from agent.schema.modes import DEFAULT_SECURITY_MODE, SECURITY_MODES

DEFAULT_POLL_INTERVAL_S = 10.0
DEFAULT_PROXY_PORT = 8080
DEFAULT_REF = "HEAD"
DEFAULT_HEALTH_INTERVAL_S = 5.0
DEFAULT_HEALTH_TIMEOUT_S = 2.0
DEFAULT_HEALTH_RETRIES = 3
DEFAULT_HEALTH_START_PERIOD_S = 0.0
# In-flight requests on a replaced release get this long before it is stopped.
DEFAULT_DRAIN_TIMEOUT_S = 30.0

# Patterns are applied with `fullmatch`: `$` would also match before a final newline
# ("api\n"), and a newline in a name or path must never pass.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")  # git@host:path
_URL_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SHA = re.compile(r"[0-9a-f]{40}")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class HealthSpec:
    path: str = "/"
    interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    retries: int = DEFAULT_HEALTH_RETRIES
    start_period_s: float = DEFAULT_HEALTH_START_PERIOD_S

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "start_period_s": self.start_period_s,
        }


@dataclass(frozen=True)
class SecretEnv:
    """An env entry whose value is secret (docs/security.md, docs/api.md "Secrets").

    In a user's body `value` is a new value, or None to keep the stored one. In the agent's
    document `value` is the value and `digest` its keyed hash (HMAC under the stack's key,
    computed by the control plane): the document hash covers the digest, never the value.
    A secret with neither is declared but not set: the service does not get the variable.
    """

    value: str | None = None
    digest: str | None = None

    @property
    def is_set(self) -> bool:
        return self.digest is not None or self.value is not None

    def to_dict(self) -> dict[str, Any]:
        """The entry without its value: what may be hashed, compared or shown."""
        return {"secret": True, "digest": self.digest}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    repo: str
    run: str
    ref: str = DEFAULT_REF
    build: str = ""
    port: int | None = None  # None: the agent assigns one (zero-gap deploys)
    path: str | None = None  # None: internal only, not routed by the external proxy
    strip_prefix: bool = False
    env: dict[str, str] = field(default_factory=dict)
    health: HealthSpec | None = None
    secrets: dict[str, SecretEnv] = field(default_factory=dict)  # secret env entries
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S

    def environment(self) -> dict[str, str]:
        """What the service's process gets: plain entries and the values of set secrets."""
        env = dict(self.env)
        env.update({k: s.value for k, s in self.secrets.items() if s.value is not None})
        return env

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo": self.repo,
            "ref": self.ref,
            "build": self.build,
            "run": self.run,
            "port": self.port,
            "path": self.path,
            "strip_prefix": self.strip_prefix,
            "env": {**self.env, **{k: s.to_dict() for k, s in self.secrets.items()}},
            "health": self.health.to_dict() if self.health else None,
            # only when set: documents (and so hashes) of existing stacks stay unchanged
            **(
                {"drain_timeout_s": self.drain_timeout_s}
                if self.drain_timeout_s != DEFAULT_DRAIN_TIMEOUT_S
                else {}
            ),
        }


@dataclass(frozen=True)
class StackSpec:
    name: str
    services: tuple[ServiceSpec, ...]
    security_mode: str = DEFAULT_SECURITY_MODE
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    proxy_port: int = DEFAULT_PROXY_PORT
    dns_suffix: str = DEFAULT_DNS_SUFFIX

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "security_mode": self.security_mode,
            "poll_interval_s": self.poll_interval_s,
            "proxy": {"port": self.proxy_port},
            "dns": {"suffix": self.dns_suffix},
            "services": [s.to_dict() for s in self.services],
        }


def check_repo_url(url: str, where: str) -> str:
    """Only transports that cannot run commands: refuse ``ext::`` and friends."""
    if _CONTROL.search(url):
        raise ValidationError(where, "must not contain control characters (newline, NUL, ...)")
    if url.startswith(_URL_SCHEMES) and len(url) > url.index("://") + 3:
        return url
    if _SCP_LIKE.fullmatch(url) and "::" not in url:
        return url
    raise ValidationError(
        where,
        "must be a git URL using https://, http://, ssh://, git://, file:// or git@host:path",
    )


def check_repo_source(url: str, file_roots: Sequence[str], where: str) -> str:
    """`check_repo_url`, plus this server's rule for local repositories: a ``file://`` URL
    must name a directory under one of `file_roots` (the operator's list), after symlinks
    are resolved. Both the control plane (on save and refresh) and the agent (before each
    clone) apply it, so a document that skipped one still meets the other."""
    url = check_repo_url(url, where)
    if not url.startswith("file://"):
        return url
    if not url.startswith("file:///") or any(c in url for c in "%?#\\"):
        raise ValidationError(where, "a file:// URL must be file:///absolute/path, unescaped")
    path = os.path.realpath(url.removeprefix("file://"))
    for root in file_roots:
        top = os.path.realpath(root)
        if path == top or path.startswith(top.rstrip("/") + "/"):
            return url
    if not file_roots:
        raise ValidationError(
            where,
            "local file:// repositories are not allowed on this server; the operator can allow "
            "directories with --allow-file-repos DIR",
        )
    raise ValidationError(
        where, f"{path} is outside the directories allowed for file:// repositories "
        f"({', '.join(file_roots)})",
    )  # fmt: skip


def check_repo_sources(spec: "StackSpec", file_roots: Sequence[str]) -> None:
    """`check_repo_source` for every service of `spec` (the error names the service)."""
    for i, svc in enumerate(spec.services):
        check_repo_source(svc.repo, file_roots, f"services[{i}].repo")


def _check_path(raw: str, where: str) -> str:
    if not _PATH.fullmatch(raw):
        raise ValidationError(where, "must start with / and contain only URL path characters")
    return raw.rstrip("/") or "/"


def _parse_health(value: Any, where: str) -> HealthSpec | None:
    if value is None:
        return None
    f = Fields(value, where, {"path", "interval_s", "timeout_s", "retries", "start_period_s"})
    return HealthSpec(
        path=_check_path(f.string("path", "/"), f.path("path")),
        interval_s=f.number("interval_s", DEFAULT_HEALTH_INTERVAL_S, low=0.1, high=3600),
        timeout_s=f.number("timeout_s", DEFAULT_HEALTH_TIMEOUT_S, low=0.1, high=600),
        retries=f.integer("retries", DEFAULT_HEALTH_RETRIES, low=1, high=100) or 1,
        start_period_s=f.number("start_period_s", DEFAULT_HEALTH_START_PERIOD_S, low=0, high=3600),
    )


def _parse_env(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(where, "must be an object of NAME: value strings")
    env: dict[str, str] = {}
    for name, val in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValidationError(f"{where}.{name}", "name must match [A-Z_][A-Z0-9_]*")
        if name == "PORT":
            raise ValidationError(
                f"{where}.{name}", "is set by the agent; use the service's port field"
            )
        if not isinstance(val, str):
            raise ValidationError(f"{where}.{name}", "value must be a string")
        check_no_nul(val, f"{where}.{name}")
        env[name] = val
    return env


_SECRET_KEYS = {"secret", "value", "digest", "set", "fingerprint"}
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _split_env(value: Any) -> tuple[Any, dict[str, Any]]:
    """(plain entries, secret entries): an entry given as an object is a secret."""
    if not isinstance(value, dict):
        return value, {}
    plain = {k: v for k, v in value.items() if not isinstance(v, dict)}
    return plain, {k: v for k, v in value.items() if isinstance(v, dict)}


def _parse_secrets(value: dict[str, Any], where: str) -> dict[str, SecretEnv]:
    """Secret entries: ``{"secret": true, "value": "..."}``; without `value` the stored one
    is kept. `set` and `fingerprint` (what a GET shows) are accepted and ignored, so a
    body read back round-trips. No error ever quotes a value."""
    secrets: dict[str, SecretEnv] = {}
    for name, raw in value.items():
        at = f"{where}.{name}"
        if not _ENV_NAME.match(name):
            raise ValidationError(at, "name must match [A-Z_][A-Z0-9_]*")
        if name == "PORT":
            raise ValidationError(at, "is set by the agent; use the service's port field")
        f = Fields(raw, at, _SECRET_KEYS)
        if raw.get("secret") is not True:
            raise ValidationError(
                f.path("secret"),
                'must be true (write a plain variable as a string: NAME = "value")',
            )
        val = raw.get("value")
        if val is not None and (not isinstance(val, str) or "\0" in val or len(val) > 65536):
            raise ValidationError(
                f.path("value"), "must be a string of at most 65536 characters without NUL"
            )
        digest = raw.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.match(digest)):
            raise ValidationError(f.path("digest"), "must be 64 lowercase hex digits")
        secrets[name] = SecretEnv(value=val, digest=digest)
    return secrets


_SERVICE_KEYS = {
    "name",
    "repo",
    "ref",
    "build",
    "run",
    "port",
    "path",
    "strip_prefix",
    "env",
    "health",
    "drain_timeout_s",
}


def _parse_service(value: Any, where: str) -> ServiceSpec:
    f = Fields(value, where, _SERVICE_KEYS)
    name = f.string("name", max_len=63)
    if not valid_label(name):
        raise ValidationError(
            f.path("name"),
            "must be a DNS label: lowercase letters, digits and '-', 1-63 characters",
        )
    ref = f.string("ref", DEFAULT_REF, max_len=255).strip()
    if not ref or ref.startswith("-") or any(c in ref for c in " ~^:?*[\\") or _CONTROL.search(ref):
        raise ValidationError(f.path("ref"), "must be a branch, tag or commit SHA")
    run = f.string("run")
    if not run.strip():
        raise ValidationError(f.path("run"), "must be a non-empty command")
    path = _check_path(f.string("path"), f.path("path")) if f.has("path") else None
    plain_env, secret_env = _split_env(value.get("env"))
    return ServiceSpec(
        name=name,
        repo=check_repo_url(f.string("repo", max_len=2048), f.path("repo")),
        ref=ref,
        build=f.string("build", ""),
        run=run,
        port=f.integer("port", None, low=1024, high=65535),
        path=path,
        strip_prefix=f.boolean("strip_prefix", False),
        env=_parse_env(plain_env, f.path("env")),
        health=_parse_health(value.get("health"), f.path("health")),
        secrets=_parse_secrets(secret_env, f.path("env")),
        drain_timeout_s=f.number("drain_timeout_s", DEFAULT_DRAIN_TIMEOUT_S, low=0, high=3600),
    )


def parse_stack(body: Any) -> StackSpec:
    """Validate a stack body (the API's JSON) into a `StackSpec`."""
    f = Fields(body, "", {"name", "security_mode", "poll_interval_s", "proxy", "dns", "services"})
    name = f.string("name", max_len=100).strip()
    if not name:
        raise ValidationError("name", "must not be empty")
    mode = f.choice("security_mode", SECURITY_MODES, DEFAULT_SECURITY_MODE)
    proxy = Fields(body.get("proxy") or {}, "proxy", {"port"})
    dns = Fields(body.get("dns") or {}, "dns", {"suffix"})
    suffix = dns.string("suffix", DEFAULT_DNS_SUFFIX, max_len=MAX_SUFFIX_LEN).strip(".").lower()
    if not valid_suffix(suffix):
        raise ValidationError("dns.suffix", "must be a DNS name such as svc.internal")
    raw_services = body.get("services", [])
    if not isinstance(raw_services, list):
        raise ValidationError("services", "must be a list of services")
    services = tuple(_parse_service(s, f"services[{i}]") for i, s in enumerate(raw_services))
    _check_unique(services)
    return StackSpec(
        name=name,
        services=services,
        security_mode=mode,
        poll_interval_s=f.number("poll_interval_s", DEFAULT_POLL_INTERVAL_S, low=0.5, high=3600),
        proxy_port=proxy.integer("port", DEFAULT_PROXY_PORT, low=1024, high=65535)
        or DEFAULT_PROXY_PORT,
        dns_suffix=suffix,
    )


def _check_unique(services: tuple[ServiceSpec, ...]) -> None:
    seen: dict[str, dict[object, int]] = {"name": {}, "path": {}, "port": {}}
    for i, svc in enumerate(services):
        for key, val in (("name", svc.name), ("path", svc.path), ("port", svc.port)):
            if val is None:
                continue
            if val in seen[key]:
                raise ValidationError(
                    f"services[{i}].{key}",
                    f"{val!r} is already used by services[{seen[key][val]}]; each service needs its own {key}",
                )
            seen[key][val] = i


def is_commit_sha(ref: str) -> bool:
    return bool(_SHA.fullmatch(ref))
