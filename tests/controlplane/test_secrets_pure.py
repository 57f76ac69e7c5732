"""Secrets without a server: the schema's secret entries, the hash, sealing and opening,
masking, and the agent's redaction (pure code; key files are real files)."""

import base64
import hashlib
import stat
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from agent.reconciler.logfiles import LogCursor
from agent.reconciler.redact import Redactor
from agent.schema import ValidationError, parse_stack
from agent.schema.document import build_document, parse_document
from agent.schema.hashing import document_hash
from controlplane import secrets as sec

VALUE = "pg://app:Hunter2-xyz@db/prod?ssl=1"


def body(env: dict) -> dict:
    return {"name": "s", "services": [{"name": "api", "repo": "https://h/r.git", "run": "x", "env": env}]}  # fmt: skip


def test_schema_reads_secret_entries_and_refuses_bad_ones() -> None:
    spec = parse_stack(
        body({"PLAIN": "1", "DB": {"secret": True, "value": VALUE}, "K": {"secret": True}})
    )
    svc = spec.services[0]
    assert svc.env == {"PLAIN": "1"}
    assert svc.secrets["DB"].value == VALUE and not svc.secrets["K"].is_set
    assert svc.environment() == {"PLAIN": "1", "DB": VALUE}
    assert VALUE not in str(svc.to_dict())  # to_dict never carries a value
    # a GET's masked entry round-trips as "keep"
    kept = parse_stack(body({"DB": {"secret": True, "set": True, "fingerprint": "ab" * 8}}))
    assert kept.services[0].secrets["DB"].value is None
    for env, field in (
        ({"DB": {"secret": False, "value": VALUE}}, "services[0].env.DB.secret"),
        ({"DB": {"secret": True, "value": 5}}, "services[0].env.DB.value"),
        ({"DB": {"secret": True, "value": VALUE + "\0"}}, "services[0].env.DB.value"),
        ({"DB": {"secret": True, "value": VALUE, "colour": 1}}, "services[0].env.DB.colour"),
        ({"PORT": {"secret": True, "value": VALUE}}, "services[0].env.PORT"),
        ({"bad-name": {"secret": True, "value": VALUE}}, "services[0].env.bad-name"),
    ):
        with pytest.raises(ValidationError) as exc:
            parse_stack(body(env))
        assert exc.value.field == field
        assert VALUE not in str(exc.value)


def test_hash_follows_the_digest_not_the_value_and_plain_documents_hash_as_before() -> None:
    plain = build_document("id", 1, parse_stack(body({"A": "1"})), {"api": "a" * 40})
    legacy = {k: v for k, v in plain.items() if k != "hash"}
    assert (
        plain["hash"]
        == hashlib.sha256(
            __import__("json").dumps(legacy, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    spec = parse_stack(body({"DB": {"secret": True, "digest": "d" * 64}}))
    doc = build_document("id", 1, spec, {"api": "a" * 40})
    with_value = {**doc, "services": [{**doc["services"][0], "env": {"DB": {"secret": True, "digest": "d" * 64, "value": VALUE}}}]}  # fmt: skip
    assert document_hash(with_value) == doc["hash"]  # the value is not hashed...
    state = parse_document(with_value)  # ...and the agent checks the hash and reads it
    assert state.services[0].spec.environment() == {"DB": VALUE}
    other = parse_stack(body({"DB": {"secret": True, "digest": "e" * 64}}))
    assert build_document("id", 1, other, {"api": "a" * 40})["hash"] != doc["hash"]


def test_key_file_sealing_places_and_masking(tmp_path: Path) -> None:
    path = tmp_path / "k" / "cp.secret-key"
    assert sec.ensure_key_file(path) and not sec.ensure_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = sec.Keyring(path)
    token = ring.seal(VALUE.encode(), sec.value_context("s1", "api", "DB"))
    assert VALUE not in token and VALUE.encode() not in base64.urlsafe_b64decode(
        token.split(".")[2]
    )
    assert ring.open(token, sec.value_context("s1", "api", "DB")) == VALUE.encode()
    with pytest.raises(sec.SecretKeyUnavailable):  # moved to another stack: refused
        ring.open(token, sec.value_context("s2", "api", "DB"))
    other = tmp_path / "other.key"
    sec.ensure_key_file(other)
    with pytest.raises(sec.SecretKeyUnavailable) as exc:  # a database without its key
        sec.Keyring(other).open(token, sec.value_context("s1", "api", "DB"))
    assert VALUE not in exc.value.detail
    with pytest.raises(sec.SecretKeyUnavailable):
        sec.Keyring(tmp_path / "missing").keys()
    # digests are keyed: equal values under other stack keys differ; no plain hash of it
    d1, d2 = sec.digest(b"1" * 32, "DB", VALUE), sec.digest(b"2" * 32, "DB", VALUE)
    assert d1 != d2 and d1 != hashlib.sha256(VALUE.encode()).hexdigest()
    stored = {"services": [{"name": "api", "env": {"A": "1", "DB": {"secret": True, "digest": d1, "sealed": token}, "N": {"secret": True, "digest": None}}}]}  # fmt: skip
    masked = sec.masked_document(stored)["services"][0]["env"]
    assert masked == {
        "A": "1",
        "DB": {"secret": True, "set": True, "fingerprint": d1[:16]},
        "N": {"secret": True, "set": False, "fingerprint": None},
    }
    agent = sec.agent_document(stored, "s1", ring)["services"][0]["env"]
    assert agent["DB"] == {"secret": True, "digest": d1, "value": VALUE}


def test_redactor_replaces_every_form_and_holds_back_a_split_value(tmp_path: Path) -> None:
    r = Redactor([("DB", VALUE), ("SHORT", "ab")])
    forms = [VALUE, quote(VALUE, safe=""), quote_plus(VALUE), base64.b64encode(VALUE.encode()).decode(),
             base64.urlsafe_b64encode(VALUE.encode()).decode().rstrip("=")]  # fmt: skip
    text = " | ".join(forms) + " | ab stays"
    out = r.redact_text(text)
    assert out.count("[secret:DB]") == len(forms) and "ab stays" in out
    for form in forms:
        assert form not in out
    # a value split across two reads of the log is never shipped in halves
    log = tmp_path / "service.log"
    log.write_bytes(b"start " + VALUE[:10].encode())
    cursor = LogCursor()
    first = cursor.read_new(log, r)
    assert first is not None and first[0] == "start "
    cursor.advance(log, first[1])
    with log.open("ab") as f:
        f.write(VALUE[10:].encode() + b" end\n")
    second = cursor.read_new(log, r)
    assert second is not None and second[0] == "[secret:DB] end\n"


def test_the_agent_store_is_0600_from_its_first_byte(tmp_path: Path) -> None:
    from agent.reconciler.store import Store

    old = tmp_path / "old" / "agent.sqlite3"
    old.parent.mkdir()
    old.write_bytes(b"")
    old.chmod(0o644)  # made by an earlier version
    for path in (tmp_path / "new" / "agent.sqlite3", old):
        store = Store(path)
        store.put_json("desired", {"secret": VALUE})
        store.close()
        for part in path.parent.iterdir():
            assert stat.S_IMODE(part.stat().st_mode) == 0o600, part
