"""Clone and fetch against a git server that never answers (a loopback listener that
accepts and stays silent): bounded by git's low-speed limit (HTTP) and the kill timeout
(any transport), and stopped at once when cancelled."""

import threading
from pathlib import Path

import pytest

from agent.reconciler.gitsync import GitCancelled, GitError, GitLimits, ensure_commit
from tests.agent.reconciler.blackhole import Blackhole
from tests.support.gitrepo import commit_files, init_repo

COMMIT = "0" * 40
QUICK = GitLimits(low_speed_bytes=1000, low_speed_s=1, kill_after_s=60)


def test_a_silent_http_server_ends_at_the_low_speed_limit(tmp_path: Path) -> None:
    with Blackhole() as hole:
        with pytest.raises(GitError) as err:
            ensure_commit(tmp_path, f"http://127.0.0.1:{hole.port}/app.git", COMMIT, QUICK)
        assert not isinstance(err.value, GitCancelled)
        assert "clone http://127.0.0.1" in str(err.value) and "no result after" not in str(
            err.value
        )
        assert hole.accepted >= 1 and hole.open_connections() == 0
    assert not list(tmp_path.iterdir()), "no half-made mirror is left as a mirror"


def test_a_silent_git_daemon_ends_at_the_kill_timeout(tmp_path: Path) -> None:
    with Blackhole() as hole:
        with pytest.raises(GitError, match="no result after 1 s, stopped"):
            ensure_commit(
                tmp_path, f"git://127.0.0.1:{hole.port}/app.git", COMMIT,
                GitLimits(kill_after_s=1),
            )  # fmt: skip
        hole.wait_accepted(1)
        assert hole.open_connections() == 0  # the git process is gone, not left behind


def test_cancel_stops_a_clone_under_way(tmp_path: Path) -> None:
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def clone() -> None:
        try:
            ensure_commit(
                tmp_path, f"git://127.0.0.1:{hole.port}/app.git", COMMIT,
                GitLimits(kill_after_s=600), cancel,
            )  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            outcome.append(exc)

    with Blackhole() as hole:
        worker = threading.Thread(target=clone)
        worker.start()
        hole.wait_accepted(1)
        cancel.set()
        worker.join(10)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], GitCancelled)
        assert hole.open_connections() == 0


def test_a_reachable_repository_still_clones_and_fetches(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    first = commit_files(repo, {"a.txt": "1"})
    mirror = ensure_commit(tmp_path / "git", f"file://{repo}", first, QUICK)
    second = commit_files(repo, {"a.txt": "2"})
    assert ensure_commit(tmp_path / "git", f"file://{repo}", second, QUICK) == mirror
    with pytest.raises(GitError, match="not in"):
        ensure_commit(tmp_path / "git", f"file://{repo}", "1" * 40, QUICK)
