"""Fixtures shared by the reconciler's tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.reconciler.shutdown import stop_recorded_services
from agent.settings import AgentSettings
from tests.support.dirs import world_dir


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A directory every user can reach; services a test leaves running are stopped."""
    with world_dir() as d:
        try:
            yield d
        finally:  # a failing test must not leave services behind
            if (d / "state" / "agent.sqlite3").exists():
                stop_recorded_services(AgentSettings(state_dir=d / "state", run_dir=d / "run"))
