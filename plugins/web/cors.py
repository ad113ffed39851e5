"""Cross-origin access for the widget, and the WebSocket origin check.

The widget runs inside the shop's page, on another origin than kefu. It uses
"simple" requests only (no custom headers: JSON bodies go as ``text/plain``,
tokens in the body or ``?token=``), so browsers send no preflight; this
middleware decides whether the page may *read* the answer:

- ``/v1/visitors/session`` and ``/v1/widget/config``: the origin must be allowed for the
  site of the widget key;
- requests carrying a token (``/v1/poll/open``, ``/v1/uploads?token=``...): allowed for the
  token's site (a stored file, ``GET /v1/uploads/<site>/<name>?token=``, is streamed by its
  handler: decided before it runs, the headers go out with the file);
- ``/v1/poll/send|recv|close?session=``: the session id is a capability that only a page
  allowed to read ``/v1/poll/open`` can know, so the origin is echoed;
- ``/static/`` and ``/widget.js``: public, ``*``.

Allowed origins are the site's ``settings.allowed_origins`` when set, else ``[web]
allowed_origins`` (``"*"``: any). Preflight requests (``OPTIONS``) are answered for an
origin that some site allows. A cross-origin WebSocket is accepted only with a token in the
URL whose site allows the origin; one authenticated by the session cookie never is (cross-site
WebSocket hijacking).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from kefu.core.web_app import RESPONSE_HEADERS, bearer_token, error_response

log = logging.getLogger(__name__)

SITE_PATHS = ("/v1/visitors/session", "/v1/widget/config")
TOKEN_PATHS = (
    "/v1/poll/open", "/v1/uploads", "/v1/conversations", "/v1/availability", "/v1/widget/prechat",
)  # fmt: skip
UPLOAD_FILES = "/v1/uploads/"  # GET: a stored file, read by the widget's text preview
SESSION_PATHS = ("/v1/poll/send", "/v1/poll/recv", "/v1/poll/close")
PUBLIC_PREFIXES = ("/static/", "/widget.js")
CACHE_TTL = 5.0


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class OriginPolicy:
    """Which origins each site allows, cached for a few seconds."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._sites: dict[str, tuple[list[str] | None, float]] = {}
        self._union: tuple[set[str], float] = (set(), 0.0)

    def _configured(self) -> list[str]:
        return self.kernel.config.section("web").allowed_origins

    async def site_origins(self, site_id: str) -> list[str]:
        cached = self._sites.get(site_id)
        now = time.monotonic()
        if cached is None or cached[1] < now:
            site = await self.kernel.storage.get_site(site_id)
            own = site.settings.get("allowed_origins") if site is not None else None
            cached = (own if isinstance(own, list) else None, now + CACHE_TTL)
            self._sites[site_id] = cached
        return cached[0] if cached[0] is not None else self._configured()

    async def allows(self, site_id: str | None, origin: str) -> bool:
        if site_id is None:
            return False
        origins = await self.site_origins(site_id)
        return "*" in origins or origin in origins

    async def any_site_allows(self, origin: str) -> bool:
        union, expires = self._union
        if expires < time.monotonic():
            union = set(self._configured())
            for site in await self.kernel.storage.list_sites():
                own = site.settings.get("allowed_origins")
                if isinstance(own, list):
                    union.update(own)
            self._union = (union, time.monotonic() + CACHE_TTL)
        return "*" in union or origin in union

    def forget(self, site_id: str) -> None:
        self._sites.pop(site_id, None)
        self._union = (set(), 0.0)


async def _site_of_request(kernel: Any, request: web.Request) -> str | None:
    """The site a cross-origin request acts for: its widget key's or its token's."""
    if request.path.startswith(SITE_PATHS):
        key = request.query.get("key")
        if key is None and request.method == "POST":
            try:
                body = orjson.loads(await request.read())
                key = body.get("widget_key") if isinstance(body, dict) else None
            except (orjson.JSONDecodeError, ValueError):
                return None
        if not isinstance(key, str):
            return None
        site = await kernel.storage.get_site_by_widget_key(key)
        return site.id if site else None
    token = bearer_token(request)
    if token is None and request.method == "POST" and request.path == "/v1/poll/open":
        try:
            body = orjson.loads(await request.read())
            token = body.get("token") if isinstance(body, dict) else None
        except (orjson.JSONDecodeError, ValueError):
            return None
    principal = await kernel.hooks.authenticate(request, token if isinstance(token, str) else None)
    return principal.site_id if principal else None


def _allowed(origin: str) -> dict[str, str]:
    """The headers that let a page of ``origin`` read the answer."""
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _allow(response: web.StreamResponse, origin: str) -> None:
    response.headers.update(_allowed(origin))


def make_cors_middleware(kernel: Any, policy: OriginPolicy):
    """The CORS and WebSocket-origin middleware (see the module docstring)."""

    async def preflight(request: web.Request, origin: str) -> web.Response:
        if not await policy.any_site_allows(origin):
            return error_response(403, "origin_not_allowed", f"{origin} may not call kefu")
        response = web.Response(status=204)
        _allow(response, origin)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Range"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def websocket_allowed(request: web.Request, origin: str) -> bool:
        if not request.query.get("token"):
            return False  # the cookie or a header: never from another origin
        principal = await kernel.hooks.authenticate(request, request.query["token"])
        return principal is None or await policy.allows(principal.site_id, origin)

    @web.middleware
    async def cors(request: web.Request, handler):
        origin = request.headers.get("Origin")
        path = request.path
        if not origin or origin == own_origin(request):
            return await handler(request)
        if path.startswith(PUBLIC_PREFIXES):
            response = await handler(request)
            response.headers["Access-Control-Allow-Origin"] = "*"
            return response
        if path == "/v1/ws":
            if not await websocket_allowed(request, origin):
                log.info("refused a WebSocket from origin %s", origin)
                return error_response(403, "origin_not_allowed", f"{origin} may not connect")
            return await handler(request)
        if not path.startswith((*SITE_PATHS, *TOKEN_PATHS, *SESSION_PATHS)):
            return await handler(request)
        if request.method == "OPTIONS":
            return await preflight(request, origin)
        if request.method in ("GET", "HEAD") and path.startswith(UPLOAD_FILES):
            # a file is streamed (its handler prepares the answer): decided before, sent with it
            if await policy.allows(await _site_of_request(kernel, request), origin):
                request[RESPONSE_HEADERS] = _allowed(origin)
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        # decided after the handler, which has read (and cached) the body we may look into
        if path.startswith(SESSION_PATHS):
            allowed = True
        else:
            allowed = await policy.allows(await _site_of_request(kernel, request), origin)
        if allowed and not response.prepared:
            _allow(response, origin)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return cors
