"""One send-and-classify for metric points and log chunks (`agent/reconciler/shipping.py`)."""

import asyncio

import pytest

from agent.reconciler.cpclient import Rejected, Throttled, Unreachable
from agent.reconciler.shipping import Shipped, ship


def _raising(exc: Exception):
    def send(_batch: list[int]) -> None:
        raise exc

    return send


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda _batch: None, Shipped.SENT),
        (_raising(Rejected("gone", status=404)), Shipped.UNSUPPORTED),
        (_raising(Rejected("bad credential", status=401)), Shipped.NOT_SENT),
        (_raising(Throttled("slow down", retry_after_s=0.01)), Shipped.NOT_SENT),
        (_raising(Unreachable("connection refused")), Shipped.NOT_SENT),
    ],
)
def test_each_answer_is_classified(send, expected):
    assert asyncio.run(ship(send, [1, 2], "metrics")) is expected


def test_the_batch_is_what_is_sent():
    got: list[list[int]] = []
    assert asyncio.run(ship(got.append, [1, 2], "logs")) is Shipped.SENT
    assert got == [[1, 2]]
