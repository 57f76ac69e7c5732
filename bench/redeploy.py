"""Benchmark: zero-downtime redeploys under constant load (issue 4, "Deploys without a gap").

Starts a real control plane and a real agent (`berth agent run-all`, as root: services
run as an unprivileged user), creates a stack of two services from one git repository —
`auto` (the agent assigns its port: new process beside the old, route swap, drain) and
`fixed` (a fixed port: the proxy holds requests while the old process stops and the new
one starts) — each with a health check and a trivial build. Client threads keep
requesting both through the external proxy over keep-alive connections — short requests
and long ones (`/slow?1.5`: answered after 1.5 s, so some are always in flight at the
swap; the app does not drain on SIGTERM) — while a new commit is deployed N times
(commit, then `POST /stacks/{id}/refresh`).

Printed, per service kind side by side:
  * requests and failed requests (any non-200, transport error or incomplete body;
    target 0), long requests among them;
  * the drain of each replaced release (from the agent's `drained in X s` event: until
    the proxies reported nothing in flight to it);
  * per deploy, the time from the refresh call returning (the desired state changed) to
    the first response carrying the new commit's version, minus that deploy's build time
    (from the agent's `build ... succeeded in X s` event) — p50 / p95 / max (target p95 < 1 s).

    sudo .venv/bin/python bench/redeploy.py [--deploys 10] [--clients 2] [--long-clients 2]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controlplane.demo import private_hosts_prefix  # noqa: E402
from tests.support.controlplane import create_admin_token, migrate  # noqa: E402
from tests.support.gitrepo import SLOW_APP, commit_files, init_repo  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.procs import terminate  # noqa: E402

BERTH = [sys.executable, "-m", "agent.cli"]
KINDS = ("auto", "fixed")  # service names: agent-assigned port, fixed port
HEALTH = {"path": "/healthz", "interval_s": 0.5, "timeout_s": 1, "retries": 2}
BUILD = "python3 -c \"open('built.txt', 'w').write('ok')\""
BUILD_DONE = re.compile(r"build succeeded in ([0-9.]+) s")
DRAINED = re.compile(r"drained in ([0-9.]+) s|timed out after ([0-9.]+) s")
LONG_PATH = "slow?1.5"


@dataclass
class Seen:
    """What the load threads observed, shared under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    long_ok: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    first: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, version) → t

    def record(self, kind: str, version: str | None, error: str | None, long: bool = False) -> None:
        now = time.time()
        with self.lock:
            if error is not None:
                self.failed[kind].append(f"{time.strftime('%H:%M:%S')} {error}")
                return
            self.ok[kind] += 1
            self.long_ok[kind] += long
            if version is not None and not long:
                self.first.setdefault((kind, version), now)


def load_loop(url: str, kind: str, seen: Seen, stop: threading.Event) -> None:
    session = requests.Session()  # keep-alive through the proxy
    path = "/" + url.split("/", 3)[3]
    long = LONG_PATH in url
    while not stop.is_set():
        try:
            resp = session.get(url, timeout=30)
        except requests.RequestException as exc:
            seen.record(kind, None, f"{exc.__class__.__name__}: {exc}")
            time.sleep(0.05)
            continue
        version, _, echoed = resp.text.partition(" ")
        if resp.status_code != 200:
            seen.record(kind, None, f"HTTP {resp.status_code}: {resp.text[:80]!r}")
            continue
        if echoed != path:  # the app answers "<version> <path>": anything else is cut short
            seen.record(kind, None, f"incomplete body {resp.text[:80]!r}")
            continue
        seen.record(kind, version, None, long)


