"""The agent's own /metrics (`--metrics-bind`, issue 19): the real reconciler serves it on
loopback, its builds appear there with their wall time and peak memory, and a
non-loopback address is refused at start. Parsed with prometheus_client's parser."""

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests

from agent.reconciler.reconciler import Reconciler
from agent.reconciler.worker import Timeouts
from agent.schema import parse_stack
from agent.schema.document import DesiredState, build_document
from agent.settings import AgentSettings
from tests.support.berth import BERTH
from tests.support.dirs import world_dir
from tests.support.gitrepo import APP, commit_files, init_repo
from tests.support.ports import free_port
from tests.support.prom import Samples, parse_samples

MB = 1_000_000
HOG = "python3 -c \"b = b'x' * 90_000_000\""  # 90 MB resident for a moment


def document(repo: Path, commit: str, version: int, build: str) -> DesiredState:
    service = {"name": "app", "repo": f"file://{repo}", "ref": "main", "build": build,
               "run": "python3 app.py", "path": "/",
               "health": {"path": "/healthz", "interval_s": 0.2, "timeout_s": 1, "retries": 2}}  # fmt: skip
    spec = parse_stack({"name": "t", "services": [service]})
    return build_document("stack", version, spec, {"app": commit})


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def listening(url: str) -> bool:
    """Its port accepts connections (the kernel completes them: no need for the loop
    this is called from to answer)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def scrape(url: str) -> Samples:
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return parse_samples(resp.text)


def test_builds_show_on_the_agents_own_metrics(workspace: Path) -> None:
    repo = init_repo(workspace / "repo")
    c1 = commit_files(repo, {"app.py": APP, "version.txt": "v1"})
    c2 = commit_files(repo, {"version.txt": "v2"})
    url = f"http://127.0.0.1:{free_port()}/metrics"

    async def life() -> tuple[Samples, Samples]:
        settings = AgentSettings(
            state_dir=workspace / "state", run_dir=workspace / "run",
            file_repo_roots=(str(workspace),),
            metrics_bind=url.removeprefix("http://").removesuffix("/metrics"),
        )  # fmt: skip
        timeouts = Timeouts(deploy_s=8, build_s=20, drain_s=2, stop_grace_s=3)
        r = Reconciler(settings, timeouts=timeouts)
        task = asyncio.create_task(r.run())
        try:
            await until(lambda: listening(url))  # the reconciler is up, its /metrics too
            r.accept_document(document(repo, c1, 1, f"{HOG} && sleep 0.3"))
            await until(lambda: r.stack_status()[0] == "applied")
            w = r.workers["app"]
            os.killpg(w.current.rec.pid, signal.SIGKILL)  # a crash: restarted
            await until(lambda: w.restarts == 1 and w.state == "running")
            ok = await asyncio.to_thread(scrape, url)
            r.accept_document(document(repo, c2, 2, f"{HOG}; exit 4"))
            await until(lambda: r.stack_status()[0] == "degraded")
            return ok, await asyncio.to_thread(scrape, url)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.publisher.close()

    ok, failed = asyncio.run(life())
    app = (("service", "app"),)
    assert ok[("berth_service_builds_total", (("result", "ok"), ("service", "app")))] == 1
    assert ok[("berth_service_last_build_seconds", app)] >= 0.3
    assert ok[("berth_service_last_build_peak_memory_bytes", app)] >= 90 * MB
    assert ok[("berth_service_memory_bytes", app)] > 0  # the running service, from /proc
    assert ok[("berth_service_restarts_total", app)] == 1
    assert ok[("berth_server_memory_total_bytes", ())] > 0
    assert failed[("berth_service_builds_total", (("result", "failed"), ("service", "app")))] == 1
    assert failed[("berth_service_builds_total", (("result", "ok"), ("service", "app")))] == 1


def test_the_reconciler_command_serves_metrics_on_loopback_only() -> None:
    with world_dir("berth-agent-metrics-") as d:
        base = [*BERTH, "agent", "reconciler", "--state-dir", str(d / "state"),
                "--run-dir", str(d / "run")]  # fmt: skip
        refused = subprocess.run(
            [*base, "--metrics-bind", "0.0.0.0:9101"], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode != 0
        assert "--metrics-bind must be a loopback address" in refused.stderr
        port = free_port()
        proc = subprocess.Popen(
            [*base, "--metrics-bind", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            got: Samples = {}
            while time.monotonic() < deadline and not got:
                try:
                    got = scrape(f"http://127.0.0.1:{port}/metrics")
                except requests.ConnectionError:
                    time.sleep(0.1)
            assert got[("berth_server_memory_total_bytes", ())] > 0
            assert got[("berth_server_cpu_seconds_total", (("mode", "user"),))] > 0
            other = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert other.status_code == 404
        finally:
            proc.terminate()
            proc.wait(30)
