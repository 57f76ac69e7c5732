"""Failed logins counted in the database: every process (here: two Database objects on
one URL, as two workers or two nodes have) sees the same count. SQLite and PostgreSQL."""

import asyncio

from sqlalchemy import select

from controlplane.dashboard.login_failures import PRUNE_EVERY_S, LoginThrottle
from controlplane.dashboard.throttle import ThrottlePolicy
from controlplane.db import Database
from controlplane.dburl import parse_db_url
from controlplane.models import LoginFailure

POLICY = ThrottlePolicy(free_failures=3, base_delay_s=2, max_delay_s=60, window_s=100)


def test_failures_are_shared_between_processes(db_url: str) -> None:
    async def scenario() -> None:
        now = [1_000_000.0]
        one, two = Database(parse_db_url(db_url)), Database(parse_db_url(db_url))
        try:
            a = LoginThrottle(one, POLICY, clock=lambda: now[0])
            b = LoginThrottle(two, POLICY, clock=lambda: now[0])
            keys = ("user:shared-alice", "addr:192.0.2.7")
            await a.failure(*keys)
            await b.failure(*keys)
            assert await a.retry_after(*keys) == 0
            await a.failure(*keys)  # the third failure, counted across both
            assert await b.retry_after(*keys) == 2
            assert await b.retry_after("user:someone-else") == 0
            # the address alone blocks another name
            assert await b.retry_after("user:other", "addr:192.0.2.7") == 2
            await b.success(*keys)
            assert await a.retry_after(*keys) == 0
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())


def test_concurrent_failures_lose_no_count(db_url: str) -> None:
    async def scenario() -> None:
        dbs = [Database(parse_db_url(db_url)) for _ in range(2)]
        try:
            throttles = [LoginThrottle(db, POLICY, clock=lambda: 2_000_000.0) for db in dbs]
            # 20 failures at once for one new key, half through each "process"
            await asyncio.gather(*(throttles[i % 2].failure("user:raced") for i in range(20)))
            async with dbs[0].read() as session:
                row = await session.get_one(LoginFailure, "user:raced")
            assert row.failures == 20
            # 2 s doubled per failure beyond the third, capped at 60 s
            assert await throttles[1].retry_after("user:raced") == 60
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(scenario())


def test_expired_records_are_pruned(db_url: str) -> None:
    async def scenario() -> None:
        now = [3_000_000.0]
        db = Database(parse_db_url(db_url))
        policy = ThrottlePolicy(free_failures=3, base_delay_s=2, max_delay_s=1000, window_s=10)
        try:
            t = LoginThrottle(db, policy, clock=lambda: now[0])
            await t.failure("user:old")
            for _ in range(10):
                await t.failure("user:blocked")  # blocked for 2 * 2**7 = 256 s
            now[0] += PRUNE_EVERY_S + 1  # both windows are over; one key is still blocked
            await t.failure("user:new")  # pruning runs with a failure, once a minute
            async with db.read() as session:
                left = set((await session.scalars(select(LoginFailure.key))).all())
            assert left == {"user:blocked", "user:new"}
            assert await t.retry_after("user:blocked") > 0
        finally:
            await db.close()

    asyncio.run(scenario())


def test_begin_counts_atomically_and_the_user_ceiling_holds(db_url: str) -> None:
    """40 concurrent `begin`s on one pair: exactly the free ones are allowed. Many addresses
    each under their own limit still meet the per-user ceiling; success refunds."""
    from controlplane.dashboard.throttle import login_keys

    pair = ThrottlePolicy(free_failures=3, base_delay_s=2, max_delay_s=60, window_s=100)
    ceiling = ThrottlePolicy(free_failures=6, base_delay_s=2, max_delay_s=10, window_s=100)
    policies = {"pair": pair, "addr": pair, "user": ceiling}

    async def scenario() -> None:
        dbs = [Database(parse_db_url(db_url)) for _ in range(2)]
        try:
            t = [LoginThrottle(db, policies=policies, clock=lambda: 4_000_000.0) for db in dbs]
            keys = login_keys("ceil-bob", "198.51.100.1")
            waits = await asyncio.gather(*(t[i % 2].begin(*keys) for i in range(40)))
            assert sum(w == 0 for w in waits) == 3, waits  # only the free attempts pass
            # three more addresses: 1 + 1 + 1 allowed before the ceiling (6) blocks the user
            allowed = [await t[0].begin(*login_keys("ceil-bob", f"198.51.100.{i}")) == 0
                       for i in (2, 3, 4, 5)]  # fmt: skip
            assert allowed == [True, True, True, False]
            assert 0 < await t[1].retry_after(*login_keys("ceil-bob", "198.51.100.9")) <= 10
            # a success refunds its own count: the ceiling is back under its limit
            await t[0].success(*login_keys("ceil-bob", "198.51.100.4"))
            assert await t[1].retry_after(*login_keys("ceil-bob", "198.51.100.9")) == 0
        finally:
            for db in dbs:
                await db.close()

    asyncio.run(scenario())