class Bench:
    def __init__(self, work: Path, clients: int) -> None:
        self.work = work
        self.clients = clients
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.cp_port, self.proxy_port, self.fixed_port = free_port(), free_port(), free_port()
        self.cp_url = f"http://127.0.0.1:{self.cp_port}"
        self.repo = init_repo(work / "repo")
        self.http = requests.Session()

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, f"{self.cp_url}/api/v1{path}", timeout=60, **kw)
        if resp.status_code >= 400:
            raise SystemExit(f"{method} {path}: HTTP {resp.status_code}: {resp.text}")
        return resp.json() if resp.content else None

    def spawn(self, argv: list[str], log: str) -> None:
        with open(self.work / log, "wb") as out:  # the child keeps its own copy of the fd
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        self.names.append(log.removesuffix(".log"))

    def wait(self, what: str, check: Any, timeout_s: float = 120) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, p in zip(self.names, self.procs, strict=True):
                if p.poll() is not None:
                    raise SystemExit(f"{what}: the {name} exited; see {self.work}/{name}.log")
            try:
                if result := check():
                    return result
            except (requests.RequestException, KeyError, IndexError):
                pass
            time.sleep(0.02)
        raise SystemExit(f"timed out waiting for {what}; logs in {self.work}")

    def start(self) -> str:
        commit_files(self.repo, {"app.py": SLOW_APP, "version.txt": "v1"}, "v1")
        db = f"sqlite:///{self.work / 'cp.sqlite3'}"
        migrate(db)
        self.http.headers["Authorization"] = f"Bearer {create_admin_token(db, 'bench')}"
        self.spawn(
            [
                *BERTH,
                "controlplane",
                "serve",
                "--db",
                db,
                "--bind",
                f"127.0.0.1:{self.cp_port}",
                "--allow-file-repos",  # the benchmark's repository is a local one
                str(self.work),
            ],
            "controlplane.log",
        )
        self.wait("the control plane", lambda: self.http.get(self.cp_url + "/healthz").ok)
        common = {"repo": f"file://{self.repo}", "ref": "main", "build": BUILD, "health": HEALTH}
        run = "exec python3 app.py"
        stack = self.api(
            "POST",
            "/stacks",
            json={
                "name": "redeploy",
                "security_mode": "open",
                "poll_interval_s": 1,
                "proxy": {"port": self.proxy_port},
                "services": [
                    {"name": "auto", "path": "/auto", "run": run, **common},
                    {
                        "name": "fixed",
                        "path": "/fixed",
                        "run": run,
                        "port": self.fixed_port,
                        **common,
                    },
                ],
            },
        )
        token = self.api("POST", f"/stacks/{stack['id']}/install-tokens")["token"]
        state = self.work / "agent"
        state.mkdir()
        token_file = self.work / "install-token"  # never on a command line
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        argv = [
            *BERTH,
            "agent",
            "run-all",
            "--control-plane",
            self.cp_url,
            "--token-file",
            str(token_file),
            "--state-dir",
            str(state),
            "--proxy-bind",
            f"127.0.0.1:{self.proxy_port}",
            "--internal-bind",
            f"127.0.0.1:{free_port()}",  # not :80: these services call no other service
            "--dns-bind",
            f"127.0.0.1:{free_port()}",
            "--dns-wiring",
            "hosts",
            "--stop-services-on-exit",
            "--allow-file-repos",
            str(self.work),
        ]
        self.spawn([*private_hosts_prefix(state), *argv], "agent.log")
        self.wait("the stack to be applied", lambda: self.applied(stack["id"], 1), 180)
        return str(stack["id"])

    def applied(self, stack_id: str, version: int) -> bool:
        items = self.api("GET", f"/stacks/{stack_id}/instances")["instances"]
        return (
            bool(items)
            and items[0]["applied_version"] == version
            and items[0]["state"] == "applied"
        )

    def phases(self, stack_id: str, kind: str, commit: str) -> dict[str, float] | None:
        """Wall-clock times of one deploy from the agent's events, or None until all arrived.

        deploy (picked up) → build started → build succeeded → serving (cut over).
        """
        page = self.api(
            "GET",
            f"/stacks/{stack_id}/events",
            params={"service": kind, "limit": "200"},
        )
        times: dict[str, float] = {}
        short = commit[:12]
        for e in reversed(page["events"]):  # oldest first
            msg, at = e["message"], _epoch(e["at"])
            if e["type"] == "deploy" and msg.startswith(f"deploying {short}"):
                times = {"deploy": at}
            elif "deploy" not in times:
                continue
            elif e["type"] == "deploy" and (m := DRAINED.search(msg)):
                times["drain_s"] = float(m.group(1) or m.group(2))
            elif e["type"] == "build" and msg.startswith("build started"):
                times["build_start"] = at
            elif e["type"] == "build" and BUILD_DONE.search(msg) and "build_start" in times:
                times["build_end"] = at
            elif e["type"] == "run" and msg.startswith(f"serving {short}"):
                times["serving"] = at
        if {"deploy", "serving"} <= times.keys():
            times.setdefault("build_start", times["deploy"])
            times.setdefault("build_end", times["build_start"])  # no build needed
            return times
        return None

    def stop(self) -> None:
        for p in reversed(self.procs):  # the agent first: it stops the services it started
            terminate(p, 40)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.3f} / {p95:.3f} / {ordered[-1]:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2, help="load threads per service")
    parser.add_argument(
        "--long-clients", type=int, default=2, help=f"threads per service requesting {LONG_PATH}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit(
            "run as root: services run as an unprivileged user, the agent in a mount namespace"
        )
    work = Path(tempfile.mkdtemp(prefix="berth-redeploy-", dir="/tmp"))
    work.chmod(0o755)  # services (nobody) must reach their releases
    bench = Bench(work, args.clients)
    seen = Seen()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    # per kind: one value per deploy for each measure
    measures: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in KINDS}
    try:
        stack_id = bench.start()
        proxy = f"http://127.0.0.1:{bench.proxy_port}"
        for kind in KINDS:
            paths = ["x"] * args.clients + [LONG_PATH] * args.long_clients
            for i, path in enumerate(paths):
                url = f"{proxy}/{kind}/{path}"
                t = threading.Thread(target=load_loop, args=(url, kind, seen, stop),
                                     name=f"{kind}-{i}")  # fmt: skip
                t.start()
                threads.append(t)
        bench.wait("load to flow", lambda: all(seen.ok[k] > 0 for k in KINDS))
        print(load_average(), flush=True)
        time.sleep(1)
        print(
            f"{'deploy':>6}  {'auto: serving-build':>20}  {'fixed: serving-build':>20}", flush=True
        )
        for n in range(2, args.deploys + 2):
            version = f"v{n}"
            commit = commit_files(bench.repo, {"version.txt": version}, version)
            changed = bench.api("POST", f"/stacks/{stack_id}/refresh")
            t0 = time.time()  # the desired state has changed
            assert changed["version"] == n, changed
            bench.wait(
                f"{version} to be served",
                lambda v=version: all((k, v) in seen.first for k in KINDS),
            )
            bench.wait(f"{version} to be applied", lambda v=n: bench.applied(stack_id, v))
            for kind in KINDS:
                ph = bench.wait(
                    f"the {kind} events of {version}",
                    lambda k=kind, c=commit: bench.phases(stack_id, k, c),
                )
                first = seen.first[(kind, version)]
                build_s = ph["build_end"] - ph["build_start"]
                m = measures[kind]
                m["change → serving − build"].append(first - t0 - build_s)
                m["  picked up (deploy event)"].append(ph["deploy"] - t0)
                m["  git sync + checkout"].append(ph["build_start"] - ph["deploy"])
                m["  build (not counted)"].append(build_s)
                m["  start, ready, cut over, drain"].append(ph["serving"] - ph["build_end"])
                if "drain_s" in ph:
                    m["drain of the old release"].append(ph["drain_s"])
                m["change → serving (incl. build)"].append(first - t0)
            heads = [measures[k]["change → serving − build"][-1] for k in KINDS]
            print(f"{n - 1:>6}  {heads[0]:>20.3f}  {heads[1]:>20.3f}", flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(35)
        bench.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(seen, measures)
    if args.keep:
        print(f"logs kept in {work}")
    return 0


def load_average() -> str:  # figures are comparable only at a similar load
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(seen: Seen, measures: dict[str, dict[str, list[float]]]) -> None:
    width = 34
    print()
    print(load_average())
    print(f"{'':{width}}{'auto (agent port)':>24}{'fixed port':>24}")
    total = {k: seen.ok[k] + len(seen.failed[k]) for k in KINDS}
    print(f"{'requests':{width}}{total['auto']:>24}{total['fixed']:>24}")
    failed = {k: len(seen.failed[k]) for k in KINDS}
    print(f"{'failed requests (target 0)':{width}}{failed['auto']:>24}{failed['fixed']:>24}")
    longs = {k: seen.long_ok[k] for k in KINDS}
    print(f"{'  long requests answered whole':{width}}{longs['auto']:>24}{longs['fixed']:>24}")
    print(f"{'seconds, p50 / p95 / max:':{width}}")
    for name in measures["auto"]:
        row = "".join(f"{summary(measures[k][name]):>24}" for k in KINDS)
        print(f"{name:{width}}{row}")
    print("target: change → serving − build p95 < 1 s; 0 failed requests")
    print("(phases from the agent's deploy/build/run event times; 'serving' is logged after the")
    print(" old process is drained, so the phases can add up to more than the headline)")
    for kind in KINDS:
        for line in seen.failed[kind][:5]:
            print(f"  failed {kind}: {line}")


if __name__ == "__main__":
    sys.exit(main())
