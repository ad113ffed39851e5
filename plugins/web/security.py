"""Browser security of the web pages: CSP and other headers, CSRF tokens, session cookies.

- Every HTML page is served with a strict Content-Security-Policy: scripts, styles and
  connections from this origin only, no inline script or style, no framing.
- CSRF: a signed random value lives in the ``kefu_csrf`` cookie (HttpOnly, SameSite=Strict);
  pages repeat it in ``<meta name="csrf-token">`` and in hidden form fields, and every
  state-changing request made with the session cookie must send it back (form field
  ``csrf`` or header ``X-CSRF-Token``): the double-submit pattern, signed so that a value
  planted by another site does not verify, and bound to the session cookie it was issued
  with (its signature covers a digest of the session token), so that a value someone
  obtained for their own session (or for no session) is refused with anyone else's.
  Signing in changes the session: the next page issues a value bound to the new one.
- The agent session cookie ``kefu_session`` holds the agent's token: HttpOnly,
  SameSite=Strict, ``Secure`` over HTTPS; JavaScript never sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from aiohttp import web

from kefu.core.web_app import error_response

SESSION_COOKIE = "kefu_session"
CSRF_COOKIE = "kefu_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ISSUED = web.RequestKey("kefu_web_csrf", str)  # the CSRF value issued during this request


def _sign(secret: bytes, value: str, session: str | None) -> str:
    bound = hashlib.sha256((session or "").encode()).digest()  # "" = signed out
    message = b"kefu.web.csrf:" + value.encode() + b"\0" + bound
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def new_csrf(secret: bytes, session: str | None = None) -> str:
    """A CSRF value bound to ``session`` (the session cookie's token; None: signed out)."""
    value = secrets.token_urlsafe(18)
    return f"{value}.{_sign(secret, value, session)}"


def csrf_valid(
    secret: bytes, cookie: str | None, submitted: str | None, session: str | None = None
) -> bool:
    """True when ``submitted`` equals the ``cookie`` value signed for ``session``."""
    if not cookie or not submitted or "." not in cookie:
        return False
    value, signature = cookie.rsplit(".", 1)
    return hmac.compare_digest(_sign(secret, value, session), signature) and hmac.compare_digest(
        cookie, submitted
    )


def session_of(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def csrf_for(request: web.Request, secret: bytes) -> str:
    """The CSRF value of this browser and session, issued now (and set as a cookie) when
    it has none for this session."""
    current = request.cookies.get(CSRF_COOKIE)
    session = session_of(request)
    if current and "." in current and csrf_valid(secret, current, current, session):
        return current
    issued = request.get(ISSUED)
    if issued is None:
        issued = request[ISSUED] = new_csrf(secret, session)
    return issued


def is_https(request: web.Request, settings: Any) -> bool:
    if settings.secure_cookies is not None:
        return bool(settings.secure_cookies)
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def finish(request: web.Request, response: web.StreamResponse, settings: Any) -> None:
    """Set the CSRF cookie issued during this request, if any."""
    issued = request.get(ISSUED)
    if issued:
        response.set_cookie(
            CSRF_COOKIE,
            issued,
            httponly=True,
            samesite="Strict",
            secure=is_https(request, settings),
            path="/",
        )


def set_session(
    request: web.Request, response: web.StreamResponse, token: str, expires_at: float, settings
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(0, int(expires_at - time.time())),
        httponly=True,
        samesite="Strict",
        secure=is_https(request, settings),
        path="/",
    )


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


def content_security_policy(request: web.Request) -> str:
    """Same-origin everything; WebSockets to this host; images also as data: and blob:."""
    ws_scheme = "wss" if request.scheme == "https" else "ws"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            f"connect-src 'self' {ws_scheme}://{request.host}",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = content_security_policy(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"


def cookie_authenticated(request: web.Request) -> bool:
    """The request's credential is the session cookie (no header, no ``?token=``)."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return False
    return bool(request.cookies.get(SESSION_COOKIE)) and not request.query.get("token")


def make_csrf_guard(kernel: Any):
    """Middleware: a state-changing ``/v1/`` request made with the session cookie needs the
    CSRF header (the web pages' own forms check their field in the handlers)."""

    @web.middleware
    async def csrf_guard(request: web.Request, handler):
        if (
            request.method in UNSAFE_METHODS
            and request.path.startswith("/v1/")
            and cookie_authenticated(request)
        ):
            submitted = request.headers.get(CSRF_HEADER)
            cookie = request.cookies.get(CSRF_COOKIE)
            if not csrf_valid(kernel.secret, cookie, submitted, session_of(request)):
                return error_response(403, "csrf_failed", "missing or wrong X-CSRF-Token header")
        return await handler(request)

    return csrf_guard


async def check_form_csrf(request: web.Request, secret: bytes) -> dict[str, str] | None:
    """The posted form's fields when its CSRF field matches, else None."""
    form = await request.post()
    submitted = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not isinstance(submitted, str):
        return None
    if not csrf_valid(secret, request.cookies.get(CSRF_COOKIE), submitted, session_of(request)):
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}
