"""Benchmark: N simulated agents against a real control plane, SQLite and PostgreSQL.

    .venv/bin/python bench/controlplane.py [--n 1000,2000,5000,10000] [--duration 20] [--warmup 10]
                                           [--db sqlite,postgresql] [--connections 128]
                                           [--workers 1,2] [--slow-path] [--no-reference]

Each agent sends, every 10 s, one `GET /api/v1/agent/desired-state` with its ETag in
If-None-Match (answered 304) and one `POST /api/v1/agent/heartbeat` (a database write),
phases spread evenly: N agents make 0.2*N requests/s (10,000 agents ≈ 2,000 req/s). The
load is open-loop: each request has a due time and its latency is measured from that time,
so a server that falls behind shows it in p99 instead of slowing the generator down.

Setup (not measured): a throwaway database (a SQLite file; a PostgreSQL cluster run as
`nobody`), migrated, a stack created through the API from a local git repository, then N
instances inserted directly with their credential digests (registering 10,000 agents
through the API would take minutes and measures something else); then the control plane
is restarted so that it preloads every credential, as one that has been running does.
The control plane runs as `berth controlplane serve` in its own process group, with
`--workers N` for each N of `--workers`, and once with `--no-fast-path` if `--slow-path`.

Printed per run: req/s, p50/p99 of all requests and p99 of heartbeats alone, errors, and
CPU time per request (from /proc, over the measured window) of the control plane (every
process of its group), of the PostgreSQL server (postmaster and backends) and of this
load generator: the figures to compare on a machine shared with other work.

Simplification: agents share `--connections` keep-alive connections (a real fleet holds
one connection per agent, mostly idle). A heartbeat's answer waits for its batch's commit,
so with few connections a slow commit stalls every request queued behind it: the default
1,000 keeps that head-of-line blocking out of the figures without 10,000 sockets.

Reference, same run: nginx answering the same requests (304 / 204) from its config, which
shows what this machine and this generator can do at all. Target: 10,000 agents at p99 <
200 ms with 0 errors.
"""

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert  # noqa: E402

from controlplane.dburl import parse_db_url  # noqa: E402
from controlplane.models import Instance, utcnow  # noqa: E402
from controlplane.testing import create_admin_token, migrate  # noqa: E402
from tests.support.procs import terminate  # noqa: E402

PERIOD_S = 10.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TARGET_P99_MS = 200.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- load generator ------------------------------------------------------------------


