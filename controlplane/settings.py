"""Settings of one control-plane process, parsed once from the command line."""

from dataclasses import dataclass

from controlplane.audit import DEFAULT_RETENTION_DAYS
from controlplane.enrollment import DEFAULT_INSTALL_TOKEN_TTL_S
from controlplane.limits import Limits
from controlplane.longpoll import DEFAULT_INTERVAL_S
from controlplane.status import DEFAULT_HEARTBEAT_INTERVAL_S

DEFAULT_BIND = "127.0.0.1:8000"
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    db_url: str
    bind: str = DEFAULT_BIND
    # what agents and users reach us at; None: taken from each request's Host header
    public_url: str | None = None
    install_token_ttl_s: float = DEFAULT_INSTALL_TOKEN_TTL_S
    longpoll_interval_s: float = DEFAULT_INTERVAL_S
    max_wait_s: float = 60.0
    # agents heartbeat at least this often (and on every change); stale/offline count it
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    # directory served at /dist/ (the Berth wheel, its dependencies, the systemd units)
    wheelhouse: str | None = None
    # answer agents' 304 polls and heartbeats before Quart (controlplane/agentfastpath.py);
    # off only to compare the two paths
    fast_path: bool = True
    # the key that seals secret env values; None: beside an SQLite database, else ./
    # (controlplane.secrets.default_key_file)
    secret_key_file: str | None = None
    # directories local file:// repositories may come from (--allow-file-repos); none by
    # default: a file:// repo is read by the agent's own user, who can read far more
    file_repo_roots: tuple[str, ...] = ()
    # abuse limits and retention (issue 15; docs/api.md "Limits")
    limits: Limits = Limits()
    # audit records older than this are swept (0: keep every record)
    audit_retention_days: int = DEFAULT_RETENTION_DAYS
    # notifications: how often the notifier scans and sends, and how long a claimed
    # batch is held before another attempt may resend it (controlplane/notify/)
    notify_interval_s: float = 2.0
    notify_lease_s: float = 60.0
    notify_backoff_s: float = 5.0  # the first retry's wait; doubles per attempt
