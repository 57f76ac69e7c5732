import copy
import hashlib
import json

import pytest

from agent.schema import ValidationError, parse_stack
from agent.schema.document import build_document, content_hash, parse_document

SHA = "a" * 40


def spec():
    return parse_stack(
        {
            "name": "café",
            "services": [
                {
                    "name": "api",
                    "repo": "file:///srv/a",
                    "run": "./run",
                    "path": "/api",
                    "port": 5001,
                }
            ],
        }
    )


def test_hash_is_sha256_of_canonical_json_without_hash():
    doc = build_document("s1", 3, spec(), {"api": SHA})
    body = {k: v for k, v in doc.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )
    assert doc["hash"] == hashlib.sha256(canonical).hexdigest()
    assert "café".encode() in canonical  # non-ASCII is not escaped


def test_document_round_trips():
    doc = build_document("s1", 3, spec(), {"api": SHA})
    state = parse_document(copy.deepcopy(doc))
    assert state.version == 3 and state.stack_id == "s1"
    assert state.services[0].commit == SHA
    assert state.stack == spec()


def test_content_hash_ignores_id_and_version_but_not_commits():
    assert content_hash(spec(), {"api": SHA}) == content_hash(spec(), {"api": SHA})
    assert content_hash(spec(), {"api": SHA}) != content_hash(spec(), {"api": "b" * 40})


def test_tampered_document_is_refused():
    doc = build_document("s1", 3, spec(), {"api": SHA})
    doc["services"][0]["run"] = "rm -rf /"
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert err.value.field == "hash"


def test_bad_commit_is_refused_even_with_a_matching_hash():
    doc = build_document("s1", 3, spec(), {"api": "nope"})
    with pytest.raises(ValidationError) as err:
        parse_document(doc)
    assert err.value.field == "services[0].commit"