@dataclass
class Result:
    sent: int
    errors: int
    latencies_ms: list[float]
    elapsed_s: float
    server_cpu_s: float = 0.0  # control plane (all workers) + database server, measured window
    db_cpu_s: float = 0.0  # of which the PostgreSQL server
    client_cpu_s: float = 0.0  # this load generator
    heartbeat_latencies_ms: list[float] = field(default_factory=list)  # of latencies_ms

    @property
    def p99(self) -> float:
        lat = sorted(self.latencies_ms) or [float("nan")]
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    @property
    def heartbeat_p99(self) -> float:
        lat = sorted(self.heartbeat_latencies_ms) or [float("nan")]
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    @property
    def meets_target(self) -> bool:
        return self.errors == 0 and bool(self.latencies_ms) and self.p99 < TARGET_P99_MS

    def row(self) -> str:
        lat = sorted(self.latencies_ms) or [float("nan")]
        p50 = lat[len(lat) // 2]
        done = max(1, len(self.latencies_ms) + self.errors)
        rps = len(self.latencies_ms) / self.elapsed_s
        ok = "yes" if self.meets_target else "no"
        per = 1000 / done
        return (
            f"{rps:8.0f} {p50:8.1f} {self.p99:8.1f} {self.errors:7d}  {ok:<6} "
            f"{(self.server_cpu_s - self.db_cpu_s) * per:8.3f} {self.db_cpu_s * per:8.3f} "
            f"{self.client_cpu_s * per:8.3f} {self.heartbeat_p99:8.1f}"
        )


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
class CpuProbe:
    """CPU seconds so far of the control plane (its process group: every worker) and of the
    PostgreSQL server (the postmaster and its children)."""

    cp_pgrp: int
    pg_pid: int | None = None

    def read(self) -> tuple[float, float]:
        stats = _proc_stats()
        cp = sum(cpu for _pid, _ppid, pgrp, cpu in stats if pgrp == self.cp_pgrp)
        pg = 0.0
        if self.pg_pid is not None:
            pg = sum(cpu for pid, ppid, _g, cpu in stats if self.pg_pid in (pid, ppid))
        return cp + pg, pg


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    requests: list[tuple[float, bytes, int]],
    connections: int,
    warmup_s: float,
    probe: CpuProbe | None = None,
) -> Result:
    """Send each (offset_s, raw request, expected status) at its offset; open loop.

    Requests due in the first `warmup_s` are sent but not counted: the first poll of each
    agent fills the control plane's credential cache, which is not the steady state.
    """
    queue: asyncio.Queue[tuple[float, bytes, int]] = asyncio.Queue()
    latencies: list[float] = []
    beats: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    measure_from = float("inf")

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                due, raw, expect = await queue.get()
                counted = due >= measure_from
                try:
                    writer.write(raw)
                    status = await _read_response(reader)
                    if status != expect:
                        errors += counted
                    elif counted:
                        latencies.append((loop.time() - due) * 1000)
                        if expect == 200:
                            beats.append(latencies[-1])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += counted
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                finally:
                    queue.task_done()
        finally:
            writer.close()

    workers = [asyncio.create_task(worker(), name=f"bench-conn-{i}") for i in range(connections)]
    await asyncio.sleep(0.2)  # let connections open before the clock starts
    start = loop.time()
    measure_from = start + warmup_s
    cpu0: tuple[float, float, float] | None = None
    for offset, raw, expect in requests:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if cpu0 is None and offset >= warmup_s:
            cpu0 = (*(probe.read() if probe else (0.0, 0.0)), time.process_time())
        queue.put_nowait((start + offset, raw, expect))
    await queue.join()
    elapsed = loop.time() - measure_from
    cpu1 = (*(probe.read() if probe else (0.0, 0.0)), time.process_time())
    cpu0 = cpu0 or cpu1
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return Result(len(requests), errors, latencies, elapsed,
                  cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2], beats)  # fmt: skip


def schedule(
    creds: list[str], etag: str, duration_s: float, host: str
) -> list[tuple[float, bytes, int]]:
    """Every agent: a conditional poll at its phase and a heartbeat half a period later."""
    n = len(creds)
    hb = json.dumps({"agent_version": "bench", "applied_version": 1, "state": "applied",
                     "services": [{"name": "web", "commit": "0" * 40, "state": "running",
                                   "health": "healthy", "restarts": 0}],
                     "security": {"mode": "open"}}).encode()  # fmt: skip
    out: list[tuple[float, bytes, int]] = []
    for i, cred in enumerate(creds):
        phase = PERIOD_S * i / n
        poll = (f"GET /api/v1/agent/desired-state HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {cred}\r\nIf-None-Match: \"{etag}\"\r\n\r\n").encode()  # fmt: skip
        beat = (f"POST /api/v1/agent/heartbeat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {cred}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(hb)}\r\n\r\n").encode() + hb  # fmt: skip
        t = phase
        while t < duration_s:
            out.append((t, poll, 304))
            if t + PERIOD_S / 2 < duration_s:
                out.append((t + PERIOD_S / 2, beat, 200))
            t += PERIOD_S
    out.sort(key=lambda r: r[0])
    return out


# ---- systems under test ----------------------------------------------------------------


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
    db_url: str, port: int, log: Path, workers: int = 1, fast: bool = True
) -> subprocess.Popen[bytes]:
    extra = ["--workers", str(workers)] if workers > 1 else []
    extra += [] if fast else ["--no-fast-path"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "controlplane", "serve", "--db", db_url, "--bind", f"127.0.0.1:{port}", *extra],
        cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    import requests

    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except requests.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.1)
    raise RuntimeError("control plane did not start")


