"""Field-level diffs of desired-state documents (pure), and their text rendering."""

import copy
from typing import Any

from agent.schema import parse_stack
from agent.schema.document import build_document
from controlplane.diffs import HIDDEN, compare_url, diff_documents, render_text, shown_value

A, B = "a" * 40, "b" * 40


def doc(version: int, **edits: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "shop",
        "security_mode": "tunnel-only",
        "services": [
            {"name": "web", "repo": "https://github.com/acme/web.git", "run": "python3 app.py",
             "port": 19001, "path": "/", "env": {"GREETING": "hi", "MODE": "a"},
             "health": {"path": "/healthz"}},
            {"name": "api", "repo": "https://git.example/api.git", "run": "python3 api.py"},
        ],
    }  # fmt: skip
    body.update(edits)
    commits = {s["name"]: (edits.get("_commit") or A) for s in body["services"]}
    body.pop("_commit", None)
    return build_document("stack-1", version, parse_stack(body), commits)


def test_identical_documents_have_an_empty_diff() -> None:
    d = diff_documents(doc(1), doc(2))
    assert d["empty"] is True and d["stack"] == [] and d["services"]["changed"] == []
    assert "(no changes)" in render_text(d)


def test_every_kind_of_field_change_is_named() -> None:
    before = doc(1)
    services = copy.deepcopy(before["services"])
    web = {k: v for k, v in services[0].items() if k != "commit"}
    web["env"] = {"GREETING": "hello", "NEW": "1"}  # MODE removed, GREETING changed
    web["run"] = "gunicorn app:app"
    web["port"] = 19011
    web["path"] = "/shop"
    web["health"] = {"path": "/ready"}
    web["drain_timeout_s"] = 120
    worker = {"name": "worker", "repo": "https://github.com/acme/w.git", "run": "python3 w.py",
              "env": {"QUEUE": "jobs"}}  # fmt: skip
    after = doc(2, security_mode="open", services=[web, worker], _commit=B)

    d = diff_documents(before, after)
    assert d["from"] == 1 and d["to"] == 2 and not d["empty"]
    assert {"field": "security_mode", "kind": "changed", "before": "tunnel-only",
            "after": "open"} in d["stack"]  # fmt: skip
    assert [s["name"] for s in d["services"]["added"]] == ["worker"]
    assert d["services"]["added"][0]["env"] == {"QUEUE": "jobs"}
    assert d["services"]["removed"] == ["api"]
    (changed,) = d["services"]["changed"]
    fields = {c["field"]: c for c in changed["changes"]}
    assert fields["env.GREETING"] == {"field": "env.GREETING", "kind": "changed",
                                      "before": "hi", "after": "hello"}  # fmt: skip
    assert fields["env.NEW"]["kind"] == "added" and fields["env.MODE"]["kind"] == "removed"
    assert fields["run"]["after"] == "gunicorn app:app"
    assert fields["port"]["before"] == 19001 and fields["port"]["after"] == 19011
    assert fields["path"]["after"] == "/shop" and fields["health.path"]["after"] == "/ready"
    assert fields["drain_timeout_s"]["after"] == 120  # absent before: the default
    assert changed["commits"] == {
        "from": A, "to": B, "range": f"{A}..{B}",
        "compare_url": f"https://github.com/acme/web/compare/{A}...{B}",
    }  # fmt: skip

    text = render_text(d, "stack shop")
    for line in (
        "stack shop: v1 -> v2",
        "~ security_mode: 'tunnel-only' -> 'open'",
        "+ service worker",
        "- service api",
        "~ service web",
        "~ env.GREETING: 'hi' -> 'hello'",
        "- env.MODE (was 'a')",
        f"~ commit {A[:12]} -> {B[:12]} (range {A}..{B})",
    ):
        assert line in text, (line, text)


def test_secret_values_never_shown() -> None:
    # a structured env entry (how a secret reference looks) and any "secret" key: keys only
    before = {"version": 1, "name": "s", "services": [
        {"name": "web", "commit": A, "env": {"TOKEN": {"secret": "old-value"}},
         "secret_env": {"DB_PASSWORD": "hunter2"}}]}  # fmt: skip
    after = copy.deepcopy(before)
    after["version"] = 2
    after["services"][0]["env"]["TOKEN"] = {"secret": "new-value"}
    after["services"][0]["secret_env"]["DB_PASSWORD"] = "correct horse"
    after["services"][0]["secret_env"]["API_KEY"] = "k"
    d = diff_documents(before, after)
    text = repr(d) + render_text(d)
    for value in ("old-value", "new-value", "hunter2", "correct horse", "'k'"):
        assert value not in text
    fields = {c["field"]: c for c in d["services"]["changed"][0]["changes"]}
    assert fields["env.TOKEN"] == {"field": "env.TOKEN", "kind": "changed",
                                   "before": HIDDEN, "after": HIDDEN}  # fmt: skip
    assert fields["secret_env.DB_PASSWORD"]["kind"] == "changed"
    assert fields["secret_env.API_KEY"]["kind"] == "added"
    assert shown_value("env.PLAIN", "x") == "x"


def test_new_stack_diff_lists_everything_added() -> None:
    d = diff_documents(None, doc(1))
    assert [s["name"] for s in d["services"]["added"]] == ["web", "api"]
    assert "+ service web" in render_text(d)


def test_compare_url_only_for_known_forges() -> None:
    assert (
        compare_url("https://gitlab.com/a/b", A, B) == f"https://gitlab.com/a/b/-/compare/{A}...{B}"
    )
    assert compare_url("file:///srv/repo", A, B) is None
    assert compare_url("git@github.com:a/b.git", A, B) is None


def test_secret_entries_compared_and_shown_by_their_mask() -> None:
    def doc_with(version: int, token: dict[str, Any]) -> dict[str, Any]:
        return {"version": version, "name": "s", "services": [
            {"name": "web", "commit": A, "env": {"TOKEN": token, "PLAIN": "p"}}]}  # fmt: skip

    stored = {"secret": True, "digest": "d" * 64, "sealed": "v1.key.nonce-one"}
    resealed = {"secret": True, "digest": "d" * 64, "sealed": "v1.key.nonce-two"}
    changed = {"secret": True, "digest": "e" * 64, "sealed": "v1.key.nonce-three"}
    # sealed again with a fresh nonce, same value: no change
    assert diff_documents(doc_with(1, stored), doc_with(2, resealed))["empty"] is True
    d = diff_documents(doc_with(1, stored), doc_with(2, changed))
    (change,) = d["services"]["changed"][0]["changes"]
    assert change == {"field": "env.TOKEN", "kind": "changed",
                      "before": {"secret": True, "set": True, "fingerprint": "d" * 16},
                      "after": {"secret": True, "set": True, "fingerprint": "e" * 16}}  # fmt: skip
    text = render_text(d)
    assert f"~ env.TOKEN: (secret {'d' * 16}) -> (secret {'e' * 16})" in text
    assert "nonce" not in repr(d) + text
    new = diff_documents(None, doc_with(1, {"secret": True, "value": "plain-text-value"}))
    assert "plain-text-value" not in repr(new) + render_text(new)
