"""Route swaps in the pool (issue 16): idle connections to the retired backend close,
requests still open to it are counted for the reconciler's drain, and a request that dies
on a reused connection before any response byte is retried once, on a fresh connection to
the route's *current* target, only when it is idempotent."""

import pytest

from agent.bus.messages import Route, RouteTable
from tests.agent.proxy.memory import Harness

OLD, NEW = 9001, 9002


def request(method: bytes, path: bytes) -> bytes:
    body = b"Content-Length: 0\r\n" if method == b"POST" else b""
    return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + body + b"\r\n"


def swap(h: Harness, *, port: int = NEW, paused: bool = False) -> None:
    h.server.apply_table(
        RouteTable(version=(1, 2), routes=(Route("app", port, "/", paused=paused),))
    )


def test_the_swap_closes_idle_connections_to_the_retired_backend():
    h = Harness([Route("app", OLD, "/")])
    h.feed([request(b"GET", b"/one")])
    assert [c.port for c in h.server.pool.idle[OLD]] == [OLD]
    swap(h)
    assert h.backends[0].sink.closed and not h.server.pool.idle.get(OLD)
    h.feed([request(b"GET", b"/two")])
    assert [b.conn.port for b in h.backends] == [OLD, NEW]
    assert h.sink.data.count(b"HTTP/1.1 200") == 2


def _dies_after_swap(method: bytes) -> Harness:
    """`method` is sent on a pooled (reused) connection to OLD; the route moves to NEW;
    then the old backend closes that connection without answering."""
    h = Harness([Route("app", OLD, "/")])
    h.feed([request(b"GET", b"/one")])
    h.client.data_received(request(method, b"/two"))  # reuses the pooled connection
    swap(h)
    assert h.server.pool.in_flight() == {OLD: 1}  # what the drain waits for
    old = h.backends[0]
    old.error = "gone"  # it reads nothing more and answers nothing
    old.sink.closed = True
    h.settle()
    return h


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS"])
def test_an_idempotent_request_is_retried_on_the_current_target(method):
    h = _dies_after_swap(method)
    assert [b.conn.port for b in h.backends] == [OLD, NEW]
    assert h.backends[1].requests[0][:2] == (method, b"/two")
    assert h.sink.data.count(b"HTTP/1.1 200") == 2
    assert h.server.pool.in_flight() == {}


def test_a_post_is_not_retried():
    h = _dies_after_swap(b"POST")
    assert [b.conn.port for b in h.backends] == [OLD]
    assert b"HTTP/1.1 502" in h.sink.data


def test_pausing_counts_the_old_release_in_flight_and_holds_new_requests():
    h = Harness([Route("app", OLD, "/")])
    h.feed([request(b"GET", b"/one")])
    h.client.data_received(request(b"GET", b"/two"))  # in flight on the old process
    swap(h, port=OLD, paused=True)  # fixed port: the same port, about to change hands
    assert h.backends[0].sink.closed is False  # the busy one finishes...
    assert h.server.pool.in_flight() == {OLD: 1}
    h.settle()
    assert h.server.pool.in_flight() == {}
    assert h.backends[0].sink.closed  # ...and is not pooled again
    h.feed([request(b"GET", b"/three")])
    assert h.server.held["app"]  # held until the new release is up
    swap(h, port=OLD, paused=False)
    h.settle()
    assert [b.conn.port for b in h.backends] == [OLD, OLD]
    assert h.backends[1].requests[0][:2] == (b"GET", b"/three")
    assert h.sink.data.count(b"HTTP/1.1 200") == 3


def test_a_connection_accepted_while_draining_gets_its_request_answered():
    """A restart (SIGTERM) sets the proxy draining while connections it accepted in the
    same loop iteration are still being set up: they must be served once (and then
    closed), not reset — the listening socket lives on in the next process (issue 16)."""
    h = Harness([Route("app", OLD, "/")])
    h.server.draining = True
    h.new_client()  # its connection_made runs after the drain began
    assert not h.sink.closed
    h.feed([request(b"GET", b"/late")])
    assert h.sink.data.startswith(b"HTTP/1.1 200") and b"/late" in h.sink.data
    assert h.sink.closed  # no keep-alive while draining