def seed(db_url: str, base: str, n: int, workdir: Path) -> tuple[list[str], str]:
    """A stack via the API and `n` instances inserted directly; (credentials, etag)."""
    import requests

    repo = workdir / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
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
    return creds, stack["hash"]


def start_nginx(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off;
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,2000,5000,10000", help="agent counts to try")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument(
        "--warmup",
        type=float,
        default=PERIOD_S,
        help="unmeasured seconds first (default: one period)",
    )
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument(
        "--connections",
        type=int,
        default=1000,
        help="keep-alive connections the agents share (default %(default)s)",
    )
    ap.add_argument("--workers", default="1", help="control-plane worker counts to try, e.g. 1,2")
    ap.add_argument("--no-reference", action="store_true", help="skip the nginx reference")
    ap.add_argument("--slow-path", action="store_true",
                    help="also run each database with --no-fast-path (everything through Quart)")  # fmt: skip
    args = ap.parse_args()
    counts = [int(x) for x in args.n.split(",")]
    variants = [(int(x), True) for x in args.workers.split(",")]
    if args.slow_path:
        variants.insert(0, (1, False))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print("CPU columns: milliseconds of CPU per request (server = control plane, all workers;"
          " db = PostgreSQL server; client = this load generator); hb p99: heartbeats only")  # fmt: skip
    print(
        f"{'system':<26} {'agents':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  "
        f"{'target':<6} {'server':>8} {'db':>8} {'client':>8} {'hb p99':>8}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="berth-bench-cp-"))
    try:
        results: dict[str, int] = {}
        if shutil.which("nginx") and not args.no_reference:
            port = free_port()
            nginx = start_nginx(port, workdir)
            try:
                creds = [f"ref{i}" for i in range(max(counts))]
                for n in counts:
                    res = runner(
                        run_load(
                            "127.0.0.1",
                            port,
                            schedule(creds[:n], "x", args.warmup + args.duration, "b"),
                            args.connections,
                            args.warmup,
                            CpuProbe(nginx.pid),
                        )
                    )
                    print(f"{'reference: nginx':<26} {n:7d} {res.row()}", flush=True)
            finally:
                terminate(nginx)
        for kind in args.db.split(","):
            for nworkers, fast in variants:
                label = f"berth cp, {kind}" + (f" x{nworkers}" if nworkers > 1 else "")
                label += "" if fast else " slow"
                pg = None
                if kind == "sqlite":
                    db_url = f"sqlite:///{workdir}/bench-{uuid.uuid4().hex[:6]}.db"
                else:
                    pg = Postgres()
                    db_url = pg.url
                try:
                    migrate(db_url)
                    port = free_port()
                    log = workdir / f"cp-{kind}-{nworkers}-{fast}.log"
                    cp = start_controlplane(db_url, port, log, nworkers, fast)
                    try:
                        sub = workdir / f"{kind}-{nworkers}-{fast}"
                        sub.mkdir()
                        creds, etag = seed(db_url, f"http://127.0.0.1:{port}", max(counts), sub)
                        # restart: every worker preloads the fleet's credentials, as a
                        # control plane that has been running (or restarted) does
                        terminate(cp)
                        cp = start_controlplane(db_url, port, log, nworkers, fast)
                        probe = CpuProbe(cp.pid, pg.postmaster_pid() if pg else None)
                        for n in counts:
                            res = runner(
                                run_load(
                                    "127.0.0.1",
                                    port,
                                    schedule(creds[:n], etag, args.warmup + args.duration, "b"),
                                    args.connections,
                                    args.warmup,
                                    probe,
                                )
                            )
                            print(f"{label:<26} {n:7d} {res.row()}", flush=True)
                            if res.meets_target:
                                results[label] = max(results.get(label, 0), n)
                    finally:
                        terminate(cp)
                finally:
                    if pg:
                        pg.stop()
                print(
                    f"largest N meeting p99 < {TARGET_P99_MS:g} ms, 0 errors on {label}: "
                    f"{results.get(label, 'none of those tried')}",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
