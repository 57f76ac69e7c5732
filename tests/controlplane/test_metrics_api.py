"""Issue 19, control plane: agents' metric batches stored, rolled up, pruned and read back
as series, on SQLite and PostgreSQL (a real control plane and database)."""

import asyncio
import time
from pathlib import Path
from typing import Any

import requests

from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.metrics.points import HOUR, MINUTE, RAW
from controlplane.metrics.store import Rollups, read_builds, read_points
from tests.controlplane.harness import Api
from tests.controlplane.test_agent_api import install_token, new_stack, register
from tests.support.prom import parse_samples


def enroll(api: Api, url: str, repo: Path, name: str) -> tuple[str, str, Api]:
    stack = new_stack(api, repo, name)
    reg = register(url, install_token(api, stack["id"])["token"])
    assert reg.status_code == 201, reg.text
    body = reg.json()
    return stack["id"], body["instance_id"], Api(url, body["credential"])


def lat(n: int) -> list[int]:
    return [0, n] + [0] * 10  # all in (5 ms, 10 ms]


def web(t: float, requests: int, errors: int = 0) -> dict[str, Any]:
    return {"t": t, "span": 30, "service": "web", "requests": requests, "errors": errors,
            "bytes_in": 100 * requests, "bytes_out": 1000 * requests, "lat": lat(requests),
            "lat_sum": 0.007 * requests, "cpu_s": 3.0, "mem": 50_000_000}  # fmt: skip


def host(t: float) -> dict[str, Any]:
    return {"t": t, "span": 30, "service": "", "cpu_s": 15.0, "cpus": 2, "mem": 1000,
            "mem_total": 4000, "swap_used": 7, "swap_total": 70, "disk_used": 10,
            "disk_total": 100, "inodes_free": 5, "load1": 0.5, "net_rx": 300, "net_tx": 600}  # fmt: skip


def test_points_in_series_out(api: Api, server_url: str, repo: Path, unique: str) -> None:
    stack_id, _, agent = enroll(api, server_url, repo, f"metrics-{unique}")
    now = time.time()
    t0 = int(now) // 60 * 60 - 120  # two whole minutes ago
    resp = agent.post(
        "/agent/metrics",
        json={"points": [web(t0, 300, 3), web(t0 + 30, 600), host(t0), {**web(t0, 5), "service": "ghost"}]},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"stored": 3, "refused": ["ghost"]}
    got = api.get(f"/stacks/{stack_id}/metrics", params={"service": "web", "from": t0, "step": 60})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["resolution"] == RAW and body["step"] == 60
    (p,) = body["points"]
    assert p["t"] == t0 and p["requests"] == 900 and p["errors"] == 3
    assert p["rps"] == 900 / 60 and p["error_rate"] == round(3 / 900, 4)
    assert 5 < p["p50_ms"] < 10 and 5 < p["p95_ms"] <= 10
    assert p["cpu"] == 0.1 and p["mem"] == 50_000_000
    server = api.get(f"/stacks/{stack_id}/metrics", params={"from": t0, "step": 30}).json()
    (h,) = server["points"]
    assert h["cpu_pct"] == 25.0 and h["disk_total"] == 100 and h["load1"] == 0.5
    assert (h["swap_used"], h["swap_total"], h["net_rx"]) == (7, 70, 300)
    # a batch sent again replaces its points instead of doubling them
    assert agent.post("/agent/metrics", json={"points": [web(t0, 300, 3)]}).status_code == 200
    again = api.get(
        f"/stacks/{stack_id}/metrics", params={"service": "web", "from": t0, "step": 60}
    )
    assert again.json()["points"][0]["requests"] == 900


