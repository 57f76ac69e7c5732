"""Benchmark: Berth's external proxy beside nginx and Caddy, in one run.

    .venv/bin/python bench/proxy.py [--duration 5] [--runs 3] [--connections 50]
                                    [--threads 1] [--workers 2] [--vary | --fresh]
                                    [--legs realistic,fixed] [--profile]
                                    [--cost-pairs 10] [--cost-duration 2] [--no-pin]
                                    [--cost-only]

Two legs, each against the same proxies, reported in this order:

* realistic: every request has a new path and query, a changing cookie and user agent
  and a browser's Accept headers (a wrk Lua script); the backend's response heads vary
  too (nginx adds a random `X-Request-Id` and a `Set-Cookie` carrying it). Nothing
  repeats byte for byte, so Berth's request and response memos do not help: this is
  the figure for real traffic.
* fixed: one request head repeated byte for byte (or the --vary/--fresh shapes below)
  and a fixed response.

The backends (nginx, one worker, a 12-byte body) are measured directly and
through: nginx as a reverse proxy (one worker, upstream keepalive >= the load's
connections), Caddy's reverse_proxy, and Berth's external proxy (one process; with
`--workers N` also N processes sharing the port with SO_REUSEPORT). Every target gets
the same wrk threads, connections and duration; runs alternate between targets and the
medians of `--runs` runs are printed: req/s, p50, p99 and the RSS of the proxy's
processes, then the ratios Berth/nginx and Berth/Caddy against the issue's targets.

wrk repeats one request head byte for byte, which Berth's request and response memos
(`agent/proxy/requestmemo.py`, `headcache.ResponseHeadCache`) turn into lookups. With
`--vary` every request carries a different query string under the same headers (a wrk
Lua script, for every target alike), as a browser or an API client sends them: Berth
checks and routes each request line and reuses the rewritten header block. With
`--fresh` every request also carries a different header value, so each head is parsed,
routed and rewritten in full: Berth's figure without its request memo.

Berth runs twice in the table: as installed (per-route metrics on, the default) and with
`ProxyConfig(metrics=False)` ("berth (metrics off)"). Their ratio there is only a
hint: two processes of the same code differ by a percent or two from run to run, as
much as counting costs. The cost of counting (issue 19's target: at most 3% fewer
req/s) is the leg's last block: `--cost-pairs` pairs of back-to-back runs, metrics on
and off, each pair on two new processes started by the same snippet with one hash
seed, in ABBA order, the proxies pinned to their own CPU and wrk and the backend to
the others (`--no-pin` to leave placement to the scheduler); the median of the pairs'
on/off ratios is the cost, printed with its quartiles and the CPU time per request of
each side. `--cost-only` runs just that block.

Then the WebSocket echo round trip (one small message at a time) direct, through nginx
and through Berth, the three connections taking turns message by message, medians.
`--profile` finally runs Berth in this process under cProfile while wrk loads it, and
prints where the time goes.

Needs wrk, nginx and caddy (Debian: `apt-get install wrk nginx-light caddy`).
Everything listens on 127.0.0.1 on ports chosen at run time; temp files are removed.
"""

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.bus.messages import Route, RouteTable  # noqa: E402
from bench.proxy_setup import (  # noqa: E402
    BERTH_PROXY,
    CADDYFILE,
    FRESH_SCRIPT,
    NGINX_BACKEND,
    NGINX_COMMON,
    NGINX_PROXY,
    REALISTIC_SCRIPT,
    VARY_SCRIPT,
    WS_ECHO,
)
from tests.support.procs import terminate  # noqa: E402

