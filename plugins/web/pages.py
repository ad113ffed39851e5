"""Page rendering (jinja2, autoescaped), the demo shop page, agent sign-in and the console."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kefu.core import __version__
from kefu.core.types import Principal
from kefu.core.web_app import error_response
from kefu.plugins.web import i18n, prechat, security

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LANGUAGES = ("en", "zh")
#: Record kind of an agent's console settings (id: the agent id): language, avatar.
AGENT_KIND = "web.agent"


class Pages:
    """Renders templates with the security headers and the browser's CSRF value."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(("html",), default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("web")

    def render(self, request: web.Request, name: str, status: int = 200, **context: Any):
        csrf = security.csrf_for(request, self.kernel.secret)
        lang = context.pop("lang", None) or i18n.from_header(request.headers.get("Accept-Language"))
        html = self.env.get_template(name).render(
            csrf=csrf,
            version=__version__,
            path=request.path,
            lang=lang,
            _=i18n.translator(lang),
            languages=i18n.LANGUAGE_NAMES,
            **context,
        )
        response = web.Response(text=html, content_type="text/html", status=status)
        security.page_headers(request, response)
        security.finish(request, response, self.settings)
        return response

    async def settings_of(self, principal: Principal) -> dict[str, Any]:
        """The agent's own console settings (language, avatar), a plugin record."""
        record = await self.kernel.storage.get_record(principal.site_id, AGENT_KIND, principal.id)
        return dict(record.data) if record is not None else {}

    async def language(self, request: web.Request, principal: Principal) -> str:
        """The agent's language setting, else the browser's."""
        setting = (await self.settings_of(principal)).get("language")
        return i18n.choose(setting, request.headers.get("Accept-Language"))

    async def agent(self, request: web.Request) -> Principal | None:
        """The signed-in agent of the session cookie, or None."""
        token = request.cookies.get(security.SESSION_COOKIE)
        principal = await self.kernel.hooks.authenticate(request, token) if token else None
        return principal if principal is not None and principal.kind == "agent" else None


async def site_online(kernel: Any, site_id: str) -> dict[str, Any]:
    """Within business hours, and an agent online (stored presence or connected here)?"""
    try:
        hours = kernel.config.section("routing").hours_for(site_id)
    except (KeyError, AttributeError):
        hours = None
    open_now = hours is None or hours.is_open(time.time())
    agents = await kernel.storage.list_agents(site_id)
    online = {a.id for a in agents if a.status == "online"}
    gateway = kernel.delivery
    if gateway is not None and not any(a.status != "offline" for a in agents):
        # no presence stored yet: an agent connected to this process counts as online
        online |= {c.principal.id for c in gateway.agent_connections(site_id)}
    return {
        "open_hours": open_now,
        "agents_online": len(online),
        "online": open_now and bool(online),
    }


async def team_pictures(kernel: Any, site_id: str) -> dict[str, str]:
    """Agent id -> the URL of their picture, for the agents who set one."""
    found: dict[str, str] = {}
    for record in await kernel.storage.list_records(site_id, AGENT_KIND, limit=1000):
        if record.data.get("avatar"):
            version = record.data.get("avatar_version", 0)
            found[record.id] = f"/avatars/{site_id}/{record.id}?v={version}"
    return found


def _text(value: Any) -> str | None:
    """A widget setting the config may show: a string, or nothing."""
    return value if isinstance(value, str) else None


