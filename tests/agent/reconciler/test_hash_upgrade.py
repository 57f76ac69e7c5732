"""Config hashes moved to the one canonical JSON encoding (issue 17). Process records
written by an older agent carry the old encoding's hash; an upgraded reconciler must adopt
those processes, not redeploy them (a reconciler restart never restarts a service)."""

import asyncio
import dataclasses
import hashlib
import json

from agent.reconciler.policy import carry_config_hash, config_hash, service_urls
from agent.reconciler.store import ProcessRecord
from agent.schema.document import parse_document
from tests.agent.reconciler.test_reconciler_processes import document, get, make, until
from tests.support.gitrepo import APP, commit_files, init_repo


def old_agent_hash(doc: dict) -> str:
    """What agents before the canonical encoding recorded (json.dumps' defaults)."""
    desired = parse_document(doc)
    svc = desired.services[0]
    body = {"spec": svc.spec.to_dict(), "commit": svc.commit, "urls": service_urls(desired)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def test_carry_config_hash_is_pure_and_narrow() -> None:
    doc = document("/r", "a" * 40, 1)
    desired = parse_document(doc)
    svc = desired.services[0]
    new = config_hash(svc, service_urls(desired))
    old = old_agent_hash(doc)
    assert old != new  # the encodings differ, so the bridge is needed
    rec = ProcessRecord("app", 1, 2, 3000, svc.commit, old, "/rel", 0.0)
    assert carry_config_hash(rec, desired) == dataclasses.replace(rec, config_hash=new)
    other = dataclasses.replace(rec, config_hash="0123456789abcdef")  # another config
    assert carry_config_hash(other, desired) is other
    assert carry_config_hash(rec, None) is rec  # no cached desired state: nothing to compare
    assert carry_config_hash(dataclasses.replace(rec, service="gone"), desired).config_hash == old


def test_an_upgraded_reconciler_adopts_a_process_recorded_under_the_old_hash(workspace):  # noqa: F811
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})
    doc = document(repo, c1, 1)

    async def old_agent_life() -> ProcessRecord:
        r = make(workspace)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.1)
        r.accept_document(doc)
        await until(lambda: r.stack_status()[0] == "applied")
        rec = r.workers["app"].current.rec
        # as an agent before the canonical encoding would have recorded it
        r.store.save_process(dataclasses.replace(rec, config_hash=old_agent_hash(doc)))
        task.cancel()  # the reconciler dies (an upgrade); the service must not
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()
        return rec

    before = asyncio.run(old_agent_life())

    async def upgraded_life() -> None:
        r = make(workspace)
        task = asyncio.create_task(r.run())
        await until(lambda: "app" in r.workers and r.workers["app"].desired is not None)
        w = r.workers["app"]
        # the adopted process is known to run the target: no deploy follows
        assert w.current.desired is w.desired
        assert (w.current.rec.pid, w.current.rec.port) == (before.pid, before.port)
        assert w.restarts == 0 and w.current.rec.config_hash == before.config_hash
        assert [p.config_hash for p in r.store.processes()] == [before.config_hash]
        assert get(before.port).startswith("v1")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()

    asyncio.run(upgraded_life())


def test_config_hash_and_build_key_use_the_canonical_encoding() -> None:
    from agent.reconciler.policy import build_key

    desired = parse_document(document("/r", "a" * 40, 1))
    svc = desired.services[0]

    def canonical(body: dict) -> str:  # spelled out here: sorted, "," ":", UTF-8 unescaped
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    urls = service_urls(desired)
    body = {"spec": svc.spec.to_dict(), "commit": svc.commit, "urls": urls}
    assert config_hash(svc, urls) == canonical(body)
    assert build_key(svc) == canonical({"commit": svc.commit, "build": "true", "env": {}})
