"""Fixtures for the DNS tests (helpers live in `tests.agent.dns.helpers`)."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.dns.helpers import Responder, ThreadPublisher


@pytest.fixture
def state_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="berth-dns-test-"))
    d.chmod(0o755)
    for sub in ("run", "cache"):
        (d / sub).mkdir()
        (d / sub).chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bus(state_dir: Path) -> Iterator[ThreadPublisher]:
    pub = ThreadPublisher(state_dir / "run")
    yield pub
    pub.close()


@pytest.fixture
def responder(state_dir: Path, bus: ThreadPublisher) -> Iterator[Responder]:
    r = Responder(state_dir)
    yield r
    assert r.stop() == 0
    log = r.log.read_text()
    assert "Traceback" not in log and " error " not in log, log
