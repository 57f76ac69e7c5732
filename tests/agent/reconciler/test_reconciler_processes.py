"""The reconciler with real git, real builds and real service processes (no control plane:
documents are handed to it directly, as the poll loop would)."""

import asyncio
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from agent.reconciler.gitsync import GitLimits
from agent.reconciler.reconciler import Reconciler
from agent.reconciler.shutdown import stop_recorded_services
from agent.reconciler.worker import Timeouts
from agent.schema import parse_stack
from agent.schema.document import build_document
from agent.settings import AgentSettings
from tests.agent.reconciler.blackhole import Blackhole
from tests.support.gitrepo import APP, commit_files, init_repo
from tests.support.ports import free_port


def get(port, path="/"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return r.read().decode()


def document(repo, commit, version, *, build="true", port=None, url=None):
    spec = parse_stack(
        {
            "name": "t",
            "services": [
                {
                    "name": "app",
                    "repo": url or f"file://{repo}",
                    "ref": "main",
                    "build": build,
                    "run": "python3 app.py",
                    "path": "/",
                    "port": port,
                    "health": {"path": "/healthz", "interval_s": 0.2, "timeout_s": 1, "retries": 2},
                }
            ],
        }
    )
    return build_document("stack", version, spec, {"app": commit})


async def until(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:  # not listening yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def make(workspace):
    settings = AgentSettings(
        state_dir=workspace / "state", run_dir=workspace / "run", file_repo_roots=(str(workspace),)
    )
    return Reconciler(
        settings, timeouts=Timeouts(deploy_s=8, build_s=20, drain_s=2, stop_grace_s=3)
    )


def test_deploy_cutover_failed_build_crash_and_adoption(workspace):
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})

    async def first_life():
        r = make(workspace)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.1)
        r.accept_document(document(repo, c1, 1))
        w = None
        await until(lambda: r.stack_status()[0] == "applied")
        w = r.workers["app"]
        port1, pid1 = w.current.rec.port, w.current.rec.pid
        assert get(port1).startswith("v1")
        if os.geteuid() == 0:  # services never run as root
            assert os.stat(f"/proc/{pid1}").st_uid != 0

        # a new commit on an agent-assigned port: new process beside the old, then swap
        c2 = commit_files(repo, {"version.txt": "v2"})
        r.accept_document(document(repo, c2, 2))
        await until(lambda: w.current.rec.commit == c2 and r.stack_status()[0] == "applied")
        assert w.current.rec.port != port1
        assert get(w.current.rec.port).startswith("v2")
        await until(lambda: not os.path.exists(f"/proc/{pid1}"))

        # a failing build leaves v2 serving and the stack degraded with the reason
        c3 = commit_files(repo, {"version.txt": "v3"})
        r.accept_document(document(repo, c3, 3, build="echo compiling; exit 3"))
        await until(lambda: r.stack_status()[0] == "degraded")
        assert "build exited with code 3" in r.stack_status()[1][0]
        assert w.current.rec.commit == c2 and get(w.current.rec.port).startswith("v2")
        events = [e["type"] for e in r.store.pending_events(1000)]
        assert "build" in events
        build_events = [
            e
            for e in r.store.pending_events(1000)
            if e["type"] == "build" and "exited" in e["message"]
        ]
        assert "compiling" in build_events[-1]["log_tail"]

        # back to a good document; then a crash is restarted
        r.accept_document(document(repo, c2, 4))
        await until(lambda: r.stack_status()[0] == "applied")
        pid2 = w.current.rec.pid
        os.killpg(pid2, signal.SIGKILL)
        await until(lambda: w.restarts == 1 and w.state == "running" and w.current.rec.pid != pid2)
        await until(lambda: get(w.current.rec.port).startswith("v2"), timeout=10)
        heartbeat = r.heartbeat()
        assert heartbeat.services[0].restarts == 1
        assert heartbeat.services[0].commit == c2
        snapshot = (w.current.rec.pid, w.current.rec.port)
        task.cancel()  # the reconciler dies; the service must not
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()
        return snapshot

    pid, port = asyncio.run(first_life())
    assert get(port).startswith("v2")

    async def second_life():
        r = make(workspace)
        task = asyncio.create_task(r.run())  # re-adopts from SQLite + cached desired state
        await until(lambda: "app" in r.workers and r.stack_status()[0] == "applied")
        w = r.workers["app"]
        assert (w.current.rec.pid, w.current.rec.port) == (pid, port)  # not restarted
        assert w.restarts == 0
        r.accept_document({"hash": "bogus"})  # a bad document is refused; nothing changes
        await asyncio.sleep(0.3)
        assert w.current.rec.pid == pid
        assert any("refused" in e["message"] for e in r.store.pending_events(1000))
        # remove the service: it is stopped
        spec = parse_stack({"name": "t", "services": []})
        r.accept_document(build_document("stack", 9, spec, {}))
        await until(
            lambda: (
                not os.path.exists(f"/proc/{pid}")
                or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
            )
        )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()

    asyncio.run(second_life())


