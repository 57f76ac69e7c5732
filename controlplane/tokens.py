"""Secrets the control plane hands out: admin tokens, install tokens, agent credentials.

Each is 256 random bits, URL-safe, with a short prefix that says what it is (so a token
pasted in the wrong place is recognisable). Only the SHA-256 hex digest is ever stored;
a lookup hashes what the caller presents and compares digests in the database.
"""

import hashlib
import secrets

ADMIN_PREFIX = "berth_adm_"
INSTALL_PREFIX = "berth_ins_"
CREDENTIAL_PREFIX = "berth_agt_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
