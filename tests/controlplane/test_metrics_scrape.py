"""Issue 19, `GET /metrics` on a real control plane: who may scrape (the scrape-only
`BERTH_METRICS_TOKEN`, an admin token, nobody else) and the control plane's own figures
(requests, latency, long-poll waiters, heartbeat batches, database time) moving with the
work it did. Every answer is parsed with prometheus_client's parser."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.controlplane.harness import Api, ControlPlane
from tests.controlplane.test_agent_api import HEARTBEAT
from tests.controlplane.test_metrics_api import enroll
from tests.support.prom import Samples, parse_samples

SCRAPE_TOKEN = "scrape-only-7f3a9c"


@pytest.fixture(scope="module")
def scraped(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane started with BERTH_METRICS_TOKEN in its environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BERTH_METRICS_TOKEN", SCRAPE_TOKEN)
        cp = ControlPlane(db_url, tmp_path_factory.mktemp("scrape-logs"))
    yield cp
    cp.stop()


def scrape(url: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{url}/metrics", headers=headers, timeout=10)


def parse(resp: requests.Response) -> Samples:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_samples(resp.text)


def own(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a `berth_controlplane_*` sample over its pids (one process here)."""
    want = set(labels.items())
    return sum(
        v for (n, lbl), v in samples.items()
        if n == f"berth_controlplane_{name}" and want <= set(lbl)
    )  # fmt: skip


def test_the_scrape_token_opens_metrics_and_nothing_else(
    scraped: ControlPlane, admin_token: str
) -> None:
    assert parse(scrape(scraped.url, SCRAPE_TOKEN))
    assert parse(scrape(scraped.url, admin_token))
    for wrong in (None, "", "nope", SCRAPE_TOKEN + "x", SCRAPE_TOKEN[:-1], SCRAPE_TOKEN.upper()):
        resp = scrape(scraped.url, wrong)
        assert resp.status_code == 401, (wrong, resp.status_code)
        assert "berth_" not in resp.text
    # a scrape-only secret: the API does not take it
    for path in ("/api/v1/stacks", "/api/v1/audit"):
        resp = requests.get(
            scraped.url + path, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=10
        )
        assert resp.status_code == 401, (path, resp.status_code)


def test_without_the_variable_only_admins_scrape(server_url: str, admin_token: str) -> None:
    assert parse(scrape(server_url, admin_token))
    for wrong in (None, "", SCRAPE_TOKEN):
        assert scrape(server_url, wrong).status_code == 401


def test_the_control_planes_own_figures_follow_its_work(
    scraped: ControlPlane, admin_token: str, repo: Path, unique: str
) -> None:
    api = Api(scraped.url, admin_token)
    _, _, agent = enroll(api, scraped.url, repo, f"own-{unique}")
    before = parse(scrape(scraped.url, SCRAPE_TOKEN))
    for _ in range(5):
        assert api.get("/stacks").status_code == 200
    assert api.get("/stacks/nope").status_code == 404
    for _ in range(3):
        assert agent.post("/agent/heartbeat", json=HEARTBEAT).status_code == 200

    etag = agent.get("/agent/desired-state").headers["ETag"]
    held: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: held.update(
            r=agent.get("/agent/desired-state", params={"wait": "8"},
                        headers={"If-None-Match": etag})
        ),
        daemon=True,
    )  # fmt: skip
    poll.start()
    deadline = time.monotonic() + 6  # (the poll is held 8 s)
    after = parse(scrape(scraped.url, SCRAPE_TOKEN))
    while own(after, "longpoll_waiters") < 1 and time.monotonic() < deadline:
        after = parse(scrape(scraped.url, SCRAPE_TOKEN))
    assert own(after, "longpoll_waiters") == 1, "the held poll is not counted"
    poll.join(10)
    assert held["r"].status_code == 304
    assert own(parse(scrape(scraped.url, SCRAPE_TOKEN)), "longpoll_waiters") == 0

    def grew(name: str, **labels: str) -> float:
        return own(after, name, **labels) - own(before, name, **labels)

    assert grew("requests_total", method="GET", code="2xx") >= 5
    assert grew("requests_total", method="GET", code="4xx") >= 1
    assert grew("request_seconds_count") >= 6
    assert grew("request_seconds_sum") > 0
    assert grew("heartbeat_rows_total") == 3  # (batches: one or more, as they coalesce)
    assert 1 <= grew("heartbeat_batches_total") <= 3
    assert grew("db_statements_total") > 0 and grew("db_seconds_total") > 0
