"""Every committed save or delete reaches this process's agent directory and the agents
holding a long poll at once.

The control plane runs in-process (Quart's test client on a real SQLite database and a real
git repository) with a long-poll tick of an hour, so nothing but the save itself can tell
the directory: what it holds after each call is what `controlplane.stacks` published.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

from controlplane.app import create_app
from controlplane.context import AppContext
from controlplane.settings import ServerSettings
from tests.controlplane.harness import stack_body
from tests.support.controlplane import create_admin_token, migrate
from tests.support.gitrepo import commit_files, init_repo


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_api_saves_and_deletes_update_the_directory_at_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cp.sqlite3'}"
    migrate(db_url)
    token = create_admin_token(db_url, "publish-test")
    repo = init_repo(tmp_path / "repo")
    commit_files(repo, {"app.py": "print('v1')\n"})
    settings = ServerSettings(
        db_url=db_url, longpoll_interval_s=3600.0, file_repo_roots=(str(tmp_path),)
    )

    async def run() -> None:
        app = create_app(settings)
        ctx: AppContext = app.extensions["berth"]
        auth = {"Authorization": f"Bearer {token}"}
        async with app.test_app() as test_app:
            client = test_app.test_client()
            created = await client.post(
                "/api/v1/stacks", json=stack_body("pub", repo), headers=auth
            )
            assert created.status_code == 201, await created.get_data(as_text=True)
            stack = await created.get_json()
            assert ctx.directory.hashes.get(stack["id"]) == stack["hash"]

            # an enrolled agent holds a long poll on version 1; the save must wake it
            tokens = f"/api/v1/stacks/{stack['id']}/install-tokens"
            install = await (await client.post(tokens, json={}, headers=auth)).get_json()
            reg = await client.post(
                "/api/v1/agent/register", json={"token": install["token"], "hostname": "h1"}
            )
            agent = {"Authorization": f"Bearer {(await reg.get_json())['credential']}",
                     "If-None-Match": f'"{stack["hash"]}"'}  # fmt: skip
            poll = asyncio.create_task(
                client.get("/api/v1/agent/desired-state?wait=20", headers=agent)
            )
            await _until(lambda: ctx.watcher.waiting == 1)
            edited = stack_body("pub", repo, poll_interval_s=7)
            put = await client.put(f"/api/v1/stacks/{stack['id']}", json=edited, headers=auth)
            v2 = await put.get_json()
            assert v2["changed"] and ctx.directory.hashes[stack["id"]] == v2["hash"]
            woken = await asyncio.wait_for(poll, 15)  # the poll's own wait is 20 s
            assert woken.status_code == 200 and woken.headers["ETag"] == f'"{v2["hash"]}"'

            back = await client.post(
                f"/api/v1/stacks/{stack['id']}/rollback", json={"version": 1}, headers=auth
            )
            v3 = await back.get_json()
            assert v3["version"] == 3 and ctx.directory.hashes[stack["id"]] == v3["hash"]

            commit_files(repo, {"app.py": "print('v2')\n"})
            moved = await client.post(f"/api/v1/stacks/{stack['id']}/refresh", headers=auth)
            v4 = await moved.get_json()
            assert v4["changed"] and ctx.directory.hashes[stack["id"]] == v4["hash"]

            gone = await client.delete(f"/api/v1/stacks/{stack['id']}", headers=auth)
            assert gone.status_code == 204
            assert stack["id"] not in ctx.directory.hashes

    asyncio.run(run())
