"""Issue 15 item 15: what `/install.sh` serves, and what the script refuses by itself.

- Without `--public-url` the control plane refuses to serve it (the URL would otherwise
  come from the request's Host header, which any client sets).
- `Cache-Control: no-store`, and the SHA-256 of every wheel and of the units tarball
  embedded in the script (install.sh verifies them before installing; the end-to-end test
  in the booted container swaps a wheel after the script was fetched).
- Plain http to a public address is refused unless `--insecure-http` is given.
"""

import asyncio
import hashlib
import subprocess
from pathlib import Path

import pytest

from controlplane.app import create_app
from controlplane.settings import ServerSettings
from installer.layout import UNITS_TARBALL
from tests.support.controlplane import migrate
from tests.support.env import require_root


def fetch(tmp_path: Path, public_url: str | None, **headers: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    db = f"sqlite:///{tmp_path / 'cp.sqlite3'}"
    migrate(db)
    house = tmp_path / "wheelhouse"
    house.mkdir(exist_ok=True)
    (house / "berth-0.1.0-py3-none-any.whl").write_bytes(b"PK-berth")
    (house / "requests-2.0-py3-none-any.whl").write_bytes(b"PK-requests")
    (house / UNITS_TARBALL).write_bytes(b"units")

    async def run() -> tuple[int, str, dict]:  # type: ignore[type-arg]
        app = create_app(ServerSettings(db_url=db, public_url=public_url, wheelhouse=str(house)))
        async with app.test_app() as test_app:
            resp = await test_app.test_client().get("/install.sh", headers=headers)
            return resp.status_code, await resp.get_data(as_text=True), dict(resp.headers)

    return asyncio.run(run())


def test_refused_without_public_url_whatever_the_host(tmp_path: Path) -> None:
    status, body, _ = fetch(tmp_path, None, Host="attacker.example")
    assert status == 404 and "--public-url" in body and "attacker.example" not in body


def test_no_store_and_every_file_hash_embedded(tmp_path: Path) -> None:
    status, script, headers = fetch(tmp_path, "http://cp.test:8000", Host="attacker.example")
    assert (
        status == 200 and {k.lower(): v for k, v in headers.items()}["cache-control"] == "no-store"
    )
    assert "CP_URL='http://cp.test:8000'" in script and "attacker.example" not in script
    house = tmp_path / "wheelhouse"
    for path in house.iterdir():
        line = f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
        assert line in script, line
    assert "@BERTH_DIST_SHA256@" not in script


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s", "--", *args], input=script, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("host", ["203.0.113.7", "cp.example.com", "172.32.0.1", "[2001:db8::1]"])
def test_plain_http_to_a_public_address_is_refused(tmp_path: Path, host: str) -> None:
    require_root()  # the script checks for root first
    _, script, _ = fetch(tmp_path, f"http://{host}:8000")
    done = run_script(script, "--token", "t")
    assert done.returncode != 0 and "--insecure-http" in done.stderr, done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.1.2", "172.16.0.9",
                                  "localhost", "[::1]", "[fd00::5]"])  # fmt: skip
def test_plain_http_to_loopback_or_private_addresses_passes_that_check(
    tmp_path: Path, host: str
) -> None:
    _, script, _ = fetch(tmp_path, f"http://{host}:8000")
    check = subprocess.run(["sh", "-c", _url_check(script), "-", f"http://{host}:8000"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_insecure_http_flag_allows_a_public_address(tmp_path: Path) -> None:
    _, script, _ = fetch(tmp_path, "http://203.0.113.7:8000")
    check = subprocess.run(["sh", "-c", _url_check(script), "-", "http://203.0.113.7:8000", "yes"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stderr
    refused = subprocess.run(["sh", "-c", _url_check(script), "-", "http://203.0.113.7:8000"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode != 0 and "--insecure-http" in refused.stderr


def _url_check(script: str) -> str:
    """The script's `say`/`die` and its `check_http_url` function, then a call of it with
    $1 (URL) and $2 (insecure: yes/no): the one check, run without the rest."""
    start = script.index("say() {")
    helpers = script[start : script.index("\n", script.index("die() {")) + 1]
    body = script[script.index("check_http_url() {") : script.index("\n}\n", script.index("check_http_url() {")) + 3]  # fmt: skip
    return f'{helpers}{body}check_http_url "$1" "${{2:-no}}"\n'
