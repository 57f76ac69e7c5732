"""Handing a release tree to the services user follows no symlink (issue 15.3)."""

import os

import pytest

from agent.reconciler.ownership import chown_tree, is_built, mark_built

UID, GID = 54321, 54322  # no account needed: chown takes numbers


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")


def test_chown_tree_changes_links_not_their_targets(tmp_path, as_root):
    victim_dir = tmp_path / "root-only"
    victim_dir.mkdir()
    victim = tmp_path / "root-file"
    victim.write_text("x")
    tree = tmp_path / "release"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub" / "deeper" / "f").write_text("y")
    (tree / "file-link").symlink_to(victim)
    (tree / "sub" / "dir-link").symlink_to(victim_dir)
    chown_tree(tree, UID, GID)
    for path in (tree, tree / "sub" / "deeper", tree / "sub" / "deeper" / "f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (UID, GID), path
    for link in (tree / "file-link", tree / "sub" / "dir-link"):
        assert link.lstat().st_uid == UID
    assert victim.stat().st_uid == 0 and victim_dir.stat().st_uid == 0


def test_a_release_swapped_for_a_symlink_is_refused(tmp_path, as_root):
    victim_dir = tmp_path / "root-only"
    victim_dir.mkdir()
    (tmp_path / "release").symlink_to(victim_dir)
    with pytest.raises(OSError):
        chown_tree(tmp_path / "release", UID, GID)
    assert victim_dir.stat().st_uid == 0


def test_markers_live_outside_the_tree(tmp_path):
    assert not is_built(tmp_path, "app", "c" * 40, "k")
    mark_built(tmp_path, "app", "c" * 40, "k")
    assert is_built(tmp_path, "app", "c" * 40, "k")
    assert (tmp_path / "build-markers" / "app" / ("c" * 40) / "k").stat().st_mode & 0o777 == 0o600
