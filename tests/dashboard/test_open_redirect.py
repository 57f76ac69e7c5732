"""Issue 15 item 11: `/login?next=` sends a logged-in user only to a local path.

The payloads are the usual open-redirect list (PayloadsAllTheThings "Open Redirect",
OWASP's cheat sheet): protocol-relative URLs, schemes, backslashes and the control
characters browsers strip from a Location (`/%09/host` becomes `//host`)."""

import pytest
import requests

from controlplane.dashboard.auth import safe_next
from tests.dashboard.conftest import Server
from tests.dashboard.test_auth import logged_in

# as they appear in the query string (percent-encoded once)
PAYLOADS = [
    "//evil.example", "///evil.example", "////evil.example/%2f..", "/%09/evil.example/phish",
    "/%0A/evil.example", "/%0D/evil.example", "/%00/evil.example", "/%5Cevil.example",
    "%5C%5Cevil.example", "/%5C/evil.example", "%2F%2Fevil.example", "/%2F/evil.example",
    "https://evil.example", "https:evil.example", "http:/%5C/%5Cevil.example",
    "HtTpS://evil.example", "javascript:alert(1)", "%20//evil.example", "/%20/evil.example",
    "/%E3%80%82evil.example", "/%EF%BC%8F/evil.example", "%09//evil.example",
    "evil.example", "@evil.example", "/%7F/evil.example",
]  # fmt: skip
LOCAL = ["/", "/stacks/abc123", "/stacks/abc123?tab=events&x=%2F%2Fy", "/instances/i-1#log"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_falls_back_to_the_home_page(payload: str) -> None:
    from urllib.parse import unquote

    assert safe_next(unquote(payload)) == "/"


@pytest.mark.parametrize("path", LOCAL)
def test_local_paths_are_kept(path: str) -> None:
    assert safe_next(path) == path


def test_logged_in_redirect_stays_on_the_site(server: Server) -> None:
    http = logged_in(server.url)
    for payload in PAYLOADS:
        resp = http.get(f"{server.url}/login?next={payload}", allow_redirects=False, timeout=10)
        assert resp.status_code == 302 and resp.headers["Location"] == "/", (payload, resp.headers)
    resp = http.get(f"{server.url}/login?next=/stacks/new", allow_redirects=False, timeout=10)
    assert resp.headers["Location"] == "/stacks/new"
    # the anonymous form carries only the cleaned value to its POST
    page = requests.get(f"{server.url}/login?next=/%09/evil.example", timeout=10)
    assert "evil.example" not in page.text
