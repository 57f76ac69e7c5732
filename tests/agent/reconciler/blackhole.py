"""A git server that never answers: a loopback TCP listener that accepts connections and
neither reads nor writes. Counts the connections and sees them close (git killed)."""

import socket
import threading
import time
from types import TracebackType


class Blackhole:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener.settimeout(0.05)  # a closed listener does not wake accept()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            with self._lock:
                self._conns.append(conn)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._conns)

    def wait_accepted(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.accepted < count:
            assert time.monotonic() < deadline, f"{self.accepted} of {count} connections"
            time.sleep(0.02)

    def open_connections(self) -> int:
        """Connections whose client has not gone away (EOF or reset) yet."""
        with self._lock:
            return sum(_still_open(conn) for conn in self._conns)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()

    def __enter__(self) -> "Blackhole":
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _still_open(conn: socket.socket) -> bool:
    """Read (and drop) what the client sent; open until its end of file or reset."""
    conn.setblocking(False)
    try:
        while conn.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
