"""Shared pieces of the reconciler fault tests: a test repository, a stack, a running
control plane + agent, steady client load, and lookups of the agent's processes.

Everything here drives real processes from the outside (the `berth` commands, the user
API, the external proxy); nothing reaches into the reconciler's objects. The agent's own
SQLite is read (never written) only to learn which events it has queued.
"""

import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.berth import (
    Api,
    ControlPlane,
    agent_argv,
    start_agent,
    start_controlplane,
    stop,
    text,
    wait_until,
)
from tests.support.gitrepo import APP, commit_files, init_repo
from tests.support.ports import free_port

# Health probes often, so that deploys and restarts are quick in tests.
FAST_HEALTH = {"path": "/healthz", "interval_s": 0.5, "timeout_s": 1, "retries": 2}


def make_repo(path: Path, version: str = "v1", extra: dict[str, str] | None = None) -> str:
    """A git repository with `APP` (answers `<version> <path>`); returns its file:// URL."""
    init_repo(path)
    commit_files(path, {"app.py": APP, "version.txt": version, **(extra or {})}, version)
    return f"file://{path}"


def serves(url: str, version: str) -> bool:
    """Whether `url` answers with the app's body for `version`."""
    try:
        return text(url).startswith(version + " ")
    except requests.RequestException:
        return False


def new_version(repo: Path, version: str) -> str:
    return commit_files(repo, {"version.txt": version}, version)


def service(name: str, repo_url: str, path: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "repo": repo_url,
        "ref": "main",
        "build": "true",
        "run": "exec python3 app.py",
        "path": path,
        "health": FAST_HEALTH,
    }
    body.update(overrides)
    return body


def stack_body(name: str, proxy_port: int, services: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "security_mode": "open",
        "poll_interval_s": 1,
        "proxy": {"port": proxy_port},
        "services": services,
    }


@dataclass
class Agent:
    name: str  # xprocess name
    state_dir: Path
    proxy_port: int

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"


@dataclass
class Site:
    """A control plane with one stack; agents are started with `add_agent`."""

    xprocess: Any
    workdir: Path
    cp: ControlPlane
    api: Api
    stack_id: str
    proxy_port: int
    agents: list[Agent] = field(default_factory=list)

    def add_agent(
        self, name: str, *, proxy_port: int | None = None, cp_url: str | None = None
    ) -> Agent:
        """A `berth agent run-all` with its own state, bus, proxies and DNS binds.

        The internal proxy gets a free loopback port (not :80): these stacks make no
        service-to-service calls, and other tests on this machine may hold :80.
        """
        token = self.api("POST", f"/stacks/{self.stack_id}/install-tokens", expect=201)["token"]
        port = proxy_port or self.proxy_port
        agent = Agent(name, self.workdir / name, port)
        start_agent(self.xprocess, name, agent_argv_for(agent, cp_url or self.cp.url, token))
        self.agents.append(agent)
        return agent

    def restart_agent(self, agent: Agent, name: str, cp_url: str) -> Agent:
        """run-all again on the same state directory (the credential is cached there)."""
        again = Agent(name, agent.state_dir, agent.proxy_port)
        # the token is ignored: the agent is registered already
        start_agent(self.xprocess, name, agent_argv_for(again, cp_url, "used-token"))
        self.agents.append(again)
        return again

    def instances(self) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/stacks/{self.stack_id}/instances")["instances"])

    def instance(self, index: int = 0) -> dict[str, Any]:
        return self.instances()[index]

    def all_applied(self, version: int, count: int = 1) -> bool:
        items = self.instances()
        return len(items) == count and all(
            i["applied_version"] == version and i["state"] == "applied" for i in items
        )

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        query = {"limit": "1000", **({"type": type_} if type_ else {})}
        page = self.api("GET", f"/stacks/{self.stack_id}/events", params=query)
        return list(reversed(page["events"]))  # oldest first

    def close(self) -> None:
        for agent in reversed(self.agents):
            stop(self.xprocess, agent.name)
        stop(self.xprocess, self.cp.name)


def open_site(xprocess: Any, workdir: Path, tag: str, services: list[dict[str, Any]]) -> Site:
    cp = start_controlplane(xprocess, f"cp-{tag}", workdir, free_port())
    api = Api(cp)
    proxy_port = free_port()
    stack = api("POST", "/stacks", expect=201, json=stack_body(tag, proxy_port, services))
    return Site(xprocess, workdir, cp, api, stack["id"], proxy_port)


def agent_argv_for(agent: Agent, cp_url: str, token: str) -> list[str]:
    """run-all for `agent`; its internal proxy and DNS get free loopback ports."""
    return agent_argv(
        agent.state_dir,
        cp_url,
        token,
        proxy_port=agent.proxy_port,
        dns_port=free_port(),
        internal_bind=f"127.0.0.1:{free_port()}",
    )


def services_by_name(instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in instance["services"]}


# --- processes -----------------------------------------------------------------------


def _ppid_and_cmdline(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return ppid, cmdline.replace(b"\0", b" ").decode(errors="replace")


def child_pid(parent: int, needle: str) -> int | None:
    """The child of `parent` whose command line contains `needle` (e.g. 'agent reconciler')."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _ppid_and_cmdline(int(entry.name))
        if found and found[0] == parent and needle in found[1]:
            return int(entry.name)
    return None


def runall_pid(xprocess: Any, agent: Agent) -> int:
    return int(xprocess.getinfo(agent.name).pid)


def reconciler_pid(xprocess: Any, agent: Agent) -> int:
    parent = runall_pid(xprocess, agent)
    pid = wait_until(
        "the reconciler child of run-all", lambda: child_pid(parent, "agent reconciler")
    )
    return int(pid)


def start_time(pid: int) -> int | None:
    """/proc start time in ticks: the same pid with the same start time is the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def outbox_ids(agent: Agent) -> list[str]:
    """Event ids the agent has stored but the control plane has not acknowledged yet."""
    db = sqlite3.connect(f"file:{agent.state_dir / 'agent.sqlite3'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT id FROM outbox ORDER BY seq")]
    finally:
        db.close()


# --- load ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int
    failed: int
    failures: list[str]
    bodies: Counter[str]


class Load:
    """Client threads requesting `urls` over keep-alive connections until stopped.

    Every non-200 answer or transport error counts as a failed request, with its reason.
    """

    def __init__(self, urls: list[str], threads_per_url: int = 2) -> None:
        self.urls = urls
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ok = 0
        self._failures: list[str] = []
        self._bodies: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._loop, args=(url,), name=f"load-{i}", daemon=True)
            for url in urls
            for i in range(threads_per_url)
        ]

    def _loop(self, url: str) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                resp = session.get(url, timeout=30)
                good = resp.status_code == 200
                outcome = resp.text.split(" ", 1)[0] if good else f"{url}: HTTP {resp.status_code}"
            except requests.RequestException as exc:
                good, outcome = False, f"{url}: {exc.__class__.__name__}: {exc}"
            with self._lock:
                if good:
                    self._ok += 1
                    self._bodies[outcome] += 1
                else:
                    self._failures.append(f"{time.strftime('%H:%M:%S')} {outcome}")
            if not good:
                time.sleep(0.05)  # do not spin on a refused connection
        session.close()

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)
        return self.result()

    def result(self) -> LoadResult:
        with self._lock:
            return LoadResult(
                self._ok, len(self._failures), list(self._failures), Counter(self._bodies)
            )
