"""The events that notify, and how an agent's event becomes one (pure).

`classify(type, message, extra)` maps one stored agent event to a notifying kind (or
None). Deploy outcome per server comes from the reconciler's own events: "serving
<commit>" after a cutover, a failed sync/build/health step carrying the commit. Health
turns unhealthy / recovers, crashes in a loop (`CRASH_LOOP_RESTARTS` restarts), security
mode confirmed, and a firewall change left unconfirmed (the helper reverts it) come from
their event texts. Stack-wide deploy results, servers going offline / online and install
tokens used are found by the notifier's scans, not here.
"""

from typing import Any

EVENTS = {
    "deploy.succeeded": "a server deployed a new commit of a service",
    "deploy.failed": "a server failed to deploy a service (sync, build or health check)",
    "deploy.reverted": "a failed deploy left the previous release serving (automatic revert)",
    "stack.deploy.succeeded": "every live server applied the stack's current version",
    "stack.deploy.failed": "a server reported the stack's current version degraded",
    "crash_loop": "a service keeps crashing (restarted again and again)",
    "health.unhealthy": "a service turned unhealthy",
    "health.recovered": "an unhealthy service is healthy again",
    "server.offline": "a server stopped sending heartbeats",
    "server.online": "an offline server is back",
    "security.changed": "a server confirmed a new security mode",
    "firewall.reverted": "a firewall change was not confirmed and reverts by itself",
    "install_token.used": "an install token was used: a new server joined",
    "test": "a test message sent from the API, CLI or dashboard",
}

CRASH_LOOP_RESTARTS = 3
DEPLOY_STEPS = ("sync", "build", "health")


def classify(type_: str, message: str, extra: dict[str, Any]) -> str | None:
    if type_ == "run" and message.startswith("serving "):
        return "deploy.succeeded"
    if type_ in DEPLOY_STEPS and extra.get("commit") and "superseded" not in message:
        return "deploy.failed"  # `_fail` of a deploy step: it carries the commit
    if type_ == "crash":
        restarts = extra.get("restarts")
        if isinstance(restarts, int) and restarts + 1 >= CRASH_LOOP_RESTARTS:
            return "crash_loop"
        return None
    if type_ == "health" and not extra.get("commit"):
        if message.startswith("unhealthy"):
            return "health.unhealthy"
        if message.startswith("healthy"):
            return "health.recovered"  # only after an unhealthy one (the notifier checks)
    if type_ == "security":
        if message.startswith("security mode ") and message.endswith(" confirmed"):
            return "security.changed"
        if "reverts by itself" in message or "reverted" in message:
            return "firewall.reverted"
    return None


def wanted(channel_events: list[Any], kind: str) -> bool:
    """Whether a channel subscribed to `kind` (an empty list means every event)."""
    return kind == "test" or not channel_events or kind in channel_events
