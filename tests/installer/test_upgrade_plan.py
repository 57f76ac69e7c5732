"""The pure parts of agent upgrades (issue 16): version comparison, the served version from
a wheelhouse, what to install, keep-or-switch-back, pruning, and the agent's request."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import version as versions
from agent.reconciler import upgraderequest
from installer import upgradeplan
from installer.upgradeplan import RESTART_ORDER, UpgradeError, target_version, verdict

# each strictly older than the next (PEP 440 order)
ORDERED = ["0.9", "1.0.dev1", "1.0a1", "1.0a2.dev1", "1.0a2", "1.0b1", "1.0rc1", "1.0",
           "1.0.post1.dev1", "1.0.post1", "1.0.1", "1.1", "1.10", "2.0.0.dev0"]  # fmt: skip


def test_versions_sort_as_pep_440() -> None:
    keys = [versions.parse(v) for v in ORDERED]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for older, newer in zip(ORDERED, ORDERED[1:], strict=False):
        assert versions.is_behind(older, newer) is True, (older, newer)
        assert versions.is_behind(newer, older) is False, (newer, older)


def test_equal_versions_and_unknowns() -> None:
    assert versions.parse("1.2") == versions.parse("1.2.0") == versions.parse("v1.2.0+local.3")
    assert versions.is_behind("1.2.0", "1.2") is False
    for agent, served in [(None, "1.0"), ("1.0", None), ("banana", "1.0"), ("1.0", "1..0")]:
        assert versions.is_behind(agent, served) is None
    with pytest.raises(ValueError, match="'1.0-final'"):
        versions.parse("1.0-final")


def test_served_version_from_a_wheelhouse() -> None:
    names = ["requests-2.31.0-py3-none-any.whl", "berth-0.1.0-py3-none-any.whl",
             "berth-systemd.tar.gz", "berth_other-9.0-py3-none-any.whl"]  # fmt: skip
    assert versions.served_version(names) == "0.1.0"
    assert versions.served_version(names + ["berth-0.2.0rc1-py3-none-any.whl"]) == "0.2.0rc1"
    assert versions.served_version(["berth-systemd.tar.gz"]) is None
    page = '<a href="berth-0.3.0-py3-none-any.whl">x</a><br><a href="../etc">y</a>'
    assert versions.index_links(page) == ["berth-0.3.0-py3-none-any.whl"]


def test_what_to_install() -> None:
    assert target_version("0.1.0", "0.2.0", None, False) == ("0.2.0", "0.1.0 -> 0.2.0")
    want, why = target_version("0.2.0", "0.2.0", None, False)
    assert want is None and "already at 0.2.0" in why
    assert target_version("0.3.0", "0.2.0", None, False)[0] is None  # never down by itself
    assert target_version("0.3.0", "0.2.0", "0.2.0", False)[0] == "0.2.0"  # asked by hand
    assert target_version("0.2.0", "0.2.0", None, True)[0] == "0.2.0"
    want, why = target_version("0.1.0", None, None, False)
    assert want is None and "--wheelhouse" in why
    with pytest.raises(UpgradeError, match="'latest'"):
        target_version("0.1.0", None, "latest", False)


def test_keep_only_when_every_unit_is_active_on_the_new_venv_and_heard_from() -> None:
    new, old = Path("/opt/berth/venvs/0.2.0-x"), Path("/opt/berth/venvs/0.1.0-x")
    active = dict.fromkeys(RESTART_ORDER, "active")
    on_new: dict[str, Path | None] = dict.fromkeys(RESTART_ORDER, new)
    assert verdict(new, active, on_new, True, 60).keep
    failed = {**active, "berth-reconciler.service": "activating"}
    v = verdict(new, failed, {}, None, 60)
    assert not v.keep and "berth-reconciler.service is activating" in v.reason
    v = verdict(new, active, {**on_new, "berth-proxy.service": old}, None, 60)
    assert not v.keep and f"berth-proxy.service runs from {old}" in v.reason
    v = verdict(new, active, on_new, False, 60)
    assert not v.keep and "no heartbeat" in v.reason and "60 s" in v.reason
    assert RESTART_ORDER[0] == "berth-firewall.service"
    assert RESTART_ORDER[-1] == "berth-reconciler.service"


def test_venv_names_and_pruning() -> None:
    when = datetime(2026, 11, 29, 15, 1, 2, tzinfo=UTC)
    assert upgradeplan.venv_dir_name("0.2.0", when) == "0.2.0-20261129T150102"
    assert upgradeplan.venv_dir_name("../x", when) == ".._x-20261129T150102"
    venvs = Path("/opt/berth/venvs")
    assert upgradeplan.venv_of("/opt/berth/venvs/a/bin/python", venvs) == venvs / "a"
    assert upgradeplan.venv_of("/usr/bin/python3", venvs) is None
    names = ["a", "b", "c", ".venv.switch"]
    assert upgradeplan.to_prune(names, "c", "b") == ["a"]
    assert upgradeplan.to_prune(names, "c", None) == ["a", "b"]
    infos = ["berth-0.2.0.dist-info", "requests-2.31.0.dist-info", "agent"]
    assert upgradeplan.version_of_dist_infos(infos) == "0.2.0"
    assert upgradeplan.version_of_dist_infos(["requests-2.31.0.dist-info"]) is None


def test_the_agent_requests_an_upgrade_only_when_asked_for_a_newer_version(
    tmp_path: Path,
) -> None:
    ask = {"ok": True, "upgrade": {"version": "0.2.0"}}
    assert upgraderequest.wanted(ask, "0.1.0", None) == "0.2.0"
    assert upgraderequest.wanted({"ok": True}, "0.1.0", None) is None
    assert upgraderequest.wanted(ask, "0.2.0", None) is None
    assert upgraderequest.wanted({"upgrade": {"version": "x y"}}, "0.1.0", None) is None
    assert upgraderequest.wanted({"upgrade": "0.2.0"}, "0.1.0", None) is None
    failed = {"to": "0.2.0", "outcome": "failed"}
    assert upgraderequest.wanted(ask, "0.1.0", failed) is None  # stopped: a person looks
    assert upgraderequest.wanted(ask, "0.1.0", {**failed, "to": "0.1.5"}) == "0.2.0"
    assert upgraderequest.request(tmp_path, "0.2.0") is True
    assert upgraderequest.request(tmp_path, "0.2.0") is False  # once
    assert json.loads((tmp_path / "upgrade-request").read_text()) == {"version": "0.2.0"}


def test_one_upgrade_at_a_time(tmp_path: Path) -> None:
    from installer.layout import Layout
    from installer.upgrade import locked

    layout = Layout(tmp_path)
    busy = pytest.raises(UpgradeError, match="another upgrade is running")
    with locked(layout), busy, locked(layout):
        pass
    with locked(layout):  # released
        pass


def test_the_root_side_reads_only_a_plain_request_of_the_reconciler_or_root(
    tmp_path: Path,
) -> None:
    import os

    from installer.upgrade import read_request

    req = tmp_path / "upgrade-request"
    assert read_request(req) is None  # none: nothing to do
    req.write_text('{"version": "0.2.0"}')
    assert read_request(req) == "0.2.0" and not req.exists()  # read once, removed
    target = tmp_path / "elsewhere"
    target.write_text('{"version": "0.2.0"}')
    req.symlink_to(target)
    with pytest.raises(UpgradeError, match="upgrade-request"):
        read_request(req)
    assert not req.is_symlink() and target.exists()  # dropped, what it named untouched
    if os.geteuid() == 0:  # a file of another user (e.g. a proxy's group member) is refused
        req.write_text('{"version": "0.2.0"}')
        os.chown(req, 65534, 65534)
        with pytest.raises(UpgradeError, match="not a file of berth"):
            read_request(req)
    req.write_text('{"version": "latest"}')
    with pytest.raises(UpgradeError, match="no valid version"):
        read_request(req)
