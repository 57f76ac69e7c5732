"""Issue 15 item 10: login throttling is check-and-count in one step, and per (user,
client address), so 40 parallel wrong passwords are not all checked and an attacker on
another address cannot lock the owner out. Real parallel requests from distinct loopback
source addresses (127.0.0.x) to a real control plane."""

from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

from controlplane.dashboard.throttle import DEFAULT_FREE_FAILURES
from tests.dashboard.conftest import PASSWORD, USER, Server

CSRF = "c" * 43  # the login form's double-submit token: any value, sent as cookie and field


class FromAddress(HTTPAdapter):
    """Connect from `ip` (any 127.0.0.0/8 address works on Linux loopback)."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.ip, 0)
        super().init_poolmanager(*args, **kwargs)


def attempt(base: str, ip: str, password: str, user: str = USER) -> int:
    http = requests.Session()
    http.mount("http://", FromAddress(ip))
    http.cookies.set("berth_login_csrf", CSRF, path="/login")
    resp = http.post(base + "/login", data={"csrf_token": CSRF, "username": user,
                     "password": password}, allow_redirects=False, timeout=60)  # fmt: skip
    return resp.status_code


def test_parallel_wrong_passwords_are_counted_before_checking(server: Server) -> None:
    attacker, owner = "127.0.0.2", "127.0.0.3"
    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda _: attempt(server.url, attacker, "guess"), range(40)))
    assert codes.count(401) == DEFAULT_FREE_FAILURES, codes  # only these were checked
    assert codes.count(429) == 40 - DEFAULT_FREE_FAILURES, codes
    # the attacker's address stays throttled, even with the right password...
    assert attempt(server.url, attacker, PASSWORD) == 429
    # ...but the owner, elsewhere, logs in
    assert attempt(server.url, owner, PASSWORD) == 302


def test_one_address_spraying_names_does_not_lock_out_the_owner(server: Server) -> None:
    sprayer, owner = "127.0.0.4", "127.0.0.5"
    for i in range(DEFAULT_FREE_FAILURES + 1):
        assert attempt(server.url, sprayer, "guess", user=f"nobody-{i}") == 401
    assert attempt(server.url, owner, PASSWORD) == 302
