"""A fresh "server" for the installer's end-to-end test, and a control plane to install from.

* `ensure_server_rootfs()`: the shared cached bookworm rootfs (tests/support/container.py)
  plus `git` (the reconciler clones with it), copied once into its own cache entry and
  stamped, so the shared rootfs stays as the other tests expect it.
* `ensure_wheelhouse()`: what the control plane serves at /dist/ — built by the real
  `berth installer wheelhouse` from the working tree, offline (dependency wheels from
  `ensure_wheels()`, setuptools/wheel cached beside them).
* `Server`: a booted systemd container (`Container`) that can be rebooted on the same
  overlay (power off, boot again: its disk survives, its processes do not), joined to
  the host by a veth pair: host side `host_ip`, container side `ip`, a /24 of 10.197.x
  picked per process. Nothing else in the machine's own network is changed, and deleting
  the container's namespace removes the pair.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.container import (
    CACHE_DIR,
    REPO,
    STAMP,
    Container,
    _locked,
    _nspawn_pipe,
    _run,
    ensure_rootfs,
    ensure_wheels,
)

SERVER_PACKAGES = ("git",)


def ensure_server_rootfs(cache_dir: Path = CACHE_DIR) -> Path:
    base = ensure_rootfs(cache_dir)
    version = base.joinpath(STAMP).read_text() + "+" + ",".join(SERVER_PACKAGES)
    final = cache_dir / "rootfs-bookworm-server"
    with _locked(cache_dir):
        if (final / STAMP).exists() and (final / STAMP).read_text() == version:
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".rootfs-server-", dir=cache_dir))
        try:
            _run(["cp", "-a", "--reflink=auto", f"{base}/.", str(tmp)])
            # no boot, the host's network: package installs only (see systemd-nspawn.md)
            # the rootfs's resolv.conf points at resolved's stub, which is not running here
            _nspawn_pipe(
                tmp,
                ["--bind-ro=/etc/resolv.conf:/run/systemd/resolve/stub-resolv.conf"],
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                "--no-install-recommends " + " ".join(SERVER_PACKAGES) + " && apt-get clean",
            )
            (tmp / STAMP).write_text(version)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_wheelhouse(dest: Path, cache_dir: Path = CACHE_DIR) -> Path:
    deps = ensure_wheels(REPO, cache_dir)
    build = cache_dir / "build-wheels"
    with _locked(cache_dir):
        if not (build / ".complete").exists():
            build.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(build),
                  "setuptools>=68", "wheel"])  # fmt: skip
            (build / ".complete").write_text("ok")
    _run([sys.executable, "-m", "agent.cli", "installer", "wheelhouse", str(dest),
          "--source", str(REPO), "--no-index", "--find-links", str(deps),
          "--find-links", str(build)], timeout=300)  # fmt: skip
    return dest


class Server(Container):
    def __init__(self, rootfs: Path) -> None:
        super().__init__(rootfs, boot_timeout=90)
        n = os.getpid() % 250
        self.host_ip, self.ip = f"10.197.{n}.1", f"10.197.{n}.2"
        tag = self.name.removeprefix("berth-")[:8]
        self.veth_host, self.veth_ct = f"bh{tag}", f"bc{tag}"

    def start(self) -> None:
        super().start()
        try:
            _run(
                ["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ct]
            )
            _run(["ip", "link", "set", self.veth_ct, "netns", self.netns])
            _run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.veth_host])
            _run(["ip", "link", "set", self.veth_host, "up"])
            _run(["ip", "-n", self.netns, "addr", "add", f"{self.ip}/24", "dev", self.veth_ct])
            _run(["ip", "-n", self.netns, "link", "set", self.veth_ct, "up"])
        except BaseException:
            self.stop()
            raise

    def reboot(self, timeout: float = 60) -> None:
        """Power off and boot the same overlay again: disk kept, processes gone."""
        assert self._proc is not None
        proc = self._proc
        self.exec(["systemctl", "poweroff"], timeout=30)
        proc.wait(timeout)
        self.pid = None
        self._boot()
        self._wait_running()

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)  # deleting the namespace deletes the veth pair too
        subprocess.run(["ip", "link", "del", self.veth_host], capture_output=True, timeout=30)
