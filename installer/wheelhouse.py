"""`berth installer wheelhouse DIR`: fill the directory the control plane serves at /dist/.

A server being installed reaches nothing but the control plane, so everything install.sh
needs is in one directory: the Berth wheel, the wheels of all its dependencies (`pip
wheel`), and `berth-systemd.tar.gz` with the unit files. The control plane serves it with
`berth controlplane serve --wheelhouse DIR`; install.sh runs
`pip install --no-index --find-links <cp>/dist/ berth`.

Berth is built from a copy of its source tree (only what the package needs), so building
never writes `build/` or egg-info into a working tree. Extra arguments go to `pip wheel`
(e.g. `--no-index --find-links LOCAL` on a machine without a registry).
"""

import argparse
import gzip
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from installer.layout import UNITS_TARBALL

SOURCE_ITEMS = ("pyproject.toml", "README.md", "agent", "controlplane", "installer")
UNIT_SUFFIXES = (".service", ".target", ".path", ".conf")


def units_tarball(units_dir: Path) -> bytes:
    """The unit files as a gzip'd tar with fixed metadata (same input, same bytes)."""
    buf = io.BytesIO()
    # plain tar first: tarfile's gzip mode stamps the current time into the gzip header
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(units_dir.iterdir()):
            if path.is_file() and path.name.endswith(UNIT_SUFFIXES):
                info = tarfile.TarInfo(path.name)
                data = path.read_bytes()
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)


def build(dest: Path, source: Path, pip_args: Sequence[str] = ()) -> list[str]:
    """Build the wheelhouse in `dest`; return the file names in it."""
    missing = [i for i in SOURCE_ITEMS if not (source / i).exists()]
    if missing or not (source / "systemd").is_dir():
        raise SystemExit(
            f"berth installer wheelhouse: {source} is not a Berth source tree "
            f"(missing {', '.join(missing) or 'systemd/'}); pass --source DIR"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("berth-*.whl"):
        old.unlink()  # one Berth version per wheelhouse: pip must not pick a stale one
    with tempfile.TemporaryDirectory(prefix="berth-wheel-") as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for item in SOURCE_ITEMS:
            src = source / item
            if src.is_dir():
                shutil.copytree(src, tree / item, ignore=ignore)
            else:
                shutil.copy2(src, tree / item)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--wheel-dir", str(dest), *pip_args, str(tree)],
            check=True,
        )  # fmt: skip
    (dest / UNITS_TARBALL).write_bytes(units_tarball(source / "systemd"))
    return sorted(p.name for p in dest.iterdir() if p.is_file())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="berth installer wheelhouse", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dest", type=Path, metavar="DIR")
    parser.add_argument(
        "--source", type=Path, default=Path.cwd(), help="Berth source tree (default: .)"
    )
    args, pip_args = parser.parse_known_args(argv)
    names = build(args.dest, args.source.resolve(), pip_args)
    print(f"{args.dest}: {len(names)} files ({sum(n.endswith('.whl') for n in names)} wheels)")
    return 0
