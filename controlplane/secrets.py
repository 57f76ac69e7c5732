"""Secret env values: sealed at rest, masked for people, in clear only for the stack's agents.

A stack's env entry marked secret (``{"secret": true, "value": "..."}``, docs/api.md) takes
three forms, and this module is the one place that turns one into another:

- **stored** (the database's documents): ``{"secret": true, "digest": D, "sealed": T}``.
  `T` is the value under AES-256-GCM with a key from the key file (never in the database),
  bound to its place (stack, service, variable) as associated data, so a token copied to
  another stack or variable does not open. `D` is HMAC-SHA256 of the name and value under
  the stack's own key (random, stored sealed in ``stacks.secret_key``): it changes when the
  value does, so the document hash (`agent.schema.hashing`) follows a secret's changes
  without revealing it, and nobody without the keys can test guesses against it.
  A declared secret that was never given a value is ``{"secret": true, "digest": null}``.
- **shown** (API, CLI, dashboard, version diffs, audit): `mask_entry` / `masked_document`:
  ``{"secret": true, "set": true, "fingerprint": "<16 hex of D>"}``. Use these for every
  view a person can see.
- **agent** (`agent_document`): ``{"secret": true, "digest": D, "value": "..."}``, sent
  only over the agent API to agents of that stack.

`Keyring` reads the key file: one key per line, the first seals, all open. It re-reads the
file when it changes, so `berth controlplane secrets rotate` (`rotate_keys`) can add a new
key, re-seal everything under it and drop the old one while servers keep serving.
"""

import base64
import hashlib
import hmac
import os
import secrets as _random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.schema import SecretEnv, StackSpec
from agent.schema.envwalk import Place, map_secret_entries
from controlplane.dburl import DatabaseURL
from controlplane.errors import ApiError

KEY_BYTES = 32
NONCE_BYTES = 12
TOKEN_VERSION = "v1"
FINGERPRINT_HEX = 16
KEY_FILE_HEADER = "# Berth control-plane secret key: keep it 0600, outside the database's backups\n"


class SecretKeyUnavailable(ApiError):
    """The key file is missing, unreadable, or lacks the key a value was sealed with."""

    status, code = 503, "secret_key_unavailable"


@dataclass(frozen=True)
class Key:
    id: str  # 8 hex digits of SHA-256 of the key: names the key in every token
    material: bytes

    @classmethod
    def new(cls) -> "Key":
        return cls.from_material(_random.token_bytes(KEY_BYTES))

    @classmethod
    def from_material(cls, material: bytes) -> "Key":
        return cls(hashlib.sha256(material).hexdigest()[:8], material)


# key files -------------------------------------------------------------------------------


def default_key_file(db: DatabaseURL) -> Path:
    """Beside an SQLite database file (never inside it); in the working directory else."""
    if db.is_sqlite and db.sync_url.database:
        return Path(db.sync_url.database + ".secret-key")
    return Path("berth-controlplane.secret-key")


def parse_key_file(text: str, where: str) -> list[Key]:
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            material = base64.urlsafe_b64decode(line.encode())
        except ValueError:
            material = b""
        if len(material) != KEY_BYTES:
            raise SecretKeyUnavailable(f"{where}: every key line must be 32 bytes in base64")
        keys.append(Key.from_material(material))
    if not keys:
        raise SecretKeyUnavailable(f"{where}: holds no key")
    return keys


