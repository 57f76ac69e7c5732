"""Benchmark: the Berth DNS responder against dnsmasq, measured by dnsperf in one run.

    .venv/bin/python bench/dns.py [--duration 10] [--clients 1] [--outstanding 100]

Both servers answer `<service>.svc.internal A` with 127.0.0.1 on a free loopback port:
Berth as `berth agent dns` (names from its on-disk cache, no wiring), dnsmasq with
`--address=/svc.internal/127.0.0.1`. dnsperf sends the same query file for the same
duration to each, one after the other; the script prints queries per second, lost
queries, the server's own CPU time per query, and Berth's share of dnsmasq's rate.
(Target: >= 0.25x with 0 lost.)
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.bus.messages import Route, RouteTable  # noqa: E402
from tests.support.procs import terminate  # noqa: E402

SERVICES = [f"svc{i}" for i in range(20)] + ["api", "web", "db", "worker"]


def free_udp_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)


def wait_udp(port: int, timeout: float = 10.0) -> None:
    """Until a query on `port` gets any answer."""
    query = bytes.fromhex("123401000001000000000000036170690373766308696e7465726e616c0000010001")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(query, ("127.0.0.1", port))
            try:
                s.recvfrom(512)
                return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"no DNS server answering on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_dnsperf(
    port: int, queries: Path, args: argparse.Namespace, server_pid: int
) -> dict[str, float]:
    cpu_before = cpu_seconds(server_pid)
    out = subprocess.run(
        [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-l",
            str(args.duration),
            "-c",
            str(args.clients),
            "-q",
            str(args.outstanding),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
        timeout=args.duration + 60,
    ).stdout
    cpu = cpu_seconds(server_pid) - cpu_before

    def grab(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        if not m:
            raise RuntimeError(f"dnsperf output lacks {label!r}:\n{out}")
        return float(m.group(1))

    completed = grab("Queries completed")
    return {
        "cpu_us_per_query": cpu * 1e6 / completed if completed else float("nan"),
        "sent": grab("Queries sent"),
        "completed": grab("Queries completed"),
        "lost": grab("Queries lost"),
        "qps": grab("Queries per second"),
        "latency_ms": grab("Average Latency \\(s\\)") * 1000,
    }


def bench_berth(tmp: Path, queries: Path, args: argparse.Namespace) -> dict[str, float]:
    state = tmp / "state"
    (state / "cache").mkdir(parents=True)
    table = RouteTable(version=(1, 1), routes=tuple(Route(s, 9000) for s in SERVICES))
    (state / "cache" / "dns-routes.json").write_bytes(table.to_json())
    for d in (tmp, state, state / "cache"):
        d.chmod(0o777)  # it drops root to nobody, which must still read its cache
    port = free_udp_tcp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "agent",
            "dns",
            "--dns-bind",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(state),
            "--dns-wiring",
            "none",
        ],  # fmt: skip
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_udp(port)
        return run_dnsperf(port, queries, args, proc.pid)
    finally:
        terminate(proc, 10)


def bench_dnsmasq(queries: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_udp_tcp_port()
    proc = subprocess.Popen(
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--port={port}",
            "--address=/svc.internal/127.0.0.1",
            "--pid-file=",
            "--dns-forward-max=1000",
        ],  # fmt: skip
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_udp(port)
        return run_dnsperf(port, queries, args, proc.pid)
    finally:
        terminate(proc, 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per server")
    parser.add_argument("--clients", type=int, default=1, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    args = parser.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (apt-get install {tool if tool == 'dnsperf' else 'dnsmasq-base'})")
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-dns-"))
    try:
        queries = tmp / "queries.txt"
        queries.write_text("".join(f"{s}.svc.internal A\n" for s in SERVICES))
        results = {
            "dnsmasq": bench_dnsmasq(queries, args),
            "berth": bench_berth(tmp, queries, args),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"dnsperf -l {args.duration} -c {args.clients} -q {args.outstanding}, loopback, A queries"
    )
    print(
        f"{'server':<10}{'qps':>10}{'sent':>10}{'lost':>7}{'avg ms':>8}{'server CPU us/query':>21}"
    )
    for name, r in results.items():
        print(
            f"{name:<10}{r['qps']:>10.0f}{r['sent']:>10.0f}{r['lost']:>7.0f}"
            f"{r['latency_ms']:>8.3f}{r['cpu_us_per_query']:>21.1f}"
        )
    ratio = results["berth"]["qps"] / results["dnsmasq"]["qps"]
    verdict = "ok" if ratio >= 0.25 and results["berth"]["lost"] == 0 else "BELOW TARGET"
    print(f"berth/dnsmasq qps ratio: {ratio:.2f}x (target >= 0.25x with 0 lost: {verdict})")
    print(
        "(2 shared cores: dnsperf itself can be the limit; CPU per query compares the servers' "
        "own cost)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
