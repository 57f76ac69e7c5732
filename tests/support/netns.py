"""Two network namespaces joined by a veth pair, for tests that need real networking.

    with netns_pair() as net:            # "srv" and "out" ends, unique names and range
        net.popen(net.srv, ["python3", "-m", "http.server", "8080"])
        net.run(net.out, ["curl", f"http://{net.srv_ip}:8080/"])

Each pair gets unique namespace names (pid + counter) and its own 10.x.y.0/24 and
fd00:x:y::/64 range, so parallel runs never collide. Everything is removed on exit,
even when the test fails: processes started with `popen` are killed by PID first, then
the namespaces are deleted (which also removes the veth pair).

`private_etc` binds copies of /etc folders over the originals in a private mount
namespace for one command (UFW writes /etc/ufw and /etc/default), so a tool run inside
the namespace never rewrites the machine's own configuration. Rules applied inside a
namespace never touch the machine's own network namespace.
"""

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import terminate

_counter = itertools.count()

# mount the copies, then exec the command; "$@" keeps every argument intact (no shell
# string is ever built from the arguments).
_BIND_SCRIPT = """
set -e
n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind "$1" "$2"; shift 2; n=$((n-1)); done
exec "$@"
"""


@dataclass
class NetnsPair:
    srv: str
    out: str
    srv_ip: str
    out_ip: str
    srv_ip6: str
    out_ip6: str
    binds: list[tuple[Path, Path]] = field(default_factory=list)  # (copy, target) for srv
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, ns: str, argv: Sequence[str], private_etc: bool = False) -> list[str]:
        """`argv` run inside namespace `ns` (with the private /etc copies if asked)."""
        cmd = ["ip", "netns", "exec", ns]
        if private_etc and self.binds:
            pairs = [str(p) for b in self.binds for p in b]
            cmd += ["unshare", "-m", "--propagation", "private", "sh", "-c", _BIND_SCRIPT,
                    "sh", str(len(self.binds)), *pairs]  # fmt: skip
        return cmd + list(argv)

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        private_etc: bool = False,
        check: bool = True,
        **kw: object,
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("timeout", 60)
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            self.argv(ns, argv, private_etc), capture_output=True, text=True, check=check, **kw
        )

    def popen(
        self, ns: str, argv: Sequence[str], private_etc: bool = False, **kw: object
    ) -> subprocess.Popen[bytes]:
        """Start a process in `ns`; it is killed (by PID) when the pair is removed."""
        proc = subprocess.Popen(self.argv(ns, argv, private_etc), **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        terminate(proc, timeout)

    def nft_ruleset(self, ns: str | None = None) -> str:
        """``nft -s list ruleset`` (stateless: no counters) inside `ns` (default srv)."""
        return self.run(ns or self.srv, ["nft", "-s", "list", "ruleset"]).stdout

    def private_etc_copies(
        self, tmp: Path, folders: Sequence[str] = ("/etc/ufw", "/etc/default")
    ) -> None:
        """Copy `folders` under `tmp`; `argv(..., private_etc=True)` binds them over."""
        for folder in folders:
            copy = tmp / ("etc-" + folder.strip("/").replace("/", "-"))
            shutil.copytree(folder, copy, symlinks=True)
            self.binds.append((copy, Path(folder)))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def netns_pair(prefix: str = "bt") -> Iterator[NetnsPair]:
    n = next(_counter)
    tag = f"{prefix}{os.getpid() % 100000}x{n}"
    # a /24 and a /64 of its own per pair: 10.<200-249>.<0-249>.0/24
    b, c = 200 + os.getpid() % 50, (os.getpid() // 50 + n) % 250
    pair = NetnsPair(
        srv=f"{tag}s", out=f"{tag}o",
        srv_ip=f"10.{b}.{c}.1", out_ip=f"10.{b}.{c}.2",
        srv_ip6=f"fd00:{b}:{c}::1", out_ip6=f"fd00:{b}:{c}::2",
    )  # fmt: skip
    veth_s, veth_o = f"v{tag}s"[:15], f"v{tag}o"[:15]
    created: list[str] = []
    try:
        for ns in (pair.srv, pair.out):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip(
            "-n",
            pair.srv,
            "link",
            "add",
            veth_s,
            "type",
            "veth",
            "peer",
            "name",
            veth_o,
            "netns",
            pair.out,
        )
        for ns, dev, ip4, ip6 in ((pair.srv, veth_s, pair.srv_ip, pair.srv_ip6),
                                  (pair.out, veth_o, pair.out_ip, pair.out_ip6)):  # fmt: skip
            _ip("-n", ns, "addr", "add", f"{ip4}/24", "dev", dev)
            _ip("-n", ns, "-6", "addr", "add", f"{ip6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for proc in pair.procs:
            pair.stop(proc)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
