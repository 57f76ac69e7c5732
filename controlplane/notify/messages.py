"""What one delivery says (pure): the batch of outbox payloads -> a JSON body (webhook),
a Slack `{"text": ...}` body, or an email subject and text.

A batch holds events of one group (same kind, stack, server and service); a flapping
service's events within the channel's window arrive as one message with `count`.
"""

from typing import Any

MAX_LISTED = 20


def summary(batch: list[dict[str, Any]]) -> str:
    """One line: `[Berth] deploy.failed: shop/web on host-1: build failed (3 times)`."""
    last = batch[-1]
    where = (last.get("stack") or {}).get("name") or "Berth"
    if last.get("service"):
        where += f"/{last['service']}"
    if last.get("instance"):
        where += f" on {last['instance'].get('hostname') or last['instance'].get('id')}"
    line = f"[Berth] {last['event']}: {where}: {last.get('message', '')}".strip()
    if len(batch) > 1:
        line += f" ({len(batch)} times since {batch[0]['at']})"
    return line[:500]


def webhook_body(batch_id: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    last = batch[-1]
    return {
        "id": batch_id,
        "event": last["event"],
        "count": len(batch),
        "first_at": batch[0]["at"],
        "last_at": last["at"],
        "stack": last.get("stack"),
        "instance": last.get("instance"),
        "service": last.get("service"),
        "message": last.get("message", ""),
        "summary": summary(batch),
        "events": batch[-MAX_LISTED:],
    }


def slack_body(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {"text": summary(batch)}


def email_text(batch: list[dict[str, Any]]) -> tuple[str, str]:
    """(subject, body)."""
    lines = [summary(batch), ""]
    for p in batch[-MAX_LISTED:]:
        host = (p.get("instance") or {}).get("hostname") or "-"
        lines.append(
            f"{p['at']}  {p['event']}  {host}  {p.get('service') or '-'}  {p.get('message', '')}"
        )
    if len(batch) > MAX_LISTED:
        lines.append(f"... and {len(batch) - MAX_LISTED} earlier events")
    return summary(batch), "\n".join(lines) + "\n"
