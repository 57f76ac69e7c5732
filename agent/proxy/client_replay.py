"""A client connection replaying a request head from the request memo (requestmemo.py).

`data_received` offers a read that may be one whole head to the memo first; these are
the functions behind it: start the remembered exchange without the parser, or (after a
parsed request) remember its head and header block. They are `ClientConnection` methods
kept in their own module.
"""

from typing import TYPE_CHECKING

from agent.proxy.exchange import Exchange
from agent.proxy.requestmemo import Remembered, plain_line
from agent.proxy.routing import BadPath, Target, route_path

if TYPE_CHECKING:
    from agent.proxy.client import ClientConnection


def replay_head(conn: "ClientConnection", hit: Remembered) -> bool:
    """Start the request whose head was remembered whole; False: parse it."""
    prefix, suffix, target, keep_alive, is_head = hit
    # (a remembered target is running and unpaused: the memo is emptied with every
    # new route table)
    return conn._start_remembered(prefix + conn.client_ip + suffix, target, keep_alive, is_head)


def replay_block(conn: "ClientConnection", data: bytes, at: int, hit: Remembered) -> bool:
    """Start the request in `data`, a remembered header block under a new request
    line; False: parse it."""
    plain = plain_line(data, 0, at)
    if plain is None or len(data) > conn.config.max_head_bytes:
        return False
    method, url = plain.groups()
    prefix, suffix, target, keep_alive, _ = hit
    server = conn.server
    if server.external:
        try:
            match = route_path(server.paths, url)
        except BadPath:
            return False  # the parser's path answers it with the 400 page
        if match is None:
            return False  # the parser's path answers it with the 404 page
        target, url = match
        if target.paused or target.port is None:
            return False
    # (the internal proxy's target came with the Host header)
    head = b"".join((method, b" ", url, prefix, conn.client_ip, suffix))
    return conn._start_remembered(head, target, keep_alive, method == b"HEAD")


def start_remembered(
    conn: "ClientConnection", head: bytes, target: Target, keep_alive: bool, is_head: bool
) -> bool:
    server = conn.server
    if conn.http11 is False or server.draining:
        return False
    conn.http11 = True
    server.requests.replays += 1
    if not keep_alive:
        conn.finished = True  # as on_message_complete would say for a closing request
    ex = Exchange(conn, keep_alive, True, is_head, False)
    if server.metrics is not None:
        ex.started = server.tick or server.clock()
        ex.bytes_in = len(head)
    ex.head = head
    ex.target = target
    ex.request_done = True
    conn.current = ex
    if not conn.write_paused:
        conn.deadline = 0.0  # waiting for the backend: its own deadline applies
    server.pool.send(ex)
    return True


def remember(conn: "ClientConnection", data: bytes, at: int, block: bytes) -> None:
    """A request began and completed within `data` (the parser is idle again): remember
    it, and its header block `data[at:]`, if `data` is exactly its head, which then
    means it had no body."""
    memo = conn.server.requests
    if not memo.seen_before(block):
        return  # (ever-new heads stop here, at the cost of a set insert)
    ex = conn.current
    if (
        ex is None
        or ex.failure is not None
        or not conn.http11  # answered as HTTP/1.0: not what a replay does
        or conn.server.draining
        or data.find(b"\r\n\r\n") != len(data) - 4
        or data.find(b"\r\n", 0, at) != -1  # " HTTP/1.1" must end the request line
    ):
        return
    target = ex.target
    if target is None or target.paused or target.port is None:
        return
    # The block is seen again: the head is likely to repeat too (a poller) and costs
    # one entry; the block is replayed only under plain request lines.
    memo.remember(
        data,
        block if plain_line(data, 0, at) is not None else None,
        conn.trusted,
        ex.head,
        conn.client_ip,
        target,
        ex.keep_alive,
        ex.is_head,
    )