def make_routes(kernel: Any, pages: Pages) -> list[web.RouteDef]:
    """The demo page, the widget's config, sign-in, sign-out and the console."""

    async def demo(request: web.Request) -> web.StreamResponse:
        settings = pages.settings
        site = await kernel.storage.get_site(settings.demo_site) if settings.demo_page else None
        return pages.render(request, "demo.html", site=site, demo_enabled=settings.demo_page)

    async def widget_loader(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC / "widget.js")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    async def widget_config(request: web.Request) -> web.Response:
        site = await kernel.storage.get_site_by_widget_key(request.query.get("key", ""))
        if site is None:
            return error_response(404, "invalid_widget_key", "no site has this widget key")
        state = await site_online(kernel, site.id)
        team = await kernel.storage.list_agents(site.id)
        pictures = await team_pictures(kernel, site.id)
        widget = (
            site.settings.get("widget") if isinstance(site.settings.get("widget"), dict) else {}
        )
        body = {  # the WidgetConfig of the OpenAPI document; free-form settings: strings only
            "site_id": site.id,
            "name": _text(widget.get("title")) or site.name,
            "greeting": _text(widget.get("greeting")),
            "greeting_zh": _text(widget.get("greeting_zh")),  # the widget picks by language
            "color": _text(widget.get("color")),
            "languages": list(LANGUAGES),
            "protocol": 1,
            **state,
            "bot": await kernel.hooks.bot_serves(site.id),  # a bot answers even when offline
            # who may answer, so that a message shows its author's name after a reload too
            "team": [{"id": a.id, "name": a.name, "avatar": pictures.get(a.id)} for a in team],
            "prechat": prechat.form_of(site),  # asked before the first message (prechat.py)
        }
        response = web.json_response(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    async def login_page(request: web.Request) -> web.StreamResponse:
        if await pages.agent(request) is not None:
            raise web.HTTPSeeOther("/console")
        return pages.render(request, "login.html", default_site=pages.settings.demo_site)

    async def open_session(request: web.Request) -> web.Response:
        """Turn a token from ``/v1/auth/login`` into the HttpOnly session cookie."""
        secret = kernel.secret
        submitted = request.headers.get(security.CSRF_HEADER)
        csrf_cookie = request.cookies.get(security.CSRF_COOKIE)
        if not security.csrf_valid(secret, csrf_cookie, submitted, security.session_of(request)):
            return error_response(403, "csrf_failed", "missing or wrong X-CSRF-Token header")
        try:
            body = orjson.loads(await request.read())
            token = body["token"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error_response(400, "bad_json", 'send {"token": ...}')
        expires_at = body.get("expires_at")
        if expires_at is None:
            expires_at = time.time() + 12 * 3600
        if (
            isinstance(expires_at, bool)
            or not isinstance(expires_at, (int, float))
            or not math.isfinite(expires_at)
        ):
            message = "expires_at must be a number (Unix seconds) or absent"
            return error_response(400, "invalid_field", message)
        principal = await kernel.hooks.authenticate(
            request, token if isinstance(token, str) else None
        )
        if principal is None or principal.kind != "agent":
            return error_response(401, "invalid_token", "not an agent's token")
        response = web.json_response({"ok": True, "next": "/console"})
        security.set_session(request, response, token, expires_at, pages.settings)
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        if await security.check_form_csrf(request, kernel.secret) is None:
            return error_response(403, "csrf_failed", "the form's CSRF field is missing or wrong")
        token = request.cookies.get(security.SESSION_COOKIE)
        if token:  # the session ends on the server too: the token stops working everywhere
            await kernel.hooks.end_session(token)
        response = web.HTTPSeeOther("/console/login")
        security.clear_session(response)
        raise response

    async def console(request: web.Request, template: str = "console.html") -> web.StreamResponse:
        principal = await pages.agent(request)
        if principal is None:
            raise web.HTTPSeeOther("/console/login")
        agent = await kernel.storage.get_agent(principal.site_id, principal.id)
        if agent is None:
            raise web.HTTPSeeOther("/console/login")
        return pages.render(
            request,
            template,
            agent=agent,
            is_admin=principal.is_admin,
            can_report=await kernel.hooks.permits(principal, "reports.read", principal.site_id),
            lang=await pages.language(request, principal),
        )

    async def contacts(request: web.Request) -> web.StreamResponse:
        # static/console/contacts.js: search, a contact's conversations, merge (REST)
        return await console(request, "contacts.html")

    return [
        web.get("/", demo),
        web.get("/widget.js", widget_loader),
        web.get("/v1/widget/config", widget_config),
        web.get("/console/login", login_page),
        web.post("/console/session", open_session),
        web.post("/console/logout", logout),
        web.get("/console", console),
        web.get("/console/contacts", contacts),
        web.static("/static", STATIC, append_version=False),
    ]
