"""Requirements of tests: skip on a laptop, fail under CI=true (nothing may skip in CI)."""

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but requirement unmet: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces, ports below 1024, firewall)")


def require_tool(*names: str) -> None:
    for name in names:
        require(
            shutil.which(name) is not None,
            f"needs {name} (tests/install-system-deps.sh installs it)",
        )
