"""A busy window is rolled in slices of instances (controlplane/metrics/store.py): the
same rollups as in one go. The rollup test of test_metrics_api.py, every window sliced."""

from pathlib import Path

import pytest

from controlplane.metrics import store
from tests.controlplane.harness import Api
from tests.controlplane.test_metrics_api import test_rollups_and_retention as rollups_and_retention


def test_rollups_in_slices_match(
    monkeypatch: pytest.MonkeyPatch, api: Api, server_url: str, repo: Path, unique: str, db_url: str
) -> None:
    monkeypatch.setattr(store, "SLICE_ROWS", 0)
    rollups_and_retention(api, server_url, repo, unique, db_url)
