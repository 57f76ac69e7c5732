"""/proc parsing on fixed text, and one sample of real processes this test starts."""

import os
import subprocess
import sys
import time
from pathlib import Path

from agent.metrics.procfs import (
    CLK_TCK,
    PAGE_SIZE,
    ProcStat,
    parse_cpu,
    parse_meminfo,
    parse_net_dev,
    parse_stat,
    sample_server,
    sample_services,
    summarise_group,
)

STAT = (
    "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
    "150 50 0 0 20 0 3 0 9000 123456 700 18446744073709551615"
)


def test_parse_stat_survives_parentheses_in_the_name() -> None:
    s = parse_stat(STAT)
    assert s == ProcStat(
        pid=4242, ppid=1, pgrp=4242, cpu_ticks=200, threads=3, start_ticks=9000, rss_pages=700
    )


def test_group_sums_children_and_needs_its_leader() -> None:
    leader = ProcStat(10, 1, 10, 100, 2, 50 * CLK_TCK, 10)
    child = ProcStat(11, 10, 10, 300, 1, 60 * CLK_TCK, 5)
    other = ProcStat(12, 1, 12, 999, 9, 0, 999)
    got = summarise_group(10, [leader, child, other], {10: 4, 11: 3}, uptime_s=80.0)
    assert got is not None
    assert got.processes == 2 and got.threads == 3 and got.fds == 7
    assert got.cpu_seconds == 400 / CLK_TCK
    assert got.rss_bytes == 15 * PAGE_SIZE
    assert got.uptime_s == 30.0
    assert summarise_group(10, [leader, child], {10: 4, 11: None}, 80.0).fds is None  # type: ignore[union-attr]
    assert summarise_group(99, [leader], {}, 80.0) is None


def test_server_parsers() -> None:
    cpu, cpus = parse_cpu(
        f"cpu  {CLK_TCK} 0 {2 * CLK_TCK} {10 * CLK_TCK} 0 0 0 0 0 0\n"
        "cpu0 1 0 2 10 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\nintr 5\n"
    )
    assert cpus == 2 and cpu["user"] == 1.0 and cpu["system"] == 2.0 and cpu["idle"] == 10.0
    mem = parse_meminfo("MemTotal:  2048 kB\nMemAvailable: 1024 kB\nHugePages_Total: 0\n")
    assert mem == {"MemTotal": 2048 * 1024, "MemAvailable": 1024 * 1024, "HugePages_Total": 0}
    net = (
        "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
        "    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
        "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n"
    )
    assert parse_net_dev(net) == (1000, 2000)


def test_real_sample_of_a_process_group(tmp_path: Path) -> None:
    # a leader in its own session with one child, both sleeping
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess,time; subprocess.Popen(['sleep','30']); time.sleep(30)",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        got = {}
        while time.monotonic() < deadline:
            got = sample_services({"svc": proc.pid, "gone": 2**22 + 1})
            if got.get("svc") and got["svc"].processes == 2:
                break
            time.sleep(0.05)
        svc = got["svc"]
        assert "gone" not in got
        assert svc.processes == 2 and svc.threads >= 2
        assert svc.rss_bytes > 1_000_000 and svc.fds is not None and svc.fds >= 3
        assert 0 <= svc.uptime_s < 60
        server = sample_server(tmp_path)
        assert server.cpus == os.cpu_count() and server.mem_total > server.mem_available > 0
        assert server.disk_total > 0 and server.inodes_total > 0
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
