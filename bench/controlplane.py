"""Benchmark: a simulated fleet against a real control plane, SQLite and PostgreSQL, through
a control-plane restart, steady load and a stack change.

    .venv/bin/python bench/controlplane.py [--n 1000,5000,10000] [--db sqlite,postgresql]
        [--steady-intervals 3] [--connections 256] [--workers 1] [--no-long-poll]
        [--no-metrics] [--no-reference] [--trace-stalls MS]

The fleet runs in a separate process (bench/loadclient.py): N agents, each every 10 s at a
random phase sending a conditional poll (`If-None-Match`, 304 expected) and a heartbeat
with a one-service snapshot, over 256 shared HTTP/1.1 keep-alive connections; and, unless
`--no-long-poll`, each also holding a long poll (`?wait=25`) on its own connection, as the
reconciler does. Latencies are open loop (a round counts from its due time).

For each N, in one run of the client:
- the control plane serves the fleet for one interval (not measured), then is stopped
  (SIGTERM) and started again, cold: the agents' connections are gone, its caches empty.
  Requests that fail while it is down are retried at the agent's next slot; the downtime
  is printed, those failures are not errors;
- **cold**: the first interval after the restarted control plane answers (every agent
  reconnects within it);
- **steady**: the next `--steady-intervals` intervals;
- **change**: a stack change (PUT) under that load; printed: the time from sending the
  PUT until every agent holds the new version's ETag, and the latencies meanwhile.

Per phase: req/s, p50, p99, p99.9, max (ms), errors, and CPU milliseconds per request of
the control plane (all its processes), of the PostgreSQL server and of the client (from
/proc). Reference, same run: the same client (without long polls) against nginx answering
304 / 200 from its config, which shows what this machine and this client can do at all.

Setup (not measured): a throwaway database (SQLite file; a PostgreSQL cluster run as
`nobody`), migrated, a stack created through the API from a local git repository, N
instances inserted directly with their credential digests.
"""

import argparse
import hashlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert  # noqa: E402

from bench.loadclient import Plan, Report  # noqa: E402
from bench.loadclient import main as client_main  # noqa: E402
from controlplane.dburl import parse_db_url  # noqa: E402
from controlplane.models import Instance, utcnow  # noqa: E402
from tests.support.controlplane import create_admin_token, migrate  # noqa: E402
from tests.support.procs import terminate  # noqa: E402

