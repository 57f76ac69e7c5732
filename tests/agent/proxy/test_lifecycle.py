"""The proxy processes' life: internal Host routing, route cache, binding, privileges, SIGTERM."""

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from agent.bus.messages import Route
from tests.agent.proxy.conftest import FAST, route_to
from tests.agent.proxy.harness import (
    Backend,
    BusPublisher,
    ProxyProcess,
    make_state_dir,
    remove_state_dir,
    wait_port,
)
from tests.support.env import require_root
from tests.support.ports import free_port


def get(
    port: int, path: str = "/", host: str | None = None, timeout: float = 5
) -> requests.Response:
    headers = {"Host": host} if host else {}
    return requests.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=timeout)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def test_internal_proxy_routes_by_host(
    state_dir: Path, bus: BusPublisher, backend_a: Backend, backend_b: Backend
) -> None:
    internal = ProxyProcess(state_dir, "internal-proxy")  # the real `berth agent internal-proxy`
    try:
        bus.publish(
            [Route("web", backend_a.port, "/"), Route("worker", backend_b.port), Route("new", None)]
        )
        wait_for(lambda: get(internal.port, host="web.svc.internal").status_code == 200)
        assert get(internal.port, host="web.svc.internal").headers["X-Backend"] == "a"
        assert get(internal.port, host="worker.svc.internal:80").headers["X-Backend"] == "b"
        assert get(internal.port, host="WORKER.Svc.Internal").headers["X-Backend"] == "b"
        r = get(internal.port, "/x?y", host="web.svc.internal")
        assert r.json()["path"] == "/x?y"  # paths are never stripped internally
        for path in ("/p1", "/p2?q", "/p3"):  # one header block, new paths (the memo's case)
            r = get(internal.port, path, host="worker.svc.internal")
            assert (r.headers["X-Backend"], r.json()["path"]) == ("b", path)
        r = get(internal.port, host="ghost.svc.internal")
        assert r.status_code == 404 and "ghost.svc.internal" in r.text
        r = get(internal.port, host="<b>evil</b>.svc.internal")
        assert r.status_code == 404 and "<b>" not in r.text
        assert get(internal.port, host="new.svc.internal").status_code == 503
    finally:
        internal.terminate()


@pytest.mark.root
def test_drops_root_after_binding(proxy: ProxyProcess) -> None:
    require_root()
    # it listens first and drops root right after: give it that moment
    wait_for(lambda: proxy.uid() != 0, timeout=5)
    assert proxy.uid() != 0


def test_cached_routes_serve_while_the_reconciler_is_down(backend_a: Backend) -> None:
    state = make_state_dir()
    try:
        pub = BusPublisher(state / "run")
        first = ProxyProcess(state, "proxy")
        try:
            route_to(pub, first, [Route("web", backend_a.port, "/")], "/", "a")
        finally:
            assert first.terminate() == 0
            pub.close()
        assert (state / "cache" / "proxy-routes.json").exists()
        second = ProxyProcess(state, "proxy")  # no publisher anywhere now
        try:
            wait_for(lambda: get(second.port).headers.get("X-Backend") == "a")
        finally:
            second.terminate()
    finally:
        remove_state_dir(state)


def test_listens_where_the_route_table_says_and_rebinds(backend_a: Backend) -> None:
    state = make_state_dir()
    try:
        pub = BusPublisher(state / "run")
        p = ProxyProcess(state, "proxy", bind=False)
        try:
            first, second = free_port(), free_port()
            pub.publish([Route("web", backend_a.port, "/")], external_bind=f"127.0.0.1:{first}")
            wait_port(first, proc=p.proc)
            assert get(first).headers["X-Backend"] == "a"
            with requests.Session() as kept:
                assert kept.get(f"http://127.0.0.1:{first}/").status_code == 200
                pub.publish(
                    [Route("web", backend_a.port, "/")], external_bind=f"127.0.0.1:{second}"
                )
                wait_port(second, proc=p.proc)
                # an open connection to the old address keeps working
                assert kept.get(f"http://127.0.0.1:{first}/again").status_code == 200
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", first), timeout=1).close()
        finally:
            assert p.terminate() == 0
            pub.close()
    finally:
        remove_state_dir(state)


def test_sigterm_finishes_in_flight_requests(
    state_dir: Path, bus: BusPublisher, backend_a: Backend
) -> None:
    p = ProxyProcess(state_dir, "proxy", config=FAST)
    try:
        route_to(bus, p, [Route("web", backend_a.port, "/")], "/", "a")
        events: list[bytes] = []
        errors: list[BaseException] = []

        def stream() -> None:
            try:
                with requests.get(f"http://127.0.0.1:{p.port}/sse", stream=True, timeout=10) as r:
                    events.extend(line for line in r.iter_lines() if line.startswith(b"data:"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                errors.append(exc)

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.4)  # the stream is under way (it lasts 1.5 s)
        p.proc.send_signal(15)
        time.sleep(0.2)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
        t.join()
        assert errors == []
        assert len(events) == 5
        assert p.proc.wait(10) == 0
    finally:
        p.stop()
    assert "draining" in p.logs()


def test_bad_bind_address_is_refused(state_dir: Path) -> None:
    out = os.popen(
        f"{Path(os.sys.executable).parent / 'berth'} agent proxy --state-dir {state_dir} "  # type: ignore[attr-defined]
        "--proxy-bind nonsense 2>&1; echo rc=$?"
    ).read()
    assert "--proxy-bind must be HOST:PORT" in out and "rc=2" in out


def test_tells_systemd_ready_and_pings_the_watchdog(state_dir: Path, bus: BusPublisher) -> None:
    sock_path = state_dir / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o666)  # the proxy sends as its unprivileged user
    listener.settimeout(10)
    p = ProxyProcess(
        state_dir,
        "internal-proxy",
        env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "300000"},
    )
    try:
        messages: list[str] = []
        while not (
            any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 2
        ):
            messages.append(listener.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert f"STATUS=listening on 127.0.0.1:{p.port}" in ready
        p.proc.send_signal(15)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(listener.recv(4096).decode())
        assert p.proc.wait(10) == 0
    finally:
        p.stop()
        listener.close()
        sock_path.unlink()


@pytest.mark.root
def test_dropping_root_hands_over_only_its_own_route_cache(backend_a: Backend) -> None:
    """Another component's cache in the same directory stays its owner's: a proxy (or
    whoever takes it over) must not be able to rewrite the DNS responder's names."""
    require_root()
    state = make_state_dir()
    try:
        cache = state / "cache"
        cache.mkdir(mode=0o755)
        foreign = cache / "dns-routes.json"
        foreign.write_text("{}")
        foreign.chmod(0o600)
        own = cache / "proxy-routes.json"
        own.write_text("{}")  # an unreadable cache is ignored; the file is still its own
        pub = BusPublisher(state / "run")
        proxy = ProxyProcess(state, "proxy")
        try:
            route_to(pub, proxy, [Route("web", backend_a.port, "/")], "/", "a")
            wait_for(lambda: proxy.uid() != 0, timeout=5)
            assert foreign.stat().st_uid == 0
            assert own.stat().st_uid == proxy.uid()
        finally:
            proxy.terminate()
            pub.close()
    finally:
        remove_state_dir(state)
