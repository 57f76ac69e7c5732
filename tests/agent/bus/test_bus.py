"""The route bus over real ZeroMQ ipc sockets: snapshot, updates, cache, ordering."""

import asyncio
import time

import zmq.asyncio

from agent.bus import BusEndpoints, Route, RouteTable
from agent.bus.messages import ROUTES_TOPIC
from agent.bus.publisher import Publisher
from agent.bus.subscriber import RouteFollower, load_cached


def table(seq, port, epoch=1):
    return RouteTable(
        version=(epoch, seq), routes=(Route("api", port, "/api"),), external_bind="0.0.0.0:8080"
    )


def test_table_json_round_trip():
    t = table(3, 5001)
    assert RouteTable.from_json(t.to_json()) == t


def test_follower_gets_snapshot_then_updates_and_caches(tmp_path):
    endpoints = BusEndpoints(tmp_path / "run")
    cache = tmp_path / "cache.json"

    async def scenario():
        ctx = zmq.asyncio.Context()
        pub = Publisher(endpoints, ctx)
        await pub.start()
        await pub.publish(ROUTES_TOPIC, table(1, 5001, pub.epoch).to_json())
        seen = []
        follower = RouteFollower(endpoints, cache, seen.append, ctx)
        task = asyncio.create_task(follower.run())
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and seen[-1].routes[0].port == 5001  # from the snapshot
        await pub.publish(ROUTES_TOPIC, table(2, 5002, pub.epoch).to_json())
        for _ in range(50):
            if seen[-1].routes[0].port == 5002:
                break
            await asyncio.sleep(0.05)
        assert seen[-1].routes[0].port == 5002
        assert not follower.offer(table(1, 9999, pub.epoch))  # older versions are ignored
        task.cancel()
        await pub.close()
        ctx.term()
        return seen

    seen = asyncio.run(scenario())
    assert load_cached(cache).routes[0].port == 5002
    assert len([t for t in seen if t.routes[0].port == 5002]) == 1  # republish is not a change


def test_follower_serves_cache_without_publisher(tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_bytes(table(7, 6000).to_json())
    seen = []
    follower = RouteFollower(BusEndpoints(tmp_path / "run"), cache, seen.append)
    follower.load_cache()
    assert seen[0].routes[0].port == 6000


def test_corrupt_cache_is_ignored(tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_bytes(b"{not json")
    assert load_cached(cache) is None


def test_cache_from_the_future_is_refused(tmp_path):
    """Issue 15.1: a forged cache claiming a later publisher epoch is never served."""
    cache = tmp_path / "cache.json"
    cache.write_bytes(table(1, 6666, epoch=time.time_ns() + 10**12).to_json())
    assert load_cached(cache) is None
    seen = []
    RouteFollower(BusEndpoints(tmp_path / "run"), cache, seen.append).load_cache()
    assert seen == []


def test_live_publisher_outranks_a_cache_with_a_higher_version(tmp_path):
    """Issue 15.1: a tampered cache (an attacker's port under a huge sequence number) gives
    way to the live publisher's first table, and is overwritten by it."""
    endpoints = BusEndpoints(tmp_path / "run")
    cache = tmp_path / "cache.json"

    async def scenario():
        ctx = zmq.asyncio.Context()
        pub = Publisher(endpoints, ctx)
        await pub.start()
        cache.write_bytes(table(10**9, 6666, pub.epoch - 1).to_json())
        await pub.publish(ROUTES_TOPIC, table(1, 5001, pub.epoch - 10**9).to_json())
        seen = []
        follower = RouteFollower(endpoints, cache, seen.append, ctx)
        task = asyncio.create_task(follower.run())
        for _ in range(50):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pub.close()
        ctx.term()
        return seen, follower

    seen, follower = asyncio.run(scenario())
    assert [t.routes[0].port for t in seen] == [6666, 5001]
    assert follower.live and follower.current.routes[0].port == 5001
    assert not follower.offer(table(10**9 + 1, 7777, 1), live=False)  # the cache never wins again
    assert load_cached(cache).routes[0].port == 5001
    assert cache.stat().st_mode & 0o777 == 0o600
