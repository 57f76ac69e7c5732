"""The I/O of each channel kind, run in a worker thread by the notifier.

- webhook: POST the JSON body, signed like Berth's incoming git webhook (HMAC-SHA256 of
  the raw body with the channel's secret, `X-Berth-Signature-256: sha256=<hex>`), with
  the batch id as `X-Berth-Delivery` and `Idempotency-Key` so a receiver can drop a
  message it already has (a crash between sending and recording resends it);
- slack: POST `{"text": ...}` (Slack, Mattermost, Discord's /slack endpoint);
- email: SMTP, STARTTLS unless the channel turns it off, login when a username is set;
  the batch id is in the Message-ID.
Every failure raises `DeliveryError` with a short reason for the delivery log.
"""

import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import requests

from controlplane.notify import messages

TIMEOUT_S = 10.0
USER_AGENT = "Berth-Notify/1"


class DeliveryError(Exception):
    pass


def sign(secret: str, body: bytes) -> str:
    """The scheme of `api_hooks.sign` (GitHub's), so one verifier serves both directions."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        resp = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}"[:300]) from exc
    if resp.status_code >= 300:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")


def send(kind: str, config: dict[str, Any], secret: str | None, batch_id: str,
         batch: list[dict[str, Any]], ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Berth-Delivery": batch_id,
        "Idempotency-Key": batch_id,
        "X-Berth-Event": batch[-1]["event"],
    }
    if kind == "webhook":
        body = json.dumps(messages.webhook_body(batch_id, batch)).encode()
        headers["X-Berth-Signature-256"] = sign(secret or "", body)
        _post(config["url"], body, headers)
    elif kind == "slack":
        _post(config["url"], json.dumps(messages.slack_body(batch)).encode(), headers)
    elif kind == "email":
        _send_email(config, secret, batch_id, batch, ssl_context)
    else:
        raise DeliveryError(f"unknown channel kind {kind!r}")


def _send_email(config: dict[str, Any], password: str | None, batch_id: str,
                batch: list[dict[str, Any]], ssl_context: ssl.SSLContext | None) -> None:  # fmt: skip
    subject, text = messages.email_text(batch)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = config["from"]
    msg["To"] = ", ".join(config["to"])
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=batch_id, domain="berth.invalid")
    msg["X-Berth-Delivery"] = batch_id
    msg.set_content(text)
    try:
        with smtplib.SMTP(config["smtp_host"], int(config["smtp_port"]), timeout=TIMEOUT_S) as smtp:
            if config.get("starttls", True):
                smtp.starttls(context=ssl_context or ssl.create_default_context())
            if config.get("username"):
                smtp.login(config["username"], password or "")
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}"[:300]) from exc
