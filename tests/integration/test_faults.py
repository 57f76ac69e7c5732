"""The reconciler under faults, end to end (issue 4, "Surviving faults").

Each test runs a real control plane and real `berth agent run-all` processes (as root:
services run as an unprivileged user) against a real git repository, and breaks
something from the outside: kill -9 of the reconciler under load, a control-plane
outage, a crash-looping service, a reboot without the control plane, two agents on one
stack, a rollback to a kept release. Only the user API, the external proxy, /proc and
the agent's SQLite (read-only) are used to observe.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.integration.faultkit import (
    Agent,
    Load,
    agent_argv_for,
    kill9,
    make_repo,
    new_version,
    open_site,
    outbox_ids,
    reconciler_pid,
    serves,
    service,
    services_by_name,
    start_time,
)
from tests.support.berth import start_controlplane, stop, text, wait_until
from tests.support.dirs import world_dir
from tests.support.env import require_root
from tests.support.gitrepo import APP, commit_files
from tests.support.ports import free_port


@pytest.fixture
def workspace():
    require_root()  # services run as an unprivileged user, agents in private mount namespaces
    with world_dir("berth-faults-") as d:
        yield d


def test_kill9_reconciler_under_load_keeps_services_and_readopts(xprocess, workspace):
    repo = workspace / "repo"
    url = make_repo(repo)
    fixed_port = free_port()
    site = open_site(
        xprocess,
        workspace,
        "kill9",
        [service("app", url, "/"), service("fixed", url, "/fixed", port=fixed_port)],
    )
    try:
        agent = site.add_agent("agent-kill9")
        wait_until("v1 applied", lambda: site.all_applied(1))
        before = services_by_name(site.instance())
        pids = {name: s["pid"] for name, s in before.items()}
        ticks = {name: start_time(pid) for name, pid in pids.items()}

        def applied_reports() -> int:
            return len([e for e in site.events("stack") if e["message"].endswith(" applied")])

        reports = applied_reports()
        with Load([agent.proxy + "/", agent.proxy + "/fixed/x"]) as load:
            time.sleep(1)
            old = reconciler_pid(xprocess, agent)
            kill9(old)
            new = wait_until(
                "run-all to restart the reconciler",
                lambda: (p := reconciler_pid(xprocess, agent)) != old and p,
            )
            # the new reconciler re-adopted the services: it reports applied again, same pids
            wait_until(
                "the restarted reconciler to report applied",
                lambda: applied_reports() > reports,
            )
            after = services_by_name(site.instance())
            assert {n: s["pid"] for n, s in after.items()} == pids
            assert all(s["restarts"] == 0 for s in after.values())
            assert {n: start_time(p) for n, p in pids.items()} == ticks  # the same processes
            assert site.instance()["state"] == "applied"

            # and it carries on: a new commit is deployed under the same load, both kinds
            new_version(repo, "v2")
            assert site.api("POST", f"/stacks/{site.stack_id}/refresh")["changed"]
            wait_until("v2 applied", lambda: site.all_applied(2))
            assert serves(agent.proxy + "/", "v2") and serves(agent.proxy + "/fixed/y", "v2")
            result = load.stop()
        assert new != old
        assert result.failed == 0, result.failures[:10]
        assert result.ok > 50 and result.bodies["v1"] > 0 and result.bodies["v2"] > 0
        for pid in pids.values():  # the adopted v1 processes were stopped by the cutover
            wait_until(f"old pid {pid} to stop", lambda pid=pid: start_time(pid) is None)
    finally:
        site.close()


def test_controlplane_outage_loses_no_event(xprocess, workspace):
    url = make_repo(workspace / "repo")
    site = open_site(
        xprocess,
        workspace,
        "outage",
        [service("app", url, "/"), service("side", url, "/side")],
    )
    try:
        agent = site.add_agent("agent-outage")
        wait_until("v1 applied", lambda: site.all_applied(1))
        wait_until("the outbox to drain", lambda: not outbox_ids(agent))
        side_pid = services_by_name(site.instance())["side"]["pid"]
        cp_port = int(site.cp.url.rsplit(":", 1)[1])
        with Load([agent.proxy + "/"]) as load:
            stop(xprocess, site.cp.name)
            with pytest.raises(requests.ConnectionError):
                requests.get(site.cp.url + "/healthz", timeout=2)
            kill9(side_pid)  # a crash while nobody listens: crash + restart events queue up
            wait_until(
                "side to be restarted and serve",
                lambda: serves(agent.proxy + "/side/", "v1"),
            )
            queued = wait_until("crash and restart events in the outbox", lambda: outbox_ids(agent))
            time.sleep(2)  # the agent retries against a dead control plane meanwhile
            queued = outbox_ids(agent)
            assert len(queued) >= 2
            cp = start_controlplane(xprocess, site.cp.name, workspace, cp_port)
            site.api.http.headers["Authorization"] = f"Bearer {cp.admin_token}"
            wait_until("the outbox to drain", lambda: not outbox_ids(agent), timeout_s=60)
            result = load.stop()
        events = site.events()
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids))  # nothing stored twice
        assert set(queued) <= set(ids), set(queued) - set(ids)
        crashes = [e for e in events if e["type"] == "crash" and e["service"] == "side"]
        assert crashes and "SIGKILL" in crashes[-1]["message"]
        assert any(e["type"] == "run" and "restarted" in e["message"] for e in events)
        # the other service kept serving through the outage and the crash
        assert result.failed == 0, result.failures[:10]
        assert result.ok > 20
        wait_until(
            "a heartbeat after the outage",
            lambda: services_by_name(site.instance())["side"]["restarts"] == 1,
        )
    finally:
        site.close()


def test_two_agents_apply_the_same_commits(xprocess, workspace):
    repo = workspace / "repo"
    url = make_repo(repo)
    site = open_site(xprocess, workspace, "pair", [service("app", url, "/")])
    try:
        first = site.add_agent("agent-pair-1")
        second = site.add_agent("agent-pair-2", proxy_port=free_port())
        wait_until("both agents to apply v1", lambda: site.all_applied(1, count=2))
        c1 = {s["commit"] for i in site.instances() for s in i["services"]}
        assert len(c1) == 1
        assert len({i["id"] for i in site.instances()}) == 2
        assert serves(first.proxy + "/", "v1") and serves(second.proxy + "/", "v1")

        c2 = new_version(repo, "v2")
        assert site.api("POST", f"/stacks/{site.stack_id}/refresh")["version"] == 2
        wait_until("both agents to apply v2", lambda: site.all_applied(2, count=2))
        assert {s["commit"] for i in site.instances() for s in i["services"]} == {c2}
        assert serves(first.proxy + "/", "v2") and serves(second.proxy + "/", "v2")
        pids = {s["pid"] for i in site.instances() for s in i["services"]}
        assert len(pids) == 2  # each agent runs its own process
    finally:
        site.close()


def test_crash_loop_backs_off_and_degrades_the_stack(xprocess, workspace):
    url = make_repo(workspace / "repo")
    flag = workspace / "crash-now"
    # runs normally until the flag exists, then exits at once on every start
    run = f"test -e {flag} && exit 3; exec python3 app.py"
    site = open_site(xprocess, workspace, "loop", [service("app", url, "/", run=run)])
    try:
        agent = site.add_agent("agent-loop")
        wait_until("v1 applied", lambda: site.all_applied(1))
        pid = services_by_name(site.instance())["app"]["pid"]
        flag.write_text("")
        kill9(pid)
        wait_until(
            "four crashes",
            lambda: len([e for e in site.events("crash") if e["service"] == "app"]) >= 4,
            timeout_s=60,
        )
        crashes = [e for e in site.events("crash") if e["service"] == "app"]
        assert "SIGKILL" in crashes[0]["message"]
        assert all("code 3" in e["message"] for e in crashes[1:])
        times = [_seconds(e["at"]) for e in crashes]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # 1 s doubling with ±20 % jitter: every gap longer than the one before
        assert all(b > a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
        assert gaps[-1] >= 3, gaps
        restarts = [e["restarts"] for e in crashes]
        assert restarts == sorted(restarts) and restarts[-1] >= 3, restarts

        def degraded() -> bool:
            inst = site.instance()
            return inst["state"] == "degraded" and any(
                "crash loop" in r and "code 3" in r for r in inst.get("reasons", [])
            )

        wait_until("the stack to be degraded with the reason", degraded, interval_s=0.1)
        assert services_by_name(site.instance())["app"]["last_exit"] == "code 3"

        flag.unlink()  # the cause is fixed: the next restart serves again
        wait_until("the service to serve again", lambda: serves(agent.proxy + "/", "v1"))
        # serving again after repeated crashes is not yet "applied": it must run stably
        # (CRASH_LOOP_STABLE_S, 30 s) first, so the state does not flicker between restarts
        time.sleep(2.5)  # two more heartbeats, both sent after the service came back
        assert site.instance()["state"] == "degraded"
    finally:
        site.close()


def test_reboot_applies_cached_state_without_controlplane(xprocess, workspace):
    url = make_repo(workspace / "repo")
    site = open_site(xprocess, workspace, "reboot", [service("app", url, "/")])
    try:
        agent = site.add_agent("agent-reboot")
        wait_until("v1 applied", lambda: site.all_applied(1))
        old_pid = services_by_name(site.instance())["app"]["pid"]
        # "reboot": everything stops, services too (run-all --stop-services-on-exit)
        stop(xprocess, agent.name)
        wait_until("the service to stop", lambda: start_time(old_pid) is None)
        stop(xprocess, site.cp.name)
        with pytest.raises(requests.RequestException):
            text(agent.proxy + "/")
        dead_cp = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        again = site.restart_agent(agent, "agent-reboot-2", dead_cp)
        wait_until("the cached state to be served", lambda: serves(again.proxy + "/", "v1"))
        log = xprocess.getinfo(again.name).logpath.read_text("utf-8")
        assert "cached desired state" in log
        assert "unreachable" in log  # it keeps trying to reach the control plane
    finally:
        site.close()


def test_rollback_reuses_the_kept_release(xprocess, workspace):
    repo = workspace / "repo"
    url = make_repo(repo)
    # the build appends to a file in the release: a rebuild would show as a second line
    build = "date +%s.%N >> built.txt"
    site = open_site(xprocess, workspace, "rollback", [service("app", url, "/", build=build)])
    try:
        agent = site.add_agent("agent-rollback")
        wait_until("v1 applied", lambda: site.all_applied(1))
        c1 = services_by_name(site.instance())["app"]["commit"]
        new_version(repo, "v2")
        site.api("POST", f"/stacks/{site.stack_id}/refresh")
        wait_until("v2 applied", lambda: site.all_applied(2))
        assert serves(agent.proxy + "/", "v2")
        builds_before = [e for e in site.events("build") if "started" in e["message"]]
        assert len(builds_before) == 2

        rolled = site.api(
            "POST", f"/stacks/{site.stack_id}/rollback", json={"version": 1}, expect=200
        )
        assert rolled["version"] == 3 and rolled["changed"]
        wait_until("v3 (= v1) applied", lambda: site.all_applied(3))
        assert serves(agent.proxy + "/", "v1")
        app = services_by_name(site.instance())["app"]
        assert app["commit"] == c1 and app["release"] == c1
        release = agent.state_dir / "releases" / "app" / c1
        assert os.readlink(f"/proc/{app['pid']}/cwd") == str(release)
        assert len((release / "built.txt").read_text().splitlines()) == 1  # built once
        builds_after = [e for e in site.events("build") if "started" in e["message"]]
        assert builds_after == builds_before  # no build event for the rollback

        # a bad rollback request changes nothing
        bad = site.api.http.post(
            site.api.base + f"/stacks/{site.stack_id}/rollback", json={"version": 0}, timeout=10
        )
        assert bad.status_code == 422 and "version" in bad.text
        missing = site.api.http.post(
            site.api.base + f"/stacks/{site.stack_id}/rollback", json={"version": 99}, timeout=10
        )
        assert missing.status_code in (404, 422) and "version" in missing.text
        assert site.api("GET", f"/stacks/{site.stack_id}")["version"] == 3
    finally:
        site.close()


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_failed_fixed_port_deploy_after_readoption_keeps_the_old_release(xprocess, workspace):
    """After a reconciler restart the fixed-port process is adopted; a new release that dies
    at once must still leave the old release serving (revived on its port), not nothing."""
    repo = workspace / "repo"
    url = make_repo(repo)
    fixed_port = free_port()
    site = open_site(xprocess, workspace, "revive", [service("fixed", url, "/", port=fixed_port)])
    try:
        agent = site.add_agent("agent-revive")
        wait_until("v1 applied", lambda: site.all_applied(1))
        kill9(reconciler_pid(xprocess, agent))
        wait_until(
            "the restarted reconciler to report applied",
            lambda: (
                len([e for e in site.events("stack") if e["message"].endswith(" applied")]) >= 2
            ),
        )
        commit_files(repo, {"app.py": "raise SystemExit(3)\n", "version.txt": "v2"}, "broken")
        assert site.api("POST", f"/stacks/{site.stack_id}/refresh")["changed"]

        def degraded() -> bool:
            inst = site.instance()
            return inst["state"] == "degraded" and any(
                "never became ready" in r for r in inst.get("reasons", [])
            )

        wait_until("the stack to be degraded", degraded)
        wait_until("v1 to serve again", lambda: serves(agent.proxy + "/", "v1"), timeout_s=20)
        fixed = services_by_name(site.instance())["fixed"]
        assert fixed["port"] == fixed_port and fixed["commit"] != fixed["desired_commit"]
    finally:
        site.close()


def _processes_in(release: Path) -> list[int]:
    """Pids of `python3 app.py` processes running in `release` (not its build)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (
                    os.readlink(entry / "cwd") == str(release)
                    and b"app.py" in (entry / "cmdline").read_bytes()
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_kill9_reconciler_mid_cutover_finishes_without_a_gap(xprocess, workspace):
    """The reconciler dies while a new release is starting beside the old one (agent port):
    the restarted reconciler must keep the old one serving until a new one is ready, end
    with one process for the service, and apply the new commit."""
    repo = workspace / "repo"
    url = make_repo(repo)
    site = open_site(xprocess, workspace, "midcut", [service("app", url, "/")])
    try:
        agent = site.add_agent("agent-midcut")
        wait_until("v1 applied", lambda: site.all_applied(1))
        old_pid = services_by_name(site.instance())["app"]["pid"]
        slow = "import time\ntime.sleep(8)  # a slow starter: not listening yet\n" + APP
        c2 = commit_files(repo, {"app.py": slow, "version.txt": "v2"}, "slow v2")
        release = agent.state_dir / "releases" / "app" / c2
        with Load([agent.proxy + "/"]) as load:
            site.api("POST", f"/stacks/{site.stack_id}/refresh")
            wait_until("v2 to be starting", lambda: _processes_in(release), interval_s=0.05)
            kill9(reconciler_pid(xprocess, agent))
            wait_until("v2 applied", lambda: site.all_applied(2), timeout_s=60)
            wait_until("v2 served", lambda: serves(agent.proxy + "/", "v2"))
            result = load.stop()
        assert result.failed == 0, result.failures[:10]
        assert result.bodies["v1"] > 0 and result.bodies["v2"] > 0
        wait_until("the old process to stop", lambda: start_time(old_pid) is None)
        app = services_by_name(site.instance())["app"]
        wait_until("one v2 process", lambda: _processes_in(release) == [app["pid"]])
    finally:
        site.close()


# APP, but on SIGTERM it stops listening and takes 10 s to finish (a slow, graceful drain)
DRAINING_APP = (
    APP.replace(
        'ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()', ""
    )
    + """
import signal
import threading
import time

srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
srv.serve_forever()
srv.server_close()
time.sleep(10)
"""
)


def _refuses(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_kill9_reconciler_while_draining_keeps_the_new_release(xprocess, workspace):
    """The reconciler dies after the route swap, while the old process drains (alive, no
    longer listening): the restarted reconciler must keep routing to the new release."""
    assert "serve_forever()\n" not in DRAINING_APP.split("srv = ")[0]
    repo = workspace / "repo"
    url = make_repo(repo, extra={"app.py": DRAINING_APP})
    site = open_site(xprocess, workspace, "drain", [service("app", url, "/")])
    try:
        agent = site.add_agent("agent-drain")
        wait_until("v1 applied", lambda: site.all_applied(1))
        old = services_by_name(site.instance())["app"]
        new_version(repo, "v2")
        with Load([agent.proxy + "/"]) as load:
            site.api("POST", f"/stacks/{site.stack_id}/refresh")
            wait_until(
                "the old process to drain (alive, not listening)",
                lambda: _refuses(old["port"]) and start_time(old["pid"]) is not None,
                interval_s=0.05,
            )
            kill9(reconciler_pid(xprocess, agent))
            wait_until("v2 applied", lambda: site.all_applied(2))
            time.sleep(3)  # the restarted reconciler has published its routes by now
            result = load.stop()
        assert result.failed == 0, result.failures[:10]
        assert result.bodies["v2"] > 0
        assert serves(agent.proxy + "/", "v2")
        wait_until("the old process to finish", lambda: start_time(old["pid"]) is None)
    finally:
        site.close()


def test_ctrl_c_to_the_process_group_stops_everything_cleanly(xprocess, workspace):
    # A terminal's Ctrl-C signals every process of the foreground group at once: run-all
    # and each of its children. That is an orderly stop, not a burst of crashes.
    url = make_repo(workspace / "repo")
    site = open_site(xprocess, workspace, "ctrlc", [service("app", url, "/")])
    agent = Agent("agent-ctrlc", workspace / "agent-ctrlc", site.proxy_port)
    log_path = workspace / "agent-ctrlc.log"
    token = site.api("POST", f"/stacks/{site.stack_id}/install-tokens", expect=201)["token"]
    argv = agent_argv_for(agent, site.cp.url, token)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("v1 applied", lambda: site.all_applied(1))
        service_pid = services_by_name(site.instance())["app"]["pid"]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        wait_until("the service to stop", lambda: start_time(service_pid) is None)
        output = log_path.read_text("utf-8")
        assert "restarting in" not in output and "Traceback" not in output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        site.close()
