"""SQLAlchemy models: the control plane's whole storage, created only by Alembic migrations.

Secrets (admin tokens, install tokens, agent credentials) are stored as SHA-256 hex digests
only. A stack row carries its current desired-state document so the agents' hot path reads
one row; `stack_versions` keeps every document ever published (history and rollback).
Foreign keys cascade so deleting a stack removes its versions, tokens, instances and events.

One module per subject: `base` (types, `utcnow`, `iso`), `stacks`, `access` (tokens and
instances), `reports` (events, logs, metrics), `users`, `audit`, `notify`; every model is
imported from here.
"""

from controlplane.models.access import AdminToken, InstallToken, Instance
from controlplane.models.audit import AuditRecord
from controlplane.models.base import Base, UTCDateTime, iso, utcnow
from controlplane.models.notify import (
    NotificationChannel,
    NotificationDelivery,
    NotificationMark,
    NotificationOutbox,
)
from controlplane.models.reports import Event, IngestWindow, LogChunk, MetricPoint
from controlplane.models.stacks import Stack, StackVersion, WebhookDelivery
from controlplane.models.users import LoginFailure, User, UserSession

__all__ = [
    "AdminToken",
    "AuditRecord",
    "Base",
    "Event",
    "IngestWindow",
    "InstallToken",
    "Instance",
    "LogChunk",
    "LoginFailure",
    "MetricPoint",
    "NotificationChannel",
    "NotificationDelivery",
    "NotificationMark",
    "NotificationOutbox",
    "Stack",
    "StackVersion",
    "UTCDateTime",
    "User",
    "UserSession",
    "WebhookDelivery",
    "iso",
    "utcnow",
]