def write_key_file(path: Path, keys: list[Key]) -> None:
    """Atomically (temp file, fsync, rename) and 0600 from the first byte."""
    text = KEY_FILE_HEADER + "".join(
        base64.urlsafe_b64encode(k.material).decode() + "\n" for k in keys
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_key_file(path: Path) -> bool:
    """Create the key file with one new key unless it exists (at `migrate`); True if made."""
    if path.exists():
        parse_key_file(path.read_text(), str(path))  # refuse to go on with a broken one
        return False
    write_key_file(path, [Key.new()])
    return True


class Keyring:
    """The keys of one key file, re-read whenever the file changes (rotation)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[Key] = []

    def _stat(self) -> tuple[int, int, int]:
        assert self.path is not None
        st = self.path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def keys(self) -> list[Key]:
        """The current keys (primary first), re-read if the file changed since last time."""
        if self.path is None:
            raise SecretKeyUnavailable("no secret key file configured (--secret-key-file)")
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._keys = parse_key_file(self.path.read_text(), str(self.path))
                self._stamp = stamp
        except OSError as exc:
            raise SecretKeyUnavailable(
                f"cannot read the secret key file {self.path}: {exc.strerror}; it is made by "
                f"`berth controlplane migrate --secret-key-file {self.path}`"
            ) from exc
        return self._keys

    def seal(self, plaintext: bytes, context: str) -> str:
        key = self.keys()[0]
        nonce = _random.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key.material).encrypt(nonce, plaintext, context.encode())
        return f"{TOKEN_VERSION}.{key.id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str) -> bytes:
        version, key_id, body = _split_token(token)
        key = next((k for k in self.keys() if k.id == key_id), None)
        if key is None:
            raise SecretKeyUnavailable(
                f"a secret is sealed with key {key_id}, which {self.path} does not hold "
                "(wrong --secret-key-file, or a rotation's new key file was not copied here)"
            )
        raw = base64.urlsafe_b64decode(body.encode())
        try:
            return AESGCM(key.material).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            )
        except InvalidTag as exc:
            raise SecretKeyUnavailable(
                "a sealed secret failed authentication (tampered with, or moved)"
            ) from exc

    def primary_id(self) -> str:
        return self.keys()[0].id


def _split_token(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise SecretKeyUnavailable("a sealed secret is not in a format this version reads")
    return parts[0], parts[1], parts[2]


def token_key_id(token: str) -> str:
    return _split_token(token)[1]


# contexts (associated data): a sealed value opens only in its own place ------------------


def value_context(stack_id: str, service: str, name: str) -> str:
    return f"berth-secret\0{stack_id}\0{service}\0{name}"


def stack_key_context(stack_id: str) -> str:
    return f"berth-stack-key\0{stack_id}"


def new_stack_key(keyring: Keyring, stack_id: str) -> tuple[bytes, str]:
    """A stack's HMAC key and its sealed form (for ``stacks.secret_key``)."""
    material = _random.token_bytes(KEY_BYTES)
    return material, keyring.seal(material, stack_key_context(stack_id))


def digest(stack_key: bytes, name: str, value: str) -> str:
    """HMAC-SHA256 of a secret under its stack's key, bound to the variable's name."""
    return hmac.new(stack_key, f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()


# what people see -------------------------------------------------------------------------


def is_secret_entry(value: Any) -> bool:
    return isinstance(value, dict) and value.get("secret") is True


def fingerprint(entry_digest: str | None) -> str | None:
    """A short, stable name for a value that reveals nothing of it (a prefix of its HMAC)."""
    return entry_digest[:FINGERPRINT_HEX] if entry_digest else None


def mask_entry(entry: Any) -> Any:
    """An env entry as any person may see it: plain values as they are, secrets as
    ``{"secret": true, "set": bool, "fingerprint": str | None}``."""
    if not is_secret_entry(entry):
        return entry
    is_set = bool(entry.get("digest") or entry.get("sealed")) or entry.get("value") is not None
    return {"secret": True, "set": is_set, "fingerprint": fingerprint(entry.get("digest"))}


def masked_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A document (stored, agent or body form) with every secret entry masked: the one
    function for every view a person sees (API, dashboard, CLI, version diffs, audit)."""
    return _map_entries(doc, lambda _place, entry: mask_entry(entry))


# documents -------------------------------------------------------------------------------


def _map_entries(doc: dict[str, Any], fn: Callable[[Place, dict[str, Any]], Any]) -> dict[str, Any]:
    return map_secret_entries(doc, fn, is_secret_entry)


def _entries(doc: dict[str, Any]) -> Iterator[tuple[Place, dict[str, Any]]]:
    for svc in doc.get("services") or []:
        if isinstance(svc, dict) and isinstance(svc.get("env"), dict):
            for k, v in svc["env"].items():
                if is_secret_entry(v):
                    yield (str(svc.get("name")), k), v


def has_secrets(doc: dict[str, Any]) -> bool:
    return next(_entries(doc), None) is not None


def stored_entries(doc: dict[str, Any] | None) -> dict[Place, tuple[str, str]]:
    """(digest, sealed token) of every set secret of a stored document, by place."""
    if not doc:
        return {}
    return {place: (e["digest"], e["sealed"]) for place, e in _entries(doc) if e.get("sealed")}


def without_sealed(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as the schema reads it (the sealed tokens are ours alone)."""
    return _map_entries(doc, lambda _p, e: {k: v for k, v in e.items() if k != "sealed"})


def agent_document(doc: dict[str, Any], stack_id: str, keyring: Keyring) -> dict[str, Any]:
    """The document an agent of the stack receives: each sealed value opened."""

    def open_entry(place: Place, entry: dict[str, Any]) -> dict[str, Any]:
        out = {"secret": True, "digest": entry.get("digest")}
        if entry.get("sealed"):
            out["value"] = keyring.open(entry["sealed"], value_context(stack_id, *place)).decode()
        return out

    return _map_entries(doc, open_entry)


@dataclass(frozen=True)
class Sealed:
    spec: StackSpec  # secrets carry digests only, no values
    tokens: dict[Place, str]


def seal_spec(
    spec: StackSpec,
    stack_id: str,
    stack_key: bytes | None,
    keyring: Keyring,
    previous: dict[Place, tuple[str, str]],
) -> Sealed:
    """Seal every secret given a value; keep `previous` (digest, token) for those without.

    A secret without a value and without a previous one stays declared but not set.
    """
    tokens: dict[Place, str] = {}
    services = []
    for svc in spec.services:
        kept: dict[str, SecretEnv] = {}
        for name, sec in svc.secrets.items():
            place = (svc.name, name)
            if sec.value is not None:
                assert stack_key is not None, "a stack key is made before sealing a value"
                d = digest(stack_key, name, sec.value)
                tokens[place] = keyring.seal(sec.value.encode(), value_context(stack_id, *place))
                kept[name] = SecretEnv(digest=d)
            elif place in previous:
                d, tokens[place] = previous[place]
                kept[name] = SecretEnv(digest=d)
            else:
                kept[name] = SecretEnv()
        services.append(replace(svc, secrets=kept))
    return Sealed(replace(spec, services=tuple(services)), tokens)


def needs_stack_key(spec: StackSpec) -> bool:
    return any(s.value is not None for svc in spec.services for s in svc.secrets.values())


def attach_tokens(doc: dict[str, Any], tokens: dict[Place, str]) -> dict[str, Any]:
    """A built document (digests only) with the sealed values added: the stored form."""
    return _map_entries(
        doc, lambda place, e: {**e, "sealed": tokens[place]} if place in tokens else e
    )


def reseal_document(doc: dict[str, Any], stack_id: str, keyring: Keyring) -> dict[str, Any] | None:
    """`doc` with every token not under the primary key re-sealed under it; None if all
    already are (rotation)."""
    primary = keyring.primary_id()
    changed = False

    def reseal(place: Place, entry: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        token = entry.get("sealed")
        if not token or token_key_id(token) == primary:
            return entry
        context = value_context(stack_id, *place)
        changed = True
        return {**entry, "sealed": keyring.seal(keyring.open(token, context), context)}

    out = _map_entries(doc, reseal)
    return out if changed else None