def test_fixed_port_redeploy_and_unhealthy_release_reverts(workspace):
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})
    from tests.support.ports import free_port

    port = free_port()

    async def scenario():
        r = make(workspace)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.1)
        r.accept_document(document(repo, c1, 1, port=port))
        await until(lambda: r.stack_status()[0] == "applied")
        assert get(port).startswith("v1")
        w = r.workers["app"]
        # a release that never becomes healthy: the old one is brought back on the same port
        c2 = commit_files(repo, {"version.txt": "v2", "unhealthy": "x"})
        r.accept_document(document(repo, c2, 2, port=port))
        await until(lambda: r.stack_status()[0] == "degraded", timeout=30)
        await until(lambda: not w.paused and get(port).startswith("v1"))
        assert w.current.rec.commit == c1 and w.state == "running"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()
        return r.settings

    settings = asyncio.run(scenario())
    assert stop_recorded_services(settings) == 1


def test_a_newer_commit_supersedes_a_running_build(workspace):
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})
    drop = workspace / "drop"
    drop.mkdir()
    drop.chmod(0o777)  # the build runs as the services user
    pid_file = drop / "build.pid"

    async def scenario():
        r = make(workspace)  # build timeout 20 s
        task = asyncio.create_task(r.run())
        r.accept_document(document(repo, c1, 1))
        await until(lambda: r.stack_status()[0] == "applied")
        w = r.workers["app"]
        # c2's build hangs; c3 arrives while it runs
        c2 = commit_files(repo, {"version.txt": "v2"})
        r.accept_document(document(repo, c2, 2, build=f"echo $$ > {pid_file}; exec sleep 60"))
        await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        build_pid = int(pid_file.read_text())
        c3 = commit_files(repo, {"version.txt": "v3"})
        started = time.monotonic()
        r.accept_document(document(repo, c3, 3))
        # c3 serves long before c2's build could have timed out; c1 served meanwhile
        await until(
            lambda: w.current.rec.commit == c3 and r.stack_status()[0] == "applied", timeout=10
        )
        assert time.monotonic() - started < 10
        assert get(w.current.rec.port).startswith("v3")
        await until(
            lambda: (
                not os.path.exists(f"/proc/{build_pid}")
                or Path(f"/proc/{build_pid}/stat").read_text().split()[2] == "Z"
            ),
            timeout=5,
        )
        events = r.store.pending_events(1000)
        cancelled = [e for e in events if "superseded" in e["message"]]
        assert len(cancelled) == 1 and cancelled[0]["commit"] == c2
        assert not any(e.get("commit") == c2 and "failed" in e["message"] for e in events)
        assert w.failed_hash is None
        log_dir = workspace / "state" / "logs" / "app"
        c2_log = next(log_dir.glob(f"build-{c2[:12]}-*.log")).read_text()
        assert "build cancelled: superseded by " + c3[:12] in c2_log
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()

    asyncio.run(scenario())