PERIOD_S = 10.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TARGETS = (
    "targets at 10,000: steady p99 < 200 ms, p99.9 < 500 ms; cold p99 < 1 s; 0 errors; change < 2 s"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- CPU accounting ---------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, int, int, float]]:
    """(pid, ppid, process group, user+system CPU seconds) of every process."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        # after the command: state ppid pgrp session ... utime(12) stime(13)
        out.append((int(entry.name), int(fields[1]), int(fields[2]),
                    (int(fields[11]) + int(fields[12])) / _TICK))  # fmt: skip
    return out


@dataclass(frozen=True)
class Cpu:
    server: float  # the control plane's process group
    db: float  # the PostgreSQL server: postmaster and backends
    client: float


@dataclass(frozen=True)
class CpuProbe:
    cp_pgrp: int
    client_pid: int
    pg_pid: int | None = None

    def read(self) -> Cpu:
        stats = _proc_stats()
        cp = sum(cpu for _pid, _ppid, pgrp, cpu in stats if pgrp == self.cp_pgrp)
        client = sum(cpu for pid, _ppid, _g, cpu in stats if pid == self.client_pid)
        pg = 0.0
        if self.pg_pid is not None:
            pg = sum(cpu for pid, ppid, _g, cpu in stats if self.pg_pid in (pid, ppid))
        return Cpu(cp, pg, client)


# ---- figures ----------------------------------------------------------------------------


def _pct(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")


@dataclass
class Phase:
    name: str
    start: float
    end: float
    latencies: list[float]
    errors: int
    cpu0: Cpu
    cpu1: Cpu
    note: str = ""

    def row(self) -> str:
        lat = sorted(self.latencies)
        done = max(1, len(lat))
        per = 1000 / done
        rps = len(lat) / max(1e-9, self.end - self.start)
        return (
            f"{self.name:<7} {rps:7.0f} {_pct(lat, 0.5):7.1f} {_pct(lat, 0.99):7.1f} "
            f"{_pct(lat, 0.999):7.1f} {(lat[-1] if lat else float('nan')):7.1f} {self.errors:6d} "
            f"{(self.cpu1.server - self.cpu0.server) * per:7.3f} {(self.cpu1.db - self.cpu0.db) * per:6.3f} "
            f"{(self.cpu1.client - self.cpu0.client) * per:6.3f}  {self.note}"
        )


def phase(name: str, report: Report, start: float, end: float, cpu0: Cpu, cpu1: Cpu) -> Phase:
    lat = [ms for due, _k, ms, _why in report.requests if start <= due < end and ms >= 0]
    errors = sum(1 for due, _k, ms, _why in report.requests if start <= due < end and ms < 0)
    errors += sum(1 for t, _why in report.long_poll_failures if start <= t < end)
    return Phase(name, start, end, lat, errors, cpu0, cpu1)


HEADER = (
    f"{'system':<24} {'agents':>6} {'phase':<7} {'req/s':>7} {'p50':>7} {'p99':>7} {'p99.9':>7} "
    f"{'max':>7} {'errors':>6} {'server':>7} {'db':>6} {'client':>6}"
)


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="berth-bench-pg-", dir="/tmp"))
        shutil.chown(self.dir, "nobody", "nogroup")
        self.port = free_port()
        self._as_nobody(
            str(PG_BIN / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "bench", "-N"
        )
        self._as_nobody(str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "start",
                        "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200")  # fmt: skip
        self.url = f"postgresql+psycopg://bench@127.0.0.1:{self.port}/postgres"

    def postmaster_pid(self) -> int:
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def _as_nobody(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "nobody", "--", *args], check=True, capture_output=True, timeout=120
        )

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "nobody", "--", str(PG_BIN / "pg_ctl"), "-D", f"{self.dir}/data",
                        "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


def start_controlplane(
    db_url: str, port: int, log: Path, workers: int = 1, trace_ms: float = 0
) -> subprocess.Popen[bytes]:
    extra = ["--workers", str(workers)] if workers > 1 else []
    env = {**os.environ, "BERTH_STALL_TRACE_MS": f"{trace_ms:g}"} if trace_ms else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "controlplane", "serve", "--db", db_url, "--bind", f"127.0.0.1:{port}",
         "--allow-file-repos", str(log.parent), *extra],
        cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    import requests

    for _ in range(1500):
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.02)
    raise RuntimeError("control plane did not start")


@dataclass
class Seeded:
    credentials: list[str]
    etag: str
    stack_id: str
    token: str
    body: dict[str, Any]


def seed(db_url: str, base: str, n: int, workdir: Path) -> Seeded:
    """A stack via the API and `n` instances inserted directly."""
    import requests

    repo = workdir / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=env)
    (repo / "app.py").write_text("print(1)\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=repo, check=True, env=env)
    token = create_admin_token(db_url, "bench")
    body = {"name": f"bench-{uuid.uuid4().hex[:6]}", "security_mode": "open", "poll_interval_s": PERIOD_S,
            "services": [{"name": "web", "repo": f"file://{repo}", "ref": "main", "run": "python3 app.py", "port": 9000, "path": "/"}]}  # fmt: skip
    stack = requests.post(
        f"{base}/api/v1/stacks", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    creds = [f"berth_agt_bench{i:06d}{uuid.uuid4().hex}" for i in range(n)]
    now = utcnow()
    rows = [{"id": str(uuid.uuid4()), "stack_id": stack["id"], "hostname": f"agent-{i}",
             "credential_hash": hashlib.sha256(c.encode()).hexdigest(), "created_at": now, "last_seen": now,
             "services": [], "security": {}, "extra": {}} for i, c in enumerate(creds)]  # fmt: skip
    engine = create_engine(parse_db_url(db_url).sync_url)
    with engine.begin() as conn:
        conn.execute(insert(Instance), rows)
    engine.dispose()
    return Seeded(creds, stack["hash"], stack["id"], token, body)


def change_stack(base: str, seeded: Seeded, run: str) -> str:
    """Publish a new version (another run command); its document hash."""
    import requests

    body = {**seeded.body, "services": [{**seeded.body["services"][0], "run": run}]}
    resp = requests.put(f"{base}/api/v1/stacks/{seeded.stack_id}", json=body,
                        headers={"Authorization": f"Bearer {seeded.token}"}, timeout=30)  # fmt: skip
    resp.raise_for_status()
    return str(resp.json()["hash"])


def start_nginx(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000000;  # (default 1,000: then it closes)
  client_body_temp_path {workdir}/nginx-body; proxy_temp_path {workdir}/nginx-proxy;
  fastcgi_temp_path {workdir}/nginx-fcgi; uwsgi_temp_path {workdir}/nginx-uwsgi; scgi_temp_path {workdir}/nginx-scgi;
  server {{ listen 127.0.0.1:{port};
    location = /api/v1/agent/desired-state {{ return 304; }}
    location = /api/v1/agent/heartbeat {{ client_body_buffer_size 16k; return 200; }}
  }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir)], start_new_session=True)
    time.sleep(0.5)
    return proc


class Client:
    """The fleet simulator in its own process (bench/loadclient.py)."""

    def __init__(self, plan: Plan) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=client_main, args=(child,), name="berth-bench-fleet")
        self.proc.start()
        self.pipe.send(plan)
        assert self.pipe.recv() == "started"

    def stop(self) -> Report:
        self.pipe.send("stop")
        if not self.pipe.poll(120):
            self.proc.kill()
            raise RuntimeError("the load client did not report within 120 s of being stopped")
        report: Report = self.pipe.recv()
        self.proc.join(30)
        return report


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def reference(n: int, args: argparse.Namespace, workdir: Path) -> None:
    """The client against nginx: steady phase only, no long polls (nginx does not hold)."""
    port = free_port()
    nginx = start_nginx(port, workdir)
    try:
        client = Client(Plan("127.0.0.1", port, [f"ref{i}" for i in range(n)], "x", PERIOD_S,
                             args.connections, long_poll=False))  # fmt: skip
        probe = CpuProbe(nginx.pid, client.proc.pid or 0)
        start = time.monotonic() + PERIOD_S
        sleep_until(start)
        cpu0 = probe.read()
        sleep_until(start + PERIOD_S * args.steady_intervals)
        cpu1 = probe.read()
        report = client.stop()
        res = phase("steady", report, start, start + PERIOD_S * args.steady_intervals, cpu0, cpu1)
        print(f"{'reference: nginx':<24} {n:6d} {res.row()}", flush=True)
    finally:
        terminate(nginx)


def reference_change(n: int, args: argparse.Namespace) -> None:
    """The client with long polls against bench/trivialserver.py: how fast this machine and
    this client get a change to `n` agents when the server does no work at all."""
    import requests

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "trivialserver.py"), str(port)],
                              stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        client = Client(Plan("127.0.0.1", port, [f"ref{i}" for i in range(n)], "v1", PERIOD_S,
                             args.connections, long_poll=True))  # fmt: skip
        probe = CpuProbe(server.pid, client.proc.pid or 0)
        time.sleep(PERIOD_S)  # every agent holds its long poll
        cpu0 = probe.read()
        t_change = time.monotonic()
        requests.put(f"http://127.0.0.1:{port}/change", timeout=30)
        sleep_until(t_change + args.change_window)
        cpu1 = probe.read()
        report = client.stop()
        res = phase("change", report, t_change, t_change + args.change_window, cpu0, cpu1)
        res.note = reached(report, n, "v2", t_change, args.change_window)
        print(f"{'reference: trivial':<24} {n:6d} {res.row()}", flush=True)
    finally:
        terminate(server)


def reached(report: Report, n: int, new_hash: str, t_change: float, window: float) -> str:
    """When every agent held `new_hash`, counted from the change."""
    holders = {agent: t for t, agent, etag in report.etags if etag == new_hash}
    if len(holders) == n:
        return f"all {n} agents hold the new version {max(holders.values()) - t_change:.2f} s after the PUT"
    return f"only {len(holders)}/{n} agents hold the new version after {window:g} s"


def run_fleet(label: str, n: int, cp: subprocess.Popen[bytes], restart: Any, seeded: Seeded, port: int,
              args: argparse.Namespace, pg: "Postgres | None", version: int, log: Path) -> subprocess.Popen[bytes]:  # fmt: skip
    """One client run against the control plane `cp`: warm interval, restart, cold, steady,
    change. Returns the restarted control plane."""
    client = Client(Plan("127.0.0.1", port, seeded.credentials[:n], seeded.etag, PERIOD_S,
                         args.connections, long_poll=not args.no_long_poll,
                         metrics=not args.no_metrics))  # fmt: skip
    assert client.proc.pid is not None
    time.sleep(PERIOD_S)  # one interval against the running control plane: long polls held
    t_down = time.monotonic()
    log_from = log.stat().st_size
    terminate(cp)
    cp = restart()
    t_up = time.monotonic()
    probe = CpuProbe(cp.pid, client.proc.pid, pg.postmaster_pid() if pg else None)
    cpu = [probe.read()]
    steady_end = t_up + PERIOD_S * (1 + args.steady_intervals)
    for t in (t_up + PERIOD_S, steady_end):
        sleep_until(t)
        cpu.append(probe.read())
    t_change = time.monotonic()
    new_hash = change_stack(f"http://127.0.0.1:{port}", seeded, f"python3 app.py --v{version}")
    put_s = time.monotonic() - t_change
    change_end = t_change + args.change_window
    sleep_until(change_end)
    cpu.append(probe.read())
    report = client.stop()

    down = sum(1 for due, _k, ms, _w in report.requests if t_down <= due < t_up and ms < 0)
    down += sum(1 for t, _w in report.long_poll_failures if t_down <= t < t_up)
    early = sum(1 for due, _k, ms, _w in report.requests if due < t_down and ms < 0)
    phases = [
        phase("cold", report, t_up, t_up + PERIOD_S, cpu[0], cpu[1]),
        phase("steady", report, t_up + PERIOD_S, steady_end, cpu[1], cpu[2]),
        phase("change", report, t_change, change_end, cpu[2], cpu[3]),
    ]
    phases[0].note = f"down {t_up - t_down:.1f} s ({down} requests refused meanwhile, retried)"
    phases[2].note = reached(report, n, new_hash, t_change, args.change_window)
    phases[2].note += f" (the PUT answered in {put_s:.2f} s)"
    for p in phases:
        print(f"{label:<24} {n:6d} {p.row()}", flush=True)
    if early:
        whys: dict[str, int] = {}
        for due, _k, ms, w in report.requests:
            if due < t_down and ms < 0:
                whys[w] = whys.get(w, 0) + 1
        why = _top(whys)
        print(
            f"  note: {early} requests due before the restart failed (warm interval), e.g. {why}",
            flush=True,
        )
    failures: dict[str, int] = {}
    for due, _k, ms, why in report.requests:
        if ms < 0 and due >= t_up:
            failures[why] = failures.get(why, 0) + 1
    for t, why in report.long_poll_failures:
        if t >= t_up:
            failures["long poll: " + why] = failures.get("long poll: " + why, 0) + 1
    for why, count in sorted(failures.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  error x{count}: {why!r}", flush=True)
    with log.open("rb") as f:
        f.seek(log_from)
        for line in f.read().decode(errors="replace").splitlines():
            if "stall trace" in line:
                print("  " + line.split(": ", 1)[1], flush=True)
    seeded.etag = new_hash  # the next run's agents start current
    return cp


def _top(counts: dict[str, int]) -> str:
    return repr(max(counts, key=counts.__getitem__)) if counts else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,5000,10000", help="agent counts (default %(default)s)")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--steady-intervals", type=int, default=3,
                    help="length of the steady phase in 10 s intervals (default %(default)s)")  # fmt: skip
    ap.add_argument("--change-window", type=float, default=PERIOD_S + 2,
                    help="seconds the change phase lasts (default %(default)s)")  # fmt: skip
    ap.add_argument("--connections", type=int, default=256,
                    help="keep-alive connections the agents' polls and heartbeats share")  # fmt: skip
    ap.add_argument("--workers", default="1", help="control-plane worker counts to try, e.g. 1,2")
    ap.add_argument("--no-long-poll", action="store_true",
                    help="agents do not hold long polls (the issue's client exactly)")  # fmt: skip
    ap.add_argument("--no-metrics", action="store_true",
                    help="agents send no metric batches (by default each sends one every 30 s)")  # fmt: skip
    ap.add_argument("--no-reference", action="store_true", help="skip the reference servers")
    ap.add_argument("--trace-stalls", type=float, default=0, metavar="MS",
                    help="run the control plane with BERTH_STALL_TRACE_MS=MS and print its "
                         "stall trace (event-loop stalls, GC pauses) per 10 s")  # fmt: skip
    args = ap.parse_args()
    counts = [int(x) for x in args.n.split(",")]
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the control plane
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"long polls {'off' if args.no_long_poll else 'on'}; metrics {'off' if args.no_metrics else 'on'}; {TARGETS}")  # fmt: skip
    print(
        "latencies in ms; server/db/client: CPU ms per measured request (poll, heartbeat or metrics)"
    )
    print(HEADER, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="berth-bench-cp-"))
    try:
        if shutil.which("nginx") and not args.no_reference:
            reference(max(counts), args, workdir)
        if not args.no_reference:
            reference_change(max(counts), args)
        for kind in args.db.split(","):
            for nworkers in [int(x) for x in args.workers.split(",")]:
                label = f"berth cp, {kind}" + (f" x{nworkers}" if nworkers > 1 else "")
                pg = None
                if kind == "sqlite":
                    db_url = f"sqlite:///{workdir}/bench-{uuid.uuid4().hex[:6]}.db"
                else:
                    pg = Postgres()
                    db_url = pg.url
                try:
                    migrate(db_url)
                    port = free_port()
                    log = workdir / f"cp-{kind}-{nworkers}.log"

                    def restart(db_url: str = db_url, port: int = port, log: Path = log, w: int = nworkers) -> subprocess.Popen[bytes]:  # fmt: skip
                        return start_controlplane(db_url, port, log, w, args.trace_stalls)

                    cp = restart()
                    try:
                        sub = workdir / f"{kind}-{nworkers}"
                        sub.mkdir()
                        seeded = seed(db_url, f"http://127.0.0.1:{port}", max(counts), sub)
                        terminate(cp)  # the warm interval runs against one that knows the fleet
                        cp = restart()
                        for i, n in enumerate(counts):
                            cp = run_fleet(
                                label, n, cp, restart, seeded, port, args, pg, i + 2, log
                            )
                    finally:
                        terminate(cp)
                        if "Traceback" in log.read_text():
                            print(f"  the control plane logged a traceback: see {log}", flush=True)
                finally:
                    if pg:
                        pg.stop()
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
