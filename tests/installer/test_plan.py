"""The installer's pure decisions and small file formats, without touching the system."""

import io
import tarfile
import time
from pathlib import Path

import pytest

from agent.bus.messages import Route, RouteTable
from controlplane.public import dist_files, dist_index
from installer import plan
from installer.dnswire import names_from
from installer.layout import Layout
from installer.wheelhouse import units_tarball

REPO = Path(__file__).resolve().parents[2]
CP = "https://cp.example.com"


def opts(**kw: object) -> plan.InstallOptions:
    return plan.InstallOptions(**{"control_plane": CP, "token": "tok_1", **kw})  # type: ignore[arg-type]


def test_valid_options_are_normalised() -> None:
    got = plan.validate(opts(control_plane="http://10.0.0.1:8000/", ssh_cidrs=("203.0.113.7/32",)))
    assert got.control_plane == "http://10.0.0.1:8000"


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"control_plane": "ftp://x"}, "--control-plane"),
        ({"control_plane": "cp.example.com"}, "--control-plane"),
        ({"control_plane": "https://cp.example.com/?a=b"}, "--control-plane"),
        ({"control_plane": "https://cp example.com"}, "--control-plane"),
        ({"token": ""}, "--token"),
        ({"token": "a b"}, "--token"),
        ({"security_mode": "closed"}, "--security-mode"),
        ({"ssh_cidrs": ("10.0.0.0/33",)}, "--ssh-cidr"),
        ({"ssh_port": 0}, "--ssh-port"),
        ({"confirm_timeout_s": -1.0}, "--confirm-timeout"),
        ({"dns_wiring": "magic"}, "--dns-wiring"),
        ({"firewall_backend": "pf"}, "--firewall-backend"),
        ({"extra_agent_args": ("--x=$(reboot)",)}, "--agent-arg"),
    ],
)
def test_bad_options_name_the_flag(kw: dict[str, object], flag: str) -> None:
    with pytest.raises(plan.PlanError) as err:
        plan.validate(opts(**kw))
    assert err.value.flag == flag and str(err.value).startswith(flag)


def test_agent_env_round_trips_and_refuses_unsafe_words() -> None:
    args = plan.agent_args(plan.validate(opts()), Layout())
    text = plan.render_agent_env(args)
    assert plan.parse_agent_env(text) == args
    assert (
        "--control-plane https://cp.example.com --state-dir /var/lib/berth --run-dir /run/berth"
        in text
    )
    with pytest.raises(plan.PlanError):
        plan.render_agent_env(["--x", "two words"])


def test_mode_choice_flag_then_stack_then_open() -> None:
    assert plan.choose_mode("tunnel-only", "proxy-only")[0] == "tunnel-only"
    assert "the stack says proxy-only" in plan.choose_mode("tunnel-only", "proxy-only")[1]
    assert plan.choose_mode(None, "proxy-only") == (
        "proxy-only",
        "the stack's security_mode (proxy-only)",
    )
    assert plan.choose_mode(None, None)[0] == "open"


def test_firewall_command() -> None:
    o = plan.validate(opts(ssh_cidrs=("203.0.113.7/32",), allow_ssh_lockout=True))
    argv = plan.firewall_argv(o, "proxy-only", 8080, Layout(), consent=False)
    assert argv[:3] == ["apply", "--mode", "proxy-only"]
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/berth-firewall"
    assert argv[argv.index("--proxy-port") + 1] == "8080"
    assert argv[argv.index("--ssh-cidr") + 1] == "203.0.113.7/32"
    assert "--allow-ssh-lockout" in argv and "--consent-block-ssh" not in argv
    assert "--consent-block-ssh" in plan.firewall_argv(o, "tunnel-only", None, Layout(), True)


def test_layout_under_another_root(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.agent_env == tmp_path / "etc/berth/agent.env"
    assert tmp_path / "var/lib/private/berth-dns" in layout.data_dirs()


def test_units_tarball_is_reproducible_and_complete() -> None:
    one = units_tarball(REPO / "systemd")
    time.sleep(1.1)  # the gzip header must not carry the time of day
    assert units_tarball(REPO / "systemd") == one
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        names = tar.getnames()
    assert "berth-agent.target" in names and "berth.tmpfiles.conf" in names
    assert all("/" not in n for n in names)


def test_dist_listing_serves_only_plain_files(tmp_path: Path) -> None:
    (tmp_path / "berth-0.1.0-py3-none-any.whl").write_bytes(b"x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a b.whl").write_text("x")
    names = dist_files(tmp_path)
    assert names == ["berth-0.1.0-py3-none-any.whl"]
    assert '<a href="berth-0.1.0-py3-none-any.whl">' in dist_index(names)
    assert dist_files(tmp_path / "missing") == []


def test_wire_dns_reads_only_valid_names(tmp_path: Path) -> None:
    assert names_from(tmp_path / "none.json") == ([], "svc.internal")
    table = RouteTable(
        version=(1, 1),
        routes=(Route("api", 9000, "/api"), Route("bad name; rm -rf", 9001, "/x")),
    )
    cache = tmp_path / "dns-routes.json"
    cache.write_bytes(table.to_json())
    names, suffix = names_from(cache)
    assert names == ["api.svc.internal"] and suffix == "svc.internal"


def test_control_plane_serves_scripts_and_only_wheelhouse_files(tmp_path: Path) -> None:
    import asyncio

    from controlplane.app import create_app
    from controlplane.settings import ServerSettings
    from tests.support.controlplane import migrate

    db = f"sqlite:///{tmp_path / 'cp.sqlite3'}"
    migrate(db)
    house = tmp_path / "wheelhouse"
    house.mkdir()
    (house / "berth-0.1.0-py3-none-any.whl").write_bytes(b"PK-wheel")
    (tmp_path / "secret.txt").write_text("no")

    async def run() -> None:
        app = create_app(
            ServerSettings(db_url=db, public_url="http://cp.test:8000", wheelhouse=str(house))
        )
        async with app.test_app() as test_app:
            client = test_app.test_client()
            script = await (await client.get("/install.sh")).get_data(as_text=True)
            assert (
                "CP_URL='http://cp.test:8000'" in script and "@BERTH_CONTROL_PLANE@" not in script
            )
            assert (await client.get("/uninstall.sh")).status_code == 200
            listing = await (await client.get("/dist/")).get_data(as_text=True)
            assert 'href="berth-0.1.0-py3-none-any.whl"' in listing
            wheel = await client.get("/dist/berth-0.1.0-py3-none-any.whl")
            assert wheel.status_code == 200 and await wheel.get_data() == b"PK-wheel"
            for bad in (
                "/dist/..%2Fsecret.txt",
                "/dist/../secret.txt",
                "/dist/.hidden",
                "/dist/nope.whl",
            ):
                assert (await client.get(bad)).status_code == 404, bad
        bare = create_app(ServerSettings(db_url=db))
        async with bare.test_app() as test_app:
            resp = await test_app.test_client().get("/dist/")
            assert resp.status_code == 404 and "--wheelhouse" in await resp.get_data(as_text=True)

    asyncio.run(run())
