"""Log in, log out, and the checks that run before every dashboard request.

- Sessions: an HttpOnly, SameSite=Lax cookie (Secure when served over HTTPS) holding a
  random token whose digest is in `user_sessions` (see `users`).
- CSRF: every POST carries `csrf_token`, compared in constant time with the session's.
  The login form, which has no session yet, uses a double-submit cookie instead. A POST
  whose Origin header names another site is refused as well.
- Throttling: attempts count per (user name, client address), per address and per user
  over all addresses (a ceiling), in the database so every control-plane process shares
  the count (`login_failures`, `throttle`). An attempt is counted before its password is
  checked, atomically; once throttled, the form answers 429 with the wait, without
  checking the password at all.
"""

import hmac
import secrets
from functools import partial
from urllib.parse import urlsplit

from quart import Blueprint, Response, abort, g, redirect, request

from controlplane import audit
from controlplane.dashboard import users
from controlplane.dashboard.common import Dashboard, render
from controlplane.dashboard.throttle import login_keys
from controlplane.routes import Routes

SESSION_COOKIE = "berth_session"
LOGIN_CSRF_COOKIE = "berth_login_csrf"
PUBLIC_ENDPOINTS = {"dashboard.login", "dashboard.login_post"}
SECURITY_HEADERS = {
    # no inline script or style anywhere: everything comes from /static
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _secure() -> bool:
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https"


def safe_next(raw: str | None) -> str:
    """Only a local path, judged after parsing: never send a fresh login to another site.

    Browsers drop tabs and newlines from a Location and read a backslash as a slash, so
    `/\t/host` or `/\\host` would become `//host`. Anything but printable ASCII (no
    space, no backslash), or a value that parses with a scheme or host, falls back to "/".
    """
    if not raw or any(not "!" <= c <= "~" or c == "\\" for c in raw):
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or raw.startswith("//"):
        return "/"
    return raw


def _origin_ok() -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


routes = Routes()


def register(bp: Blueprint, dash: Dashboard) -> None:
    bp.before_request(partial(require_login, dash))
    bp.after_request(security_headers)
    bp.after_app_request(partial(wake_live_pages, dash))
    routes.bind(bp, dash)


async def require_login(dash: Dashboard) -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    login = await users.lookup_session(dash.ctx.db, request.cookies.get(SESSION_COOKIE))
    if login is None:
        if request.method == "GET" and not request.args.get("fragment"):
            if request.path == "/live":
                abort(401)
            return redirect(f"/login?next={request.full_path.rstrip('?')}")  # type: ignore[return-value]
        abort(401)
    g.login = login
    audit.set_actor(audit.Actor("user", login.user_name))
    if request.method == "POST":
        form = await request.form
        sent = form.get("csrf_token", "")
        if not _origin_ok() or not hmac.compare_digest(sent, login.csrf_token):
            abort(403, "the form was stale or came from another site; reload the page")
    return None


async def security_headers(resp: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(key, value)
    if request.endpoint != "dashboard.static":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


async def wake_live_pages(dash: Dashboard, resp: Response) -> Response:
    # a heartbeat, events, logs or a save were just committed: tell open pages now
    if request.method != "GET" and resp.status_code < 400:
        dash.hub.poke()
    return resp


async def _login_page(error: str | None = None, name: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    g.login_csrf = token
    html, code = await render(
        "dashboard/login.html",
        status,
        error=error,
        name=name,
        next=safe_next(request.args.get("next")),
    )
    resp = Response(html, status=code, content_type="text/html; charset=utf-8")
    resp.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(),
        path="/login",
    )  # fmt: skip
    return resp


@routes.get("/login")
async def login(dash: Dashboard) -> Response:
    if await users.lookup_session(dash.ctx.db, request.cookies.get(SESSION_COOKIE)):
        return redirect(safe_next(request.args.get("next")))  # type: ignore[return-value]
    return await _login_page()


@routes.post("/login")
async def login_post(dash: Dashboard) -> Response:
    db = dash.ctx.db
    form = await request.form
    name = form.get("username", "").strip()[:100]
    password = form.get("password", "")
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(form.get("csrf_token", ""), cookie):
        return await _login_page("The form expired; please try again.", name, 400)
    keys = login_keys(name.lower(), request.remote_addr or "-")
    wait = await dash.throttle.begin(*keys)  # counts this attempt, or refuses it
    if wait > 0:
        await audit.record_request(
            db, "login.failure", audit.Actor("user", name), detail={"throttled": True}
        )
        return await _login_page(
            f"Too many failed attempts. Try again in {int(wait) + 1} s.", name, 429
        )
    user = await users.authenticate(db, name, password)
    if user is None:
        await audit.record_request(db, "login.failure", audit.Actor("user", name))
        return await _login_page("Wrong user name or password.", name, 401)
    await dash.throttle.success(*keys)
    await audit.record_request(db, "login.success", audit.Actor("user", user.name))
    token, session = await users.open_session(db, user)
    resp = redirect(safe_next(form.get("next")))
    resp.set_cookie(
        SESSION_COOKIE, token, max_age=int(users.SESSION_TTL.total_seconds()),
        httponly=True, samesite="Lax", secure=_secure(), path="/",
    )  # fmt: skip
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp  # type: ignore[return-value]


@routes.post("/logout")
async def logout(dash: Dashboard) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await users.close_session(dash.ctx.db, token)
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp  # type: ignore[return-value]
