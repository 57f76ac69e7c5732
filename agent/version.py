"""Berth's own version: the one this process runs, the one a wheel's file name carries, and
whether an agent is behind the version its control plane serves.

Pure apart from `installed()`. Comparison follows PEP 440 for the shapes Berth's versions
take (`1.2.3`, `1.2.3rc1`, `1.2.3.dev4`, `1.2.3.post1`, a `+local` part is ignored), so the
agent needs no extra dependency for it; anything else is "unknown", never a guess.
"""

import re
from importlib import metadata

UNKNOWN = "0+unknown"
_PHASES = {"dev": 0, "a": 1, "b": 2, "rc": 3}  # a final release sorts after all of these
_FINAL = 4
_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[.-]?(?P<pre>a|b|rc)(?P<pre_n>\d*))?"
    r"(?:[.-]?post(?P<post>\d*))?"
    r"(?:[.-]?dev(?P<dev>\d*))?"
    r"(?:\+[A-Za-z0-9.]+)?$"
)
_HREF = re.compile(r'href="([^"/?#]+)"')
# berth-<version>-<python tag>-<abi tag>-<platform tag>.whl (PEP 427)
_WHEEL = re.compile(r"^berth-(?P<version>[^-]+)-[^-]+-[^-]+-[^-]+\.whl$")

VersionKey = tuple[tuple[int, ...], int, int, int, int]


def installed() -> str:
    """The version of the Berth package this interpreter imports."""
    try:
        return metadata.version("berth")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def parse(version: str) -> VersionKey:
    """A sort key for `version`; ValueError (naming the value) when it is not one."""
    m = _VERSION.match(version.strip().lower())
    if m is None:
        raise ValueError(f"version: {version!r} is not a version such as 1.2.3")
    release = tuple(int(p) for p in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]  # 1.2 == 1.2.0
    if m["pre"]:
        phase, n = _PHASES[m["pre"]], int(m["pre_n"] or 0)
    elif m["dev"] is not None and m["post"] is None:
        phase, n = _PHASES["dev"], 0  # 1.2.dev3 sorts before 1.2a1
    else:
        phase, n = _FINAL, 0
    post = int(m["post"]) + 1 if m["post"] is not None else 0
    dev = int(m["dev"] or 0) if m["dev"] is not None else 1 << 30  # a .devN sorts first
    return release, phase, n, post, dev


def is_behind(agent: str | None, served: str | None) -> bool | None:
    """True when `agent` is older than `served`; None when either is missing or not a
    version (an agent that reports nothing is not called behind, only unknown)."""
    if not agent or not served:
        return None
    try:
        return parse(agent) < parse(served)
    except ValueError:
        return None


def wheel_version(filename: str) -> str | None:
    """The version in a Berth wheel's file name, or None when it is not one."""
    m = _WHEEL.match(filename)
    return m["version"] if m else None


def served_version(filenames: list[str]) -> str | None:
    """The newest Berth wheel among a wheelhouse's file names (it holds one normally)."""
    found = [v for v in map(wheel_version, filenames) if v is not None]
    good = []
    for v in found:
        try:
            good.append((parse(v), v))
        except ValueError:
            continue
    return max(good)[1] if good else None


def index_links(page: str) -> list[str]:
    """The file names a `/dist/` index page (a pip "find-links" page) links to."""
    return _HREF.findall(page)
