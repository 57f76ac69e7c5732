"""Password hashing with scrypt (stdlib): `hash_password` and `verify_password`.

The stored form is ``scrypt$N$r$p$salt_hex$hash_hex`` so the cost can be raised later
without invalidating existing hashes (each hash carries its own parameters). Verification
compares digests in constant time. Both calls take ~50 ms of CPU on purpose: callers run
them in a thread (`asyncio.to_thread`) so the event loop keeps serving.
"""

import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def check_password_rules(password: str) -> None:
    """Raise ValueError saying what a valid password is."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must be at most {MAX_PASSWORD_CHARS} characters")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=64 * 1024 * 1024
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(key)
        actual = _scrypt(password[:MAX_PASSWORD_CHARS], bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# a hash to verify against when the user does not exist, so that a wrong name takes as
# long as a wrong password (no user enumeration by timing)
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