TARGETS = {"req/s": ">= 0.7x nginx, >= 3x Caddy", "p99": "<= 1.5x nginx", "RSS": "<= 40 MiB"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of `pid` and its children."""
    user = system = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
    return user, system


def rss_kib(pid: int) -> int:
    """RSS of `pid` and its children (nginx master + worker)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Procs:
    """Every process the benchmark starts, stopped by PID at the end."""

    def __init__(self, tmp: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp

    def start(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
        log.close()
        proc.argv = argv  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def explain(self) -> None:
        """Print what a process that died said (it is about to be deleted)."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log = (self.tmp / f"proc-{i}.log").read_text(errors="replace")
                argv = " ".join(proc.argv)  # type: ignore[attr-defined]
                print(f"{argv[:120]} exited {proc.returncode}:\n{log[-2000:]}", file=sys.stderr)

    def stop(self, pid: int) -> None:
        for proc in self.procs:
            if proc.pid == pid:
                terminate(proc, 10)

    def stop_all(self) -> None:
        for proc in self.procs:
            terminate(proc, 10)


METRICS_OFF = "berth (metrics off)"


@dataclass
class Target:
    name: str
    port: int
    pids: list[int]
    runs: list[tuple[float, float, float]] = field(default_factory=list)  # req/s, p50, p99
    rss: list[int] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # user, sys µs per request


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out: str) -> tuple[float, float, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        return float(m.group(1)) * _UNITS[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        print(f"    wrk reported: {errors.group(0)}", file=sys.stderr)
    return rps, pct("50"), pct("99")


# --vary: a different request-target for every request (a counter per wrk thread)
def run_wrk(port: int, args: argparse.Namespace, duration: float) -> str:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    if args.vary_script:
        cmd[1:1] = ["-s", args.vary_script]
    pin = getattr(args, "wrk_cpus", None)
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
    ).stdout


def ws_rtts(legs: list[tuple[int, str]], n: int) -> list[tuple[float, float]]:
    """Median and p99 round trip (µs) of one small message on each leg's connection.

    The legs take turns message by message (starting with a different leg each round),
    so every leg sees the same machine: on a shared VM the wake-up latency that makes
    up most of a round trip drifts by tens of µs between runs a few seconds apart,
    which swamped the overhead being measured when each leg had its own run.
    """
    from websockets.sync.client import connect

    samples: list[list[float]] = [[] for _ in legs]
    with contextlib.ExitStack() as stack:
        conns = [
            stack.enter_context(connect(f"ws://127.0.0.1:{port}{path}", compression=None))
            for port, path in legs
        ]
        msg = "x" * 32
        for _ in range(200):  # warm up
            for ws in conns:
                ws.send(msg)
                ws.recv()
        for i in range(n):
            for j in range(len(conns)):
                k = (i + j) % len(conns)
                ws = conns[k]
                t0 = time.perf_counter_ns()
                ws.send(msg)
                ws.recv()
                samples[k].append((time.perf_counter_ns() - t0) / 1000)
    out = []
    for s in samples:
        s.sort()
        out.append((statistics.median(s), s[int(len(s) * 0.99)]))
    return out


def berth_state(tmp: Path, backend: int, app: int, ws: int) -> Path:
    state = tmp / "berth"
    (state / "cache").mkdir(parents=True)
    table = RouteTable(
        version=(1, 1),
        routes=(Route("web", backend, "/"), Route("app", app, "/app"), Route("ws", ws, "/ws")),
    )
    (state / "cache" / "proxy-routes.json").write_bytes(table.to_json())
    for p in (tmp, state, state / "cache"):
        os.chmod(p, 0o755)  # the proxy drops root to nobody after binding
    return state


def profile_berth(backend: int, app: int, args: argparse.Namespace) -> str:
    """Berth in this process under cProfile while wrk loads it: what dominates."""
    import uvloop

    from agent.proxy.config import ProxyConfig
    from agent.proxy.server import EXTERNAL, ProxyServer

    port = free_port()
    prof = cProfile.Profile()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = ProxyServer(EXTERNAL, ProxyConfig(), loop)
        routes = (Route("web", backend, "/"), Route("app", app, "/app"))
        server.apply_table(RouteTable(version=(1, 1), routes=routes))
        await server.listen(f"127.0.0.1:{port}")
        sweeper = asyncio.create_task(server.run_sweeper())
        wrk = await asyncio.create_subprocess_exec(
            "wrk",
            *(["-s", args.vary_script] if args.vary_script else []),
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration:g}s",
            f"http://127.0.0.1:{port}/",
            stdout=subprocess.PIPE,
        )
        prof.enable()
        await wrk.communicate()
        prof.disable()
        sweeper.cancel()
        await server.drain()

    uvloop.run(scenario())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--runs", type=int, default=3, help="runs per target (median)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="also measure N SO_REUSEPORT workers")
    ap.add_argument("--ws-messages", type=int, default=3000)
    shape = ap.add_mutually_exclusive_group()
    shape.add_argument(
        "--vary", action="store_true", help="a different URL per request, the same headers"
    )
    shape.add_argument(
        "--fresh", action="store_true", help="a different URL and header value per request"
    )
    ap.add_argument(
        "--legs",
        default="realistic,fixed",
        help="comma-separated legs to run, in order (realistic, fixed)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="cProfile Berth's request path (first leg)"
    )
    ap.add_argument(
        "--cost-pairs",
        type=int,
        default=10,
        help="pairs of back-to-back runs of Berth with metrics on and off, per leg (0: none)",
    )
    ap.add_argument("--cost-duration", type=float, default=2.0, help="seconds per cost run")
    ap.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the proxies to their own CPU for the metrics cost",
    )
    ap.add_argument(
        "--cost-only",
        action="store_true",
        help="only the metrics cost (no nginx, Caddy or WebSocket comparison)",
    )
    args = ap.parse_args()
    args.vary_script = None
    args.legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    if not args.legs or set(args.legs) - {"realistic", "fixed"}:
        ap.error("--legs takes realistic and/or fixed")
    missing = [t for t in ("wrk", "nginx", "caddy") if shutil.which(t) is None]
    if missing:
        print(
            f"missing {', '.join(missing)}: apt-get install wrk nginx-light caddy", file=sys.stderr
        )
        return 2
    if args.runs < 3:
        ap.error("--runs must be at least 3 (medians)")
    if args.cost_pairs and args.cost_pairs < 4:
        ap.error("--cost-pairs must be 0 or at least 4 (quartiles)")
    args.pin = args.pin and len(os.sched_getaffinity(0)) >= 2

    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-proxy-"))
    if args.vary or args.fresh:
        args.vary_script = str(tmp / "vary.lua")
        Path(args.vary_script).write_text(FRESH_SCRIPT if args.fresh else VARY_SCRIPT)
    args.realistic_script = str(tmp / "realistic.lua")
    Path(args.realistic_script).write_text(REALISTIC_SCRIPT)
    procs = Procs(tmp)
    try:
        return _bench(args, tmp, procs)
    except (TimeoutError, subprocess.CalledProcessError):
        procs.explain()
        raise
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _nginx(procs: Procs, tmp: Path, name: str, body: str) -> subprocess.Popen[bytes]:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_COMMON.format(tmp=tmp, name=name, body=body))
    return procs.start(
        ["nginx", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / f"nginx-{name}.err")]
    )


def _bench(args: argparse.Namespace, tmp: Path, procs: Procs) -> int:
    backend, app, ws = free_port(), free_port(), free_port()
    args.backend = _nginx(procs, tmp, "backend", NGINX_BACKEND.format(port=backend, app=app))
    procs.start([sys.executable, "-c", WS_ECHO, str(ws)], cwd=REPO)
    wait_port(backend)
    wait_port(app)
    wait_port(ws)

    proxies: list[tuple[str, int, list[int]]] = []
    nginx_port = free_port()
    keepalive = max(128, args.connections)
    p = _nginx(
        procs,
        tmp,
        "proxy",
        NGINX_PROXY.format(port=nginx_port, backend=backend, app=app, ws=ws, keepalive=keepalive),
    )
    proxies.append(("nginx proxy (1 worker)", nginx_port, [p.pid]))

    caddy_port = free_port()
    caddyfile = tmp / "Caddyfile"
    caddyfile.write_text(CADDYFILE.format(port=caddy_port, backend=backend, app=app))
    env = dict(
        os.environ, XDG_DATA_HOME=str(tmp / "caddy-data"), XDG_CONFIG_HOME=str(tmp / "caddy-config")
    )
    p = procs.start(["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"], env=env)
    proxies.append(("caddy reverse_proxy", caddy_port, [p.pid]))

    state = berth_state(tmp, backend, app, ws)
    berth = str(Path(sys.executable).parent / "berth")
    berth_port = free_port()
    p = procs.start(
        [
            berth,
            "agent",
            "proxy",
            "--state-dir",
            str(state),
            "--proxy-bind",
            f"127.0.0.1:{berth_port}",
        ],
        cwd=REPO,
    )
    proxies.append(("berth proxy (1 process)", berth_port, [p.pid]))
    off = _start_berth(procs, state, "off", seed=None)
    proxies.append((METRICS_OFF, off.port, off.pids))
    args.stop_pid = procs.stop
    args.start_pair = lambda seed: tuple(
        _start_berth(procs, state, flag, seed) for flag in ("on", "off")
    )
    if args.workers > 1:
        port = free_port()
        pids = [
            procs.start(
                [sys.executable, "-c", BERTH_PROXY, str(state), f"127.0.0.1:{port}", "reuse-port"],
                cwd=REPO,
            ).pid
            for _ in range(args.workers)
        ]
        proxies.append((f"berth proxy ({args.workers} workers)", port, pids))

    for _, port, _ in proxies:
        wait_port(port)
    time.sleep(0.5)
    fixed_shape = (
        "a different URL and header value per request (--fresh)"
        if args.fresh
        else "a different URL per request (--vary)"
        if args.vary
        else "one repeated request"
    )
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.runs} alternating"
        f" runs, medians; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    fixed_script = args.vary_script
    for leg in args.legs:
        if leg == "realistic":
            args.vary_script = args.realistic_script
            title = "realistic: new path, query, cookie and user agent per request; varied response heads"
            direct = Target("direct (backend)", app, [])
        else:
            args.vary_script = fixed_script
            title = f"fixed: {fixed_shape}; fixed response"
            direct = Target("direct (backend)", backend, [])
        targets = [direct, *(Target(name, port, pids) for name, port, pids in proxies)]
        print(f"\n== {leg} leg ({title})", flush=True)
        if not args.cost_only:
            _measure(args, targets)
        if args.cost_pairs:
            _metrics_cost(args)
    if args.cost_only:
        return 0
    args.vary_script = args.realistic_script if args.legs[0] == "realistic" else fixed_script
    _websocket(args, ws, nginx_port, berth_port)
    if args.profile:
        _profile(args, backend, app)
    return 0


def _run_once(t: Target, args: argparse.Namespace, duration: float) -> None:
    """One wrk run against `t`: its req/s and latency, RSS and CPU time per request."""
    before = [cpu_ticks(pid) for pid in t.pids]
    result = parse_wrk(run_wrk(t.port, args, duration))
    after = [cpu_ticks(pid) for pid in t.pids]
    t.runs.append(result)
    t.rss.append(sum(rss_kib(pid) for pid in t.pids))
    n = result[0] * duration
    us_per_tick = 1e6 / os.sysconf("SC_CLK_TCK")
    user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) * us_per_tick / n
    system = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) * us_per_tick / n
    t.cpu.append((user, system))


@contextlib.contextmanager
def _pinned(args: argparse.Namespace, proxy_pids: list[int]) -> Iterator[None]:
    """With --pin (2+ CPUs): the proxies under test on the last CPU, wrk and the backend
    nginx on the others, so that the scheduler's choices stop adding their noise (an
    on/off difference of 1-2% drowns in it otherwise). Undone on the way out."""
    if not args.pin:
        yield
        return
    cpus = sorted(os.sched_getaffinity(0))
    rest = set(cpus[:-1])
    backend = [args.backend.pid, *_children(args.backend.pid)]
    saved = {pid: os.sched_getaffinity(pid) for pid in proxy_pids + backend}
    for pid in proxy_pids:
        os.sched_setaffinity(pid, {cpus[-1]})
    for pid in backend:
        os.sched_setaffinity(pid, rest)
    args.wrk_cpus = rest
    try:
        yield
    finally:
        args.wrk_cpus = None
        for pid, mask in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, mask)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _start_berth(procs: Procs, state: Path, metrics: str, seed: int | None) -> Target:
    """Berth's proxy with metrics "on" or "off", started by the same snippet either way."""
    port = free_port()
    flags = ["metrics-off"] if metrics == "off" else []
    argv = [sys.executable, "-c", BERTH_PROXY, str(state), f"127.0.0.1:{port}", *flags]
    env = dict(os.environ, PYTHONHASHSEED=str(seed)) if seed is not None else None
    return Target(f"berth (metrics {metrics})", port, [procs.start(argv, cwd=REPO, env=env).pid])


def _metrics_cost(args: argparse.Namespace) -> None:
    """Berth with metrics on against off, in pairs of back-to-back runs (ABBA order:
    on-off, off-on, ...), so that the machine's drift and whatever ran before fall on
    both alike. Each pair runs on two new processes, started alike with one hash seed
    (a new one per pair): two processes of the same code differ by a percent or so
    (where their memory lands, how their dicts lay out), as much as the effect measured,
    and fresh ones each time make that average out instead of biasing every pair. Each
    pair gives one on/off ratio; the median ratio is the cost."""
    on, off = Target("berth (metrics on)", 0, []), Target("berth (metrics off)", 0, [])
    for i in range(args.cost_pairs):
        pair = args.start_pair(i + 1)
        for t in pair:
            wait_port(t.port)
        with _pinned(args, [pid for t in pair for pid in t.pids]):
            for t in pair:  # warm-up
                run_wrk(t.port, args, 1)
            for t in pair if i % 2 == 0 else reversed(pair):
                _run_once(t, args, args.cost_duration)
        for t, kept in zip(pair, (on, off), strict=True):
            kept.runs += t.runs
            kept.cpu += t.cpu
            for pid in t.pids:
                args.stop_pid(pid)
    ratios = sorted(a[0] / b[0] for a, b in zip(on.runs, off.runs, strict=True))
    cpu = sorted((a[0] + a[1]) / (b[0] + b[1]) for a, b in zip(on.cpu, off.cpu, strict=True))
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    c1, cpu_median, c3 = statistics.quantiles(cpu, n=4)
    pinned = "; proxy on its own CPU, wrk and backend on another" if args.pin else ""
    print(
        f"metrics cost: {args.cost_pairs} pairs of {args.cost_duration:g} s runs, on and off"
        f" back to back (ABBA order), new processes each pair{pinned}; median of the pairs'"
        " ratios (quartiles)"
    )
    print(
        f"  req/s on/off                {median:6.3f}x   >= 0.97x ({100 * (1 - median):+.1f}% drop;"
        f" quartiles {q1:.3f}-{q3:.3f})"
    )
    print(
        f"  CPU µs/req on/off           {cpu_median:6.3f}x   ({100 * (cpu_median - 1):+.1f}% CPU"
        f" per request; quartiles {c1:.3f}-{c3:.3f})"
    )
    user_on, sys_on = (statistics.median(c[k] for c in on.cpu) for k in (0, 1))
    user_off, sys_off = (statistics.median(c[k] for c in off.cpu) for k in (0, 1))
    print(
        f"  user + sys µs/req           on {user_on:.2f} + {sys_on:.2f}, off {user_off:.2f} +"
        f" {sys_off:.2f} (medians)"
    )


def _measure(args: argparse.Namespace, targets: list[Target]) -> None:
    for t in targets:  # warm-up: pools filled, code paths hot
        run_wrk(t.port, args, 1)
    for i in range(args.runs):
        for t in targets:
            _run_once(t, args, args.duration)
        print(f"  run {i + 1}/{args.runs} done", file=sys.stderr, flush=True)

    print(
        f"{'target':26} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}"
        f" {'user µs/req':>12} {'sys µs/req':>11}"
    )
    med: dict[str, tuple[float, float, float, float]] = {}
    for t in targets:
        rps = statistics.median(r[0] for r in t.runs)
        p50 = statistics.median(r[1] for r in t.runs)
        p99 = statistics.median(r[2] for r in t.runs)
        rss = max(t.rss) / 1024 if t.pids else 0.0
        med[t.name] = (rps, p50, p99, rss)
        rss_s = f"{rss:8.1f}" if t.pids else f"{'-':>8}"
        if t.pids:
            user = statistics.median(c[0] for c in t.cpu)
            system = statistics.median(c[1] for c in t.cpu)
            cpu_s = f" {user:12.1f} {system:11.1f}"
        else:
            cpu_s = ""
        print(f"{t.name:26} {rps:10.0f} {p50:8.2f} {p99:8.2f} {rss_s}{cpu_s}")
        print("    runs: " + ", ".join(f"{r[0]:.0f} req/s p99 {r[2]:.2f} ms" for r in t.runs))

    n = med["nginx proxy (1 worker)"]
    c = med["caddy reverse_proxy"]
    b = med["berth proxy (1 process)"]
    print("ratios (Berth 1 process)      value   target")
    print(f"  req/s Berth/nginx          {b[0] / n[0]:6.2f}x   >= 0.70x")
    print(f"  req/s Berth/Caddy          {b[0] / c[0]:6.2f}x   >= 3.00x")
    print(f"  p99   Berth/nginx          {b[2] / n[2]:6.2f}x   <= 1.50x")
    print(f"  RSS   Berth                {b[3]:6.1f}    <= 40 MiB")
    off = med.get(METRICS_OFF)
    if off is not None:
        drop = 100 * (1 - b[0] / off[0])
        print(f"  req/s Berth metrics off/nginx {off[0] / n[0]:5.2f}x")
        # Unpaired (separate runs of differently started processes): an indication only;
        # the paired block below measures the cost.
        print(
            f"  req/s metrics on/off         {b[0] / off[0]:6.3f}x   (unpaired, {drop:+.1f}% drop;"
            " the paired block measures the cost)"
        )
        cpu = {t.name: statistics.median(u + s for u, s in t.cpu) for t in targets if t.pids}
        on_cpu, off_cpu = cpu["berth proxy (1 process)"], cpu[METRICS_OFF]
        print(
            f"  CPU µs/req metrics on/off    {on_cpu:5.1f}/{off_cpu:4.1f}  "
            f"({100 * (on_cpu / off_cpu - 1):+.1f}% CPU per request)"
        )
    workers = [name for name in med if name.startswith("berth proxy (") and "workers" in name]
    for name in workers:
        w = med[name]
        print(f"  req/s {name}/nginx {w[0] / n[0]:6.2f}x   (nginx has one worker)")
    print("  load average after this leg: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(json.dumps({k: [round(x, 3) for x in v] for k, v in med.items()}), file=sys.stderr)


def _websocket(args: argparse.Namespace, ws: int, nginx_port: int, berth_port: int) -> None:
    print(
        f"\nWebSocket echo round trip, {args.ws_messages} sequential 32-byte messages per leg"
        f" and run, legs taking turns message by message, {args.runs} runs, medians (µs)"
    )
    legs = (("direct", ws, "/"), ("nginx", nginx_port, "/ws"), ("berth", berth_port, "/ws"))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in legs}
    for _ in range(args.runs):
        for (name, _, _), rtt in zip(
            legs, ws_rtts([(port, path) for _, port, path in legs], args.ws_messages), strict=True
        ):
            samples[name].append(rtt)
    direct, via_nginx, via_berth = (
        (
            statistics.median(m for m, _ in samples[name]),
            statistics.median(p for _, p in samples[name]),
        )
        for name, _, _ in legs
    )
    print(f"  {'':14} {'median':>8} {'p99':>8} {'overhead':>9}")
    for name, (med_us, p99_us) in (("direct", direct), ("nginx", via_nginx), ("berth", via_berth)):
        over = med_us - direct[0]
        print(f"  {name:14} {med_us:8.1f} {p99_us:8.1f} {over:9.1f}")
    print(f"  target: Berth overhead <= 100 µs median -> {via_berth[0] - direct[0]:.1f} µs")


def _profile(args: argparse.Namespace, backend: int, app: int) -> None:
    print("\ncProfile of Berth's request path under wrk (in-process; tottime order):")
    print(profile_berth(backend, app, args))


if __name__ == "__main__":
    sys.exit(main())
