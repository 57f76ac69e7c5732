"""A real booted systemd for tests: a cached Debian rootfs, booted with systemd-nspawn.

How it works (recipe and gotchas: /work/shared/notes/systemd-nspawn.md):

* `ensure_rootfs()` builds a Debian bookworm rootfs with debootstrap once per machine and
  caches it outside the repository (`$BERTH_TEST_CACHE`, default `/var/cache/berth-test`).
  It is built in a temporary directory and renamed into place with a version stamp, under
  a file lock, so concurrent test runs neither see a half-built tree nor build it twice.
* `ensure_wheels()` caches wheels of Berth's dependencies, built on the host with
  `pip wheel`: a container has no registry access (an installer test can serve them to
  `pip install --no-index --find-links`).
* `ensure_berth_venv()` caches, next to it, a venv holding those dependencies, built
  *inside* the rootfs (Debian's Python, not the host's pyenv one) from the wheels. The venv is bind-mounted
  read-only at `/opt/berth-venv` and finds the repository, bind-mounted read-only at
  `/opt/berth-src`, through a `.pth` file, so code edits need no rebuild.
* `Container` boots a copy-on-write view of the rootfs (overlayfs, upper layer in a temp
  dir) inside a private mount namespace (tmpfs over /run/systemd/nspawn) and a network
  namespace that it creates: nothing the container does to its network or firewall
  touches the machine. `exec()` runs commands inside with `nsenter -t PID -a`;
  `write_file()` copies files in; `stop()` powers it off and removes everything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("BERTH_TEST_CACHE", "/var/cache/berth-test"))
REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
ROOTFS_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "systemd-resolved",
    "libnss-resolve",
    "python3",
    "python3-venv",
    "iproute2",
    "curl",
    "ca-certificates",
    "procps",
    "nftables",
    "ufw",
    "iptables",
)
# Bump when the recipe changes: a cached rootfs with another stamp is rebuilt.
ROOTFS_VERSION = "1:" + ",".join(ROOTFS_PACKAGES)
STAMP = ".berth-rootfs-version"
VENV_MOUNT = "/opt/berth-venv"
SRC_MOUNT = "/opt/berth-src"


def _run(argv: Sequence[str], timeout: float = 900, **kw: object) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same thing
        yield


def _mirror() -> str:
    for src in Path("/etc/apt/sources.list.d").glob("*.sources"):
        for line in src.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _nspawn_pipe(rootfs: Path, binds: Sequence[str], command: str) -> None:
    """Run `command` in `rootfs` without booting (shares the host network: installs only)."""
    script = (
        "mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && "
        + shlex.join(
            [
                "systemd-nspawn", "-q", "-D", str(rootfs), "--register=no", "--keep-unit",
                "--pipe", *binds, "sh", "-c", command,
            ]
        )
    )  # fmt: skip
    _run(["unshare", "-m", "--propagation", "private", "sh", "-c", script])


def ensure_rootfs(cache_dir: Path = CACHE_DIR) -> Path:
    """Return the cached bookworm rootfs, building it first if missing or outdated (~1 min)."""
    final = cache_dir / f"rootfs-{SUITE}"
    with _locked(cache_dir):
        stamp = final / STAMP
        if stamp.exists() and stamp.read_text() == ROOTFS_VERSION:
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".rootfs-{SUITE}-", dir=cache_dir))
        try:
            _run(
                [
                    "debootstrap", "--variant=minbase", "--include=" + ",".join(ROOTFS_PACKAGES),
                    SUITE, str(tmp), _mirror(),
                ]
            )  # fmt: skip
            (tmp / "etc/hostname").write_text("berth-test\n")
            (tmp / STAMP).write_text(ROOTFS_VERSION)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def _deps_key(repo: Path) -> tuple[str, list[str]]:
    import tomllib

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    deps = sorted(project.get("dependencies", []))
    digest = hashlib.sha256("\n".join([ROOTFS_VERSION, *deps]).encode()).hexdigest()[:16]
    return digest, deps


def ensure_wheels(repo: Path = REPO, cache_dir: Path = CACHE_DIR) -> Path:
    """Return a cached directory of wheels for Berth's dependencies (for `--no-index`).

    Built on the host with `pip wheel` (the host and the container both run CPython 3.11
    on glibc); keyed by the dependency list in pyproject.toml. Berth itself is not in it:
    `pip wheel --no-deps REPO` builds that from the current tree in a second.
    """
    key, deps = _deps_key(repo)
    wheels = cache_dir / f"wheels-{key}"
    with _locked(cache_dir):
        if not (wheels / ".complete").exists():
            wheels.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), *deps])
            (wheels / ".complete").write_text(key)
    return wheels


def ensure_berth_venv(repo: Path = REPO, cache_dir: Path = CACHE_DIR) -> Path:
    """Return a cached venv (for `VENV_MOUNT` in the container) with Berth's dependencies.

    Keyed by the dependency list in pyproject.toml. The venv runs `berth` from the
    repository mounted at `SRC_MOUNT` (`Container(..., mount_repo=True)`).
    """
    rootfs = ensure_rootfs(cache_dir)
    wheels = ensure_wheels(repo, cache_dir)
    key, deps = _deps_key(repo)
    venv = cache_dir / f"venv-{key}"
    with _locked(cache_dir):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        site = "lib/python3.11/site-packages"
        command = (
            f"python3 -m venv {VENV_MOUNT} && "
            f"{VENV_MOUNT}/bin/pip install -q --no-index --find-links /opt/berth-wheels "
            + " ".join(shlex.quote(d) for d in deps)
            + f" && echo {SRC_MOUNT} > {VENV_MOUNT}/{site}/berth-src.pth"
            + f" && printf '#!{VENV_MOUNT}/bin/python3\\nimport sys\\nfrom agent.cli import main\\n"
            f"sys.exit(main())\\n' > {VENV_MOUNT}/bin/berth && chmod 755 {VENV_MOUNT}/bin/berth"
        )
        try:
            _nspawn_pipe(
                rootfs,
                [f"--bind={venv}:{VENV_MOUNT}", f"--bind-ro={wheels}:/opt/berth-wheels"],
                command,
            )
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (venv / ".complete").write_text(key)
        return venv


class Container:
    """A booted systemd container on a copy-on-write rootfs in a fresh network namespace.

    Use as a context manager, or call `start()` and `stop()`. `netns` names the network
    namespace (under /run/netns) so a test can wire veth pairs into it.
    """

    def __init__(
        self,
        rootfs: Path,
        *,
        binds_ro: Sequence[tuple[Path, str]] = (),
        venv: Path | None = None,
        mount_repo: bool = False,
        boot_timeout: float = 60.0,
    ) -> None:
        self.rootfs = rootfs
        self.binds_ro = list(binds_ro)
        if venv is not None:
            self.binds_ro.append((venv, VENV_MOUNT))
        if mount_repo:
            self.binds_ro.append((REPO, SRC_MOUNT))
        self.boot_timeout = boot_timeout
        self.name = "berth-" + uuid.uuid4().hex[:8]
        self.netns = self.name
        self.pid: int | None = None  # the container's systemd (PID 1 inside)
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "boot.log"

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="berth-ct-"))
        for d in ("upper", "work", "merged"):
            (self._tmp / d).mkdir()
        try:
            _run(["ip", "netns", "add", self.netns], timeout=30)
            self._boot()
            self._wait_running()
        except BaseException:
            self.stop()
            raise

    def _boot(self) -> None:
        assert self._tmp is not None
        t = self._tmp
        binds = [f"--bind-ro={src}:{dest}" for src, dest in self.binds_ro]
        nspawn = [
            "systemd-nspawn", "-q", "-D", str(t / "merged"), "-M", self.name, "-b",
            "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{self.netns}",
            "--capability=CAP_NET_ADMIN", "--console=read-only", *binds,
        ]  # fmt: skip
        # Everything mounted here lives in the private mount namespace only, and goes
        # away with it: the tmpfs nspawn needs, and the overlay that keeps the cache clean.
        script = (
            "set -e; mkdir -p /run/systemd/nspawn; mount -t tmpfs tmpfs /run/systemd/nspawn; "
            f"mount -t overlay overlay -o lowerdir={self.rootfs},upperdir={t / 'upper'},"
            f"workdir={t / 'work'} {t / 'merged'}; exec " + shlex.join(nspawn)
        )
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_running(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"container exited at boot:\n{self.log_path.read_text()[-3000:]}"
                )
            if self.pid is None:
                self.pid = self._find_pid()
            if self.pid is not None:
                state = self.exec(["systemctl", "is-system-running"]).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"container not running after {self.boot_timeout}s (state {state!r})")

    def _find_pid(self) -> int | None:
        """The container's init: the child of systemd-nspawn (unshare execs sh, sh execs it)."""
        assert self._proc is not None
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text()
        except FileNotFoundError:
            return None
        pids = [int(p) for p in children.split()]
        if not pids:
            return None
        # nspawn's short-lived intermediate child is its child too: only a process that
        # already runs systemd is the container's init (else exec() targets a dead pid)
        try:
            comm = Path(f"/proc/{pids[0]}/comm").read_text().strip()
        except FileNotFoundError:
            return None
        return pids[0] if comm == "systemd" else None

    def exec(
        self,
        cmd: Sequence[str] | str,
        *,
        input: str | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` (argv, or a string for `sh -c`) inside the container, as its root."""
        assert self.pid is not None, "container not started"
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "--", *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"in container: {shlex.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def write_file(self, dest: str, content: str | bytes, mode: int = 0o644) -> None:
        """Create or replace the file `dest` inside the running container."""
        data = content.encode() if isinstance(content, str) else content
        assert self.pid is not None, "container not started"
        script = f"mkdir -p {shlex.quote(os.path.dirname(dest))} && cat > {shlex.quote(dest)} && chmod {mode:o} {shlex.quote(dest)}"
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "--", "sh", "-c", script],
            input=data,
            capture_output=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"copy into container {dest}: {proc.stderr.decode()}")

    def copy_in(self, src: Path, dest: str) -> None:
        self.write_file(dest, src.read_bytes(), src.stat().st_mode & 0o7777)

    def add_uplink(self, address: str = "192.0.2.10/24") -> None:
        """Give the container a routable address on a link that goes nowhere (TEST-NET-1).

        systemd-resolved sends no query to its global DNS servers while no non-loopback
        link has a routable address ("Network is down"); a real server always has one.
        A veth pair with both ends inside the container's namespace (the kernel here has
        no dummy links), configured from the host.
        """
        ns = ["ip", "-n", self.netns]
        _run(
            [*ns, "link", "add", "berth-up0", "type", "veth", "peer", "name", "berth-up1"],
            timeout=30,
        )
        _run([*ns, "addr", "add", address, "dev", "berth-up0"], timeout=30)
        for dev in ("berth-up0", "berth-up1"):
            _run([*ns, "link", "set", dev, "up"], timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """Power off (falling back to killing our nspawn), then remove netns and temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if self.pid is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(
                        ["nsenter", "-t", str(self.pid), "-a", "systemctl", "poweroff"],
                        capture_output=True,
                        timeout=10,
                    )
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # unshare exec'd sh which exec'd systemd-nspawn: proc.pid is nspawn itself
                proc.kill()
                proc.wait(10)
        self.pid = None
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


if __name__ == "__main__":
    # `python -m tests.support.container` pre-builds the caches (rootfs, then venv).
    print(ensure_rootfs())
    print(ensure_berth_venv())
