"""Service and server figures from /proc: pure parsers plus thin readers.

A service runs in its own process group (agent/reconciler/process.py), so "the service
and its children" is every process whose process group id is the service's pid: their
CPU seconds, resident memory, threads and open descriptors are summed. Descriptors of
processes another user owns may be unreadable (the reconciler is not root under
systemd): `fds` is then None rather than a wrong number.

Server figures: load averages, CPU time by mode (cumulative: rates come from two
samples), memory and swap, space and inodes of the filesystem holding the state
directory, and bytes received/sent on every interface but loopback (cumulative).
"""

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgrp: int
    cpu_ticks: int  # utime + stime
    threads: int
    start_ticks: int  # since boot
    rss_pages: int


def parse_stat(text: str) -> ProcStat:
    """/proc/<pid>/stat. The command name may hold spaces and parentheses: fields are
    counted after its last ')'."""
    pid = int(text[: text.index(" ")])
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3]
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        pgrp=int(rest[2]),
        cpu_ticks=int(rest[11]) + int(rest[12]),
        threads=int(rest[17]),
        start_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
    )


@dataclass(frozen=True)
class ServiceSample:
    processes: int
    cpu_seconds: float  # cumulative, the group's live processes
    rss_bytes: int
    threads: int
    fds: int | None
    uptime_s: float  # of the group leader


def summarise_group(
    leader: int, stats: list[ProcStat], fds: dict[int, int | None], uptime_s: float
) -> ServiceSample | None:
    """Sum the processes of `leader`'s process group; None when the leader is gone.
    `uptime_s` is the system's (from /proc/uptime)."""
    group = [s for s in stats if s.pgrp == leader]
    head = next((s for s in group if s.pid == leader), None)
    if head is None:
        return None
    counts = [fds.get(s.pid) for s in group]
    return ServiceSample(
        processes=len(group),
        cpu_seconds=sum(s.cpu_ticks for s in group) / CLK_TCK,
        rss_bytes=sum(s.rss_pages for s in group) * PAGE_SIZE,
        threads=sum(s.threads for s in group),
        fds=None if any(c is None for c in counts) else sum(c or 0 for c in counts),
        uptime_s=max(0.0, uptime_s - head.start_ticks / CLK_TCK),
    )


def read_all_stats(proc: Path = Path("/proc")) -> list[ProcStat]:
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            out.append(parse_stat((entry / "stat").read_text()))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return out


def count_fds(pid: int, proc: Path = Path("/proc")) -> int | None:
    try:
        return len(os.listdir(proc / str(pid) / "fd"))
    except OSError:
        return None


def read_uptime(proc: Path = Path("/proc")) -> float:
    return float((proc / "uptime").read_text().split()[0])


def sample_services(
    leaders: dict[str, int], proc: Path = Path("/proc")
) -> dict[str, ServiceSample]:
    """One sample per running service (name -> group leader pid), one /proc scan."""
    stats = read_all_stats(proc)
    wanted = set(leaders.values())
    fds = {s.pid: count_fds(s.pid, proc) for s in stats if s.pgrp in wanted}
    uptime = read_uptime(proc)
    out = {}
    for name, leader in leaders.items():
        sample = summarise_group(leader, stats, fds, uptime)
        if sample is not None:
            out[name] = sample
    return out


# -- the server ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSample:
    load1: float
    load5: float
    load15: float
    cpu_seconds: dict[str, float]  # cumulative: user, nice, system, idle, iowait, ...
    cpus: int
    mem_total: int
    mem_available: int
    swap_total: int
    swap_free: int
    disk_total: int
    disk_free: int  # available to unprivileged users
    inodes_total: int
    inodes_free: int
    net_rx_bytes: int  # cumulative, all interfaces but loopback
    net_tx_bytes: int


CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_cpu(text: str) -> tuple[dict[str, float], int]:
    """/proc/stat: the aggregate "cpu" line in seconds by mode, and the CPU count."""
    total: dict[str, float] = {}
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = line.split()[1:]
            total = {m: int(v) / CLK_TCK for m, v in zip(CPU_MODES, values, strict=False)}
        elif line.startswith("cpu"):
            cpus += 1
    return total, cpus


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts:
            out[name] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def parse_net_dev(text: str) -> tuple[int, int]:
    """/proc/net/dev: bytes received and sent over every interface but `lo`."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, values = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = values.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def sample_server(state_dir: Path, proc: Path = Path("/proc")) -> ServerSample:
    load = (proc / "loadavg").read_text().split()
    cpu, cpus = parse_cpu((proc / "stat").read_text())
    mem = parse_meminfo((proc / "meminfo").read_text())
    rx, tx = parse_net_dev((proc / "net" / "dev").read_text())
    fs = os.statvfs(state_dir)
    return ServerSample(
        load1=float(load[0]),
        load5=float(load[1]),
        load15=float(load[2]),
        cpu_seconds=cpu,
        cpus=cpus,
        mem_total=mem.get("MemTotal", 0),
        mem_available=mem.get("MemAvailable", 0),
        swap_total=mem.get("SwapTotal", 0),
        swap_free=mem.get("SwapFree", 0),
        disk_total=fs.f_blocks * fs.f_frsize,
        disk_free=fs.f_bavail * fs.f_frsize,
        inodes_total=fs.f_files,
        inodes_free=fs.f_favail,
        net_rx_bytes=rx,
        net_tx_bytes=tx,
    )