def test_build_symlinks_touch_nothing_of_roots_and_mirrors_stay_private(workspace):
    """Issues 15.3 and 15.4, as root: a build plants symlinks where the build marker used to
    be and elsewhere in its tree; the reconciler creates and chowns nothing through them
    (also when it reuses the release). Mirrors are the reconciler's alone, and a document
    naming a file:// repo outside the allowed directories is refused by the agent itself."""
    if os.geteuid() != 0:
        pytest.skip("needs root: builds run as another user")
    from agent.reconciler.policy import build_key
    from agent.schema.document import parse_document

    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})
    root_only = workspace / "root-only"
    root_only.mkdir(mode=0o700)
    victim = root_only / "created-by-root"  # must never come to exist
    root_file = workspace / "root-file"
    root_file.write_text("root's")
    root_file.chmod(0o600)
    name_file = workspace / "marker-name"
    build = (
        f'ln -s {victim} "$(cat {name_file})" && ln -s {root_file} link && '
        f"mkdir sub && ln -s {root_only} sub/dirlink"
    )
    doc1 = document(repo, c1, 1, build=build)
    key = build_key(parse_document(doc1).services[0])
    name_file.write_text(f".berth-built-{key}")  # where the marker used to be touched
    name_file.chmod(0o644)
    elsewhere = init_repo(Path(str(workspace) + "-elsewhere"))  # outside the allowed dirs
    try:
        c_other = commit_files(elsewhere, {"app.py": APP, "version.txt": "other"})

        async def scenario():
            r = make(workspace)
            task = asyncio.create_task(r.run())
            await asyncio.sleep(0.1)
            r.accept_document(doc1)
            await until(lambda: r.stack_status()[0] == "applied")
            w = r.workers["app"]
            release = Path(w.current.rec.release_dir)
            # a new config on the same commit reuses (and re-chowns) the built release
            port2 = free_port()
            r.accept_document(document(repo, c1, 2, build=build, port=port2))
            await until(lambda: r.stack_status()[0] == "applied" and w.current.rec.port == port2)
            assert Path(w.current.rec.release_dir) == release
            r.accept_document(document(elsewhere, c_other, 3))
            await until(lambda: r.stack_status()[0] == "degraded")
            reasons = r.stack_status()[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.publisher.close()
            return r.run_as, release, reasons

        run_as, release, reasons = asyncio.run(scenario())
    finally:
        shutil.rmtree(elsewhere.parent / elsewhere.name, ignore_errors=True)
    assert not victim.exists()
    assert root_file.stat().st_uid == 0 and root_only.stat().st_uid == 0
    assert (release / "link").lstat().st_uid == run_as.uid  # the link itself, not its target
    assert (workspace / "state" / "build-markers" / "app" / c1 / key).is_file()
    assert not list(release.glob(".berth-built-*"))[0].exists()  # our symlink, never followed
    git_dir = workspace / "state" / "git"
    assert git_dir.stat().st_mode & 0o077 == 0 and git_dir.stat().st_uid == 0
    assert any("outside the directories allowed" in reason for reason in reasons), reasons


def test_a_silent_git_server_neither_hangs_the_service_nor_holds_back_a_fix(workspace):
    """Issue 15.13: a repo URL whose server accepts and never answers."""
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})

    async def scenario(hole):
        settings = AgentSettings(
            state_dir=workspace / "state", run_dir=workspace / "run",
            file_repo_roots=(str(workspace),),
        )  # fmt: skip
        limits = GitLimits(low_speed_s=1, kill_after_s=600)  # git:// has no low-speed limit
        r = Reconciler(settings, timeouts=Timeouts(deploy_s=8, build_s=20, git=limits))
        task = asyncio.create_task(r.run())
        # over HTTP the low-speed limit ends the clone: failed, not "building" for long
        r.accept_document(document(repo, c1, 1, url=f"http://127.0.0.1:{hole.port}/app.git"))
        await until(lambda: r.stack_status()[0] == "degraded", timeout=15)
        assert "git: clone http://" in r.stack_status()[1][0]
        # git:// stalls until the kill timeout (600 s here); the corrected config
        # supersedes the sync and deploys at once
        r.accept_document(document(repo, c1, 2, url=f"git://127.0.0.1:{hole.port}/app.git"))
        await asyncio.to_thread(hole.wait_accepted, 2)
        assert r.workers["app"].state == "building"
        r.accept_document(document(repo, c1, 3))
        await until(lambda: r.stack_status()[0] == "applied", timeout=15)
        assert get(r.workers["app"].current.rec.port).startswith("v1")
        assert hole.open_connections() == 0  # the superseded git was killed
        cancelled = [e for e in r.store.pending_events(1000) if "superseded" in e["message"]]
        assert [e["message"][:4] for e in cancelled] == ["sync"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.publisher.close()

    with Blackhole() as hole:
        asyncio.run(scenario(hole))
