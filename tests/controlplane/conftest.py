"""Fixtures of the control-plane tests: every module runs against SQLite and PostgreSQL.

PostgreSQL is a throwaway cluster started once per session as user `nobody` (initdb
refuses root), each test module gets its own database in it. Under CI=true a missing
PostgreSQL fails instead of skipping.
"""

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.harness import Api, ControlPlane
from tests.support.controlplane import create_admin_token, migrate
from tests.support.env import require, require_root
from tests.support.gitrepo import commit_files, init_repo
from tests.support.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """postgresql+psycopg://test@127.0.0.1:PORT/ of a cluster that lives for the session."""
    require_root()
    require((PG_BIN / "initdb").exists(), "needs PostgreSQL 15 (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="berth-pg-", dir="/tmp"))
    shutil.chown(tmp, "nobody", "nogroup")
    port = free_port()

    def as_nobody(*args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "nobody", "--", *args], check=True, capture_output=True, timeout=60
        )

    try:
        as_nobody(str(PG_BIN / "initdb"), "-D", f"{tmp}/data", "-A", "trust", "-U", "test", "-N")
        as_nobody(
            str(PG_BIN / "pg_ctl"), "-D", f"{tmp}/data", "-l", f"{tmp}/log", "-w", "start", "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        )  # fmt: skip
        yield f"postgresql+psycopg://test@127.0.0.1:{port}/"
    finally:
        subprocess.run(
            ["runuser", "-u", "nobody", "--", str(PG_BIN / "pg_ctl"), "-D", f"{tmp}/data", "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


def new_database(kind: str, request: pytest.FixtureRequest, where: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{where}/berth-{uuid.uuid4().hex[:8]}.db"
    import psycopg

    base = request.getfixturevalue("pg_base_url")
    name = f"berth_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        base.replace("postgresql+psycopg", "postgresql") + "postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base + name


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = new_database(request.param, request, tmp_path_factory.mktemp("db"))
    migrate(url)
    return url


@pytest.fixture(scope="module")
def admin_token(db_url: str) -> str:
    return create_admin_token(db_url, "tests")


@pytest.fixture(scope="module")
def server(
    db_url: str, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path_factory.mktemp("logs"))
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def api(server: ControlPlane, admin_token: str) -> Api:
    return Api(server.url, admin_token)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = init_repo(tmp_path_factory.mktemp("git") / "app")
    commit_files(path, {"app.py": "print('v1')\n", "version.txt": "v1\n"}, "v1")
    return path


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")


@pytest.fixture(scope="module")
def server_url(server: ControlPlane) -> str:
    return server.url