def test_bad_batches_and_queries_name_the_field(
    api: Api, server_url: str, repo: Path, unique: str
) -> None:
    stack_id, _, agent = enroll(api, server_url, repo, f"metrics-bad-{unique}")
    for points, field in (
        ("x", "points"),
        ([{"t": 1, "span": 30}], "points[0].service"),
        ([{**web(1, 1), "requests": -1}], "points[0].requests"),
        ([{**web(1, 1), "lat": [1, 2]}], "points[0].lat"),
        ([{**web(1, 1), "span": 99999}], "points[0]"),
    ):
        resp = agent.post("/agent/metrics", json={"points": points})
        assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
    assert Api(server_url, None).post("/agent/metrics", json={"points": []}).status_code == 401
    for params, field in (({"from": "soon"}, "from"), ({"from": 10, "to": 5}, "from"),
                          ({"from": 0, "step": 1}, "step")):  # fmt: skip
        resp = api.get(f"/stacks/{stack_id}/metrics", params=params)
        assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
    assert api.get("/stacks/nope/metrics").status_code == 404
    assert Api(server_url, None).get(f"/stacks/{stack_id}/metrics").status_code == 401


def test_rollups_and_retention(
    api: Api, server_url: str, repo: Path, unique: str, db_url: str
) -> None:
    stack_id, instance, agent = enroll(api, server_url, repo, f"metrics-roll-{unique}")
    now = int(time.time())
    minute = now // 60 * 60 - 180
    old = now - 2 * 3600  # raw points older than an hour go
    points = [web(minute, 10), web(minute + 30, 20), web(old, 7)]
    assert agent.post("/agent/metrics", json={"points": points}).status_code == 200

    async def roll(clock_s: float) -> dict[int, list[Any]]:
        db = Database(parse_db_url(db_url))
        try:
            await Rollups(db, clock=lambda: clock_s).run_once()
            return {
                res: await read_points(db, stack_id, "web", res, 0, now + 7200)
                for res in (RAW, MINUTE, HOUR)
            }
        finally:
            await db.close()

    got = asyncio.run(roll(now))
    assert [p.t for _, p in got[RAW]] == [minute, minute + 30]  # the 2-hour-old one pruned
    rolled = {p.t: p for _, p in got[MINUTE]}
    assert rolled[minute].requests == 30 and rolled[minute].span == 60
    assert rolled[minute].lat == lat(30) and rolled[minute].mem == 50_000_000
    # two hours later the minute rollups make an hourly one
    got = asyncio.run(roll(now + 2 * 3600))
    (hour,) = [p for _, p in got[HOUR] if p.t == minute // 3600 * 3600]
    assert hour.requests == 30 and got[RAW] == []


def test_prometheus_scrape(
    api: Api, server_url: str, repo: Path, unique: str, admin_token: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    stack_id, instance, agent = enroll(api, server_url, repo, f"metrics-prom-{unique}")
    t = int(time.time()) - 30
    assert agent.post("/agent/metrics", json={"points": [web(t, 300, 3), host(t)]}).ok
    anonymous = requests.get(f"{server_url}/metrics", timeout=10)
    assert anonymous.status_code == 401
    wrong = requests.get(
        f"{server_url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401
    resp = requests.get(
        f"{server_url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    samples = parse_samples(resp.text)
    name = f"metrics-prom-{unique}"
    labels = (("instance", instance), ("route", "/"), ("service", "web"), ("stack", name))
    assert samples[("berth_service_requests_per_second", labels)] == 10.0
    assert samples[("berth_service_errors_per_second", labels)] == 0.1
    assert samples[("berth_service_memory_bytes", labels)] == 50_000_000
    assert 0.005 < samples[("berth_service_latency_p95_seconds", labels)] <= 0.01
    server = (("instance", instance), ("stack", name))
    assert samples[("berth_server_cpu_cores", server)] == 0.5
    assert samples[("berth_server_disk_total_bytes", server)] == 100
    assert samples[("berth_server_swap_used_bytes", server)] == 7
    assert samples[("berth_server_network_sent_bytes_per_second", server)] == 20.0
    # restarts: a counter from the agent's latest heartbeat
    from tests.controlplane.test_agent_api import HEARTBEAT

    assert agent.post("/agent/heartbeat", json=HEARTBEAT).status_code == 200
    again = requests.get(
        f"{server_url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    )
    restarts = [
        s for fam in text_string_to_metric_families(again.text) for s in fam.samples
        if s.name == "berth_service_restarts_total" and s.labels["instance"] == instance
    ]  # fmt: skip
    assert [(s.labels["service"], s.labels["stack"], s.value) for s in restarts] == [
        ("web", name, 2)
    ]
    own = {n for n, _ in samples if n.startswith("berth_controlplane_")}
    assert {"berth_controlplane_requests_total", "berth_controlplane_request_seconds_bucket",
            "berth_controlplane_longpoll_waiters", "berth_controlplane_heartbeat_rows_total",
            "berth_controlplane_db_seconds_total"} <= own  # fmt: skip


def test_default_range_reads_raw_points() -> None:
    from controlplane.metrics.query import parse_query

    now = 1_795_966_500.7
    assert parse_query({}, now).res == RAW  # the last hour, asked now
    assert parse_query({"from": str(now - 2 * 3600)}, now).res == MINUTE
    assert parse_query({"from": str(now - 7 * 86400)}, now).res == HOUR


def test_batch_limit_per_instance() -> None:
    from controlplane.metrics.limit import BatchLimit

    now = [1000.0]
    limit = BatchLimit(per_minute=2, clock=lambda: now[0])
    assert limit.admit("a") == 0 and limit.admit("a") == 0
    assert limit.admit("a") == 60.0  # the third within the minute waits for the first
    assert limit.admit("b") == 0  # per instance
    now[0] += 60.0
    assert limit.admit("a") == 0


def test_builds_are_stored_rolled_up_and_scraped(
    api: Api, server_url: str, repo: Path, unique: str, db_url: str, admin_token: str
) -> None:
    stack_id, instance, agent = enroll(api, server_url, repo, f"metrics-build-{unique}")
    now = int(time.time())
    t0 = now // 60 * 60 - 120
    points = [{**web(t0, 10), "builds": 1, "build_s": 40.0, "build_rss": 300_000_000, "restarts": 1},
              {**web(t0 + 30, 10), "builds": 2, "build_s": 20.0, "build_rss": 500_000_000},
              web(t0 + 60, 10)]  # fmt: skip
    assert agent.post("/agent/metrics", json={"points": points}).status_code == 200
    bad = agent.post("/agent/metrics", json={"points": [{**web(t0, 1), "build_rss": -5}]})
    assert bad.status_code == 422 and bad.json()["field"] == "points[0].build_rss"
    got = api.get(f"/stacks/{stack_id}/metrics", params={"service": "web", "from": t0, "step": 60})
    first, second = got.json()["points"]
    # three builds in the minute: 60 s in all, 20 s each on average, the largest peak
    assert (first["builds"], first["build_s"], first["build_rss"]) == (3, 20.0, 500_000_000)
    assert (first["restarts"], second["restarts"]) == (1, 0)
    assert (second["builds"], second["build_s"], second["build_rss"]) == (0, None, None)

    resp = requests.get(
        f"{server_url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    )
    samples = parse_samples(resp.text)
    labels = (("instance", instance), ("route", "/"), ("service", "web"),
              ("stack", f"metrics-build-{unique}"))  # fmt: skip
    assert samples[("berth_service_last_build_seconds", labels)] == 10.0  # the newest point's
    assert samples[("berth_service_last_build_peak_memory_bytes", labels)] == 500_000_000

    async def roll_and_read() -> tuple[list[Any], list[Any], list[Any]]:
        db = Database(parse_db_url(db_url))
        try:
            await Rollups(db, clock=lambda: now).run_once()
            minute = await read_points(db, stack_id, "web", MINUTE, t0, t0 + 60)
            # while raw points are kept they are read; then the minute rollups, never both
            fresh = await read_builds(db, t0 - 60, now, stack_id=stack_id)
            later = await read_builds(db, t0 - 60, t0 + 3600 + 90, stack_id=stack_id)
            return minute, fresh, later
        finally:
            await db.close()

    minute, fresh, later = asyncio.run(roll_and_read())
    ((_, rolled),) = minute
    assert (rolled.builds, rolled.build_s, rolled.build_rss) == (3, 60.0, 500_000_000)
    assert [(p.t, p.builds) for _, _, p in fresh] == [(t0, 1), (t0 + 30, 2)]
    assert [(p.t, p.builds) for _, _, p in later] == [(t0, 3)]
