"""`berth controlplane ...` as real processes."""

from pathlib import Path

from tests.controlplane.harness import Api, ControlPlane, berth
from tests.support.controlplane import create_admin_token, migrate


def test_serve_refuses_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    run = berth("controlplane", "serve", "--db", url, "--bind", "127.0.0.1:1")
    assert run.returncode == 1
    assert "berth controlplane migrate" in run.stderr and "no Berth schema" in run.stderr
    assert not (tmp_path / "fresh.db").exists()  # looking did not create it


def test_migrate_token_lifecycle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/cp.db"
    env = {"BERTH_DB": url}
    mig = berth("controlplane", "migrate", env=env)
    assert mig.returncode == 0, mig.stderr
    assert berth("controlplane", "migrate", env=env).returncode == 0  # idempotent
    made = berth("controlplane", "token", "create", "--name", "ops", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert made.stdout.count("\n") == 1 and token.startswith("berth_adm_")
    listed = berth("controlplane", "token", "list", env=env)
    assert "ops" in listed.stdout and token not in listed.stdout and "active" in listed.stdout

    server = ControlPlane(url, tmp_path)
    try:
        assert Api(server.url, token).get("/stacks").status_code == 200
        assert berth("controlplane", "token", "revoke", "ops", env=env).returncode == 0
        resp = Api(server.url, token).get("/stacks")
        assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
    finally:
        server.stop()
    assert berth("controlplane", "token", "revoke", "ops", env=env).returncode == 1


def test_bad_db_url_and_name(tmp_path: Path) -> None:
    run = berth("controlplane", "migrate", "--db", "mysql://x/y")
    assert run.returncode == 2 and "--db" in run.stderr
    url = f"sqlite:///{tmp_path}/cp.db"
    migrate(url)
    assert berth("controlplane", "token", "create", "--name", " ", "--db", url).returncode == 2


def test_testing_helpers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    migrate(url)
    assert create_admin_token(url, "demo").startswith("berth_adm_")


def test_heartbeat_interval_is_bounded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cp.db"
    for bad in ("61", "0", "soon"):
        run = berth("controlplane", "serve", "--db", url, "--heartbeat-interval", bad)
        assert run.returncode == 2, run.stderr
        assert "--heartbeat-interval" in run.stderr and "1 to 60 seconds" in run.stderr
