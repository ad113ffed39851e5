"""Admin pages: agents, sites and the widget snippet, routing, business hours, canned replies,
bot flows, FAQ, knowledge base, plugins, live status and reports. Server-rendered; every
form carries the CSRF field. Reports are also open to supervisors (``reports.read``), who
see no other page."""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web

from kefu.core.domain import Agent, new_id
from kefu.core.storage import DuplicateError, email_key
from kefu.core.types import Principal
from kefu.core.web_app import error_response
from kefu.plugins.web import security
from kefu.plugins.web.status import MessageRate, site_status

log = logging.getLogger(__name__)

SECTIONS = (
    "status", "reports", "agents", "sites", "widget", "routing", "hours", "canned", "bot", "faq",
    "kb", "llm", "webhooks", "identity", "plugins",
)  # fmt: skip
#: Pages a signed-in agent who is not an admin may open, by the action each needs.
READER_SECTIONS = {"reports": "reports.read"}
#: Install-level pages (install-wide routing and plugin configuration): owners only.
INSTALL_SECTIONS = frozenset({"routing", "plugins"})
#: Navigation labels where capitalising the section name is not right.
LABELS = {
    "status": "Status",
    "reports": "Reports",
    "agents": "Agents",
    "sites": "Sites",
    "widget": "Widget",
    "routing": "Routing",
    "hours": "Hours",
    "canned": "Canned",
    "bot": "Bot",
    "faq": "FAQ",
    "kb": "Knowledge base",
    "llm": "Generative answers",
    "identity": "Identity",
    "plugins": "Plugins",
}


class FormError(Exception):
    """A form value that cannot be used; shown on the page."""


def _skills(text: str) -> list[str]:
    return [s.strip() for s in text.replace(";", ",").split(",") if s.strip()][:50]


def _capacity(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormError("capacity must be a whole number") from None
    if not 0 <= value <= 100:
        raise FormError("capacity must be between 0 and 100")
    return value


def _roles(form: dict[str, str]) -> list[str]:
    """The roles the agent form's boxes give: always agent, then supervisor and admin."""
    extra = [r for r in ("supervisor", "admin") if form.get(r) == "on"]
    return ["agent", *extra]


def _origins(text: str) -> list[str] | None:
    """One origin per line; an empty box means "use the [web] allowed_origins"."""
    origins = [line.strip().rstrip("/") for line in text.splitlines() if line.strip()]
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise FormError(f"{origin!r} is not an origin like https://shop.example")
    return origins or None


def make_routes(
    kernel: Any, pages: Any, rate: MessageRate, forget_origins, figures: Any = lambda: None
) -> list:
    """The ``/admin`` pages of the site of the signed-in admin. ``figures()``: the other
    workers' figures (:class:`~kefu.plugins.web.status.WorkerFigures`) while they exist."""

    async def admin_of(request: web.Request) -> Principal:
        principal = await pages.agent(request)
        if principal is None:
            raise web.HTTPSeeOther("/console/login")
        if not principal.is_admin:
            raise web.HTTPForbidden(text="administrators only")
        return principal

    async def reader_of(request: web.Request, section: str) -> Principal:
        """An admin, or an agent whose roles permit what ``section`` shows."""
        principal = await pages.agent(request)
        if principal is None:
            raise web.HTTPSeeOther("/console/login")
        if not await kernel.hooks.permits(principal, READER_SECTIONS[section], principal.site_id):
            raise web.HTTPForbidden(text="supervisors and administrators only")
        return principal

    async def show(
        request: web.Request, section: str, principal: Principal | None = None, **context: Any
    ) -> web.Response:
        principal = principal or await admin_of(request)
        install = await kernel.hooks.permits(principal, "install.read", None)
        if section in INSTALL_SECTIONS and not install:
            raise web.HTTPForbidden(text="install-level settings: owners only")
        site = await kernel.storage.get_site(principal.site_id)
        if principal.is_admin:
            sections = [x for x in SECTIONS if install or x not in INSTALL_SECTIONS]
        else:  # a supervisor: the pages their roles open, nothing else
            sections = [x for x in SECTIONS if x in READER_SECTIONS]
        return pages.render(
            request,
            f"admin_{section}.html",
            section=section,
            sections=sections,
            labels=LABELS,
            site=site,
            me=principal,
            lang=await pages.language(request, principal),
            **context,
        )

    async def form_of(request: web.Request) -> tuple[Principal, dict[str, str]]:
        principal = await admin_of(request)
        form = await security.check_form_csrf(request, kernel.secret)
        if form is None:
            raise web.HTTPForbidden(text="the form's CSRF field is missing or wrong; reload")
        return principal, form

    async def index(request: web.Request) -> web.StreamResponse:
        principal = await pages.agent(request)
        admin = principal is None or principal.is_admin  # (None: the status page signs in)
        raise web.HTTPSeeOther("/admin/status" if admin else "/admin/reports")

    async def status_page(request: web.Request) -> web.Response:
        principal = await admin_of(request)
        figures_now = await site_status(kernel, principal.site_id, rate, figures())
        return await show(request, "status", figures=figures_now)

    async def status_json(request: web.Request) -> web.Response:
        principal = await pages.agent(request)
        if principal is None or not principal.is_admin:
            return error_response(403, "forbidden", "administrators only")
        status = await site_status(kernel, principal.site_id, rate, figures())
        response = web.json_response(status)
        response.headers["Cache-Control"] = "no-store"
        return response

    async def hold_level(request: web.Request) -> web.StreamResponse:
        """The status page's button: hold a degradation level for some minutes."""
        principal, form = await form_of(request)
        raw = str(form.get("level", ""))
        level = None if raw in ("", "auto") else int(raw)
        minutes = float(form.get("minutes") or 10)
        try:
            by = f"{principal.site_id}/{principal.id}"
            await kernel.pressure.override(level, minutes * 60, by=by)
        except (RuntimeError, ValueError) as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        raise web.HTTPSeeOther("/admin/status")

    async def agents_page(request: web.Request, error: str | None = None) -> web.Response:
        principal = await admin_of(request)
        agents = await kernel.storage.list_agents(principal.site_id)
        return await show(request, "agents", agents=agents, error=error)

    async def create_agent(request: web.Request) -> web.StreamResponse:
        principal, form = await form_of(request)
        try:
            email, name = email_key(form.get("email", "")), form.get("name", "").strip()
            password = form.get("password", "")
            if "@" not in email or not name:
                raise FormError("an e-mail and a name are required")
            if not 8 <= len(password) <= 256:
                raise FormError("the password needs 8 to 256 characters")
            hashed = await kernel.hooks.hash_password(password)
            if not hashed:
                raise FormError("no enabled plugin hashes passwords")
            roles = _roles(form)
            agent = Agent(
                new_id(),
                principal.site_id,
                email,
                name[:200],
                hashed,
                roles,
                capacity=_capacity(form.get("capacity", "5")),
                skills=_skills(form.get("skills", "")),
            )
            await kernel.storage.create_agent(agent)
        except FormError as exc:
            return await agents_page(request, str(exc))
        except DuplicateError:
            return await agents_page(request, "an agent with this e-mail exists already")
        raise web.HTTPSeeOther("/admin/agents")

    async def update_agent(request: web.Request) -> web.StreamResponse:
        principal, form = await form_of(request)
        agent = await kernel.storage.get_agent(principal.site_id, request.match_info["id"])
        if agent is None:
            raise web.HTTPNotFound(text="no such agent in your site")
        try:
            capacity = _capacity(form.get("capacity", str(agent.capacity)))
            roles = _roles(form)
            if agent.id == principal.id and "admin" not in roles:
                raise FormError("you cannot remove your own admin role")
        except FormError as exc:
            return await agents_page(request, str(exc))
        updated = dataclasses.replace(
            agent, capacity=capacity, skills=_skills(form.get("skills", "")), roles=roles
        )
        await kernel.storage.update_agent(updated)
        await kernel.emit("agent.updated", principal.site_id, agent_id=agent.id)
        raise web.HTTPSeeOther("/admin/agents")

    async def sites_page(request: web.Request, error: str | None = None) -> web.Response:
        base = (
            kernel.base_url
            if kernel.config.server.public_url
            else f"{request.scheme}://{request.host}/"
        )
        return await show(request, "sites", error=error, base_url=base)

    async def update_site(request: web.Request) -> web.StreamResponse:
        principal, form = await form_of(request)
        site = await kernel.storage.get_site(principal.site_id)
        settings = dict(site.settings)
        try:
            origins = _origins(form.get("allowed_origins", ""))
        except FormError as exc:
            return await sites_page(request, str(exc))
        if origins is None:
            settings.pop("allowed_origins", None)
        else:
            settings["allowed_origins"] = origins
        name = form.get("name", "").strip()[:200] or site.name
        changed = dataclasses.replace(site, name=name, settings=settings)
        if form.get("rotate") == "on":
            changed.widget_key = "wk_" + secrets.token_urlsafe(24)
        await kernel.storage.update_site(changed)
        forget_origins(site.id)
        raise web.HTTPSeeOther("/admin/sites")

    async def widget_page(request: web.Request) -> web.Response:
        return await show(request, "widget")  # static/admin/widget.js: PATCH /v1/sites/{id}

    async def routing_page(request: web.Request) -> web.Response:
        try:
            routing = kernel.config.section("routing")
        except KeyError:
            routing = None
        factors = kernel.hooks.routing_weight_factors()
        policies = sorted(kernel.hooks.routing_policies())
        return await show(request, "routing", routing=routing, factors=factors, policies=policies)

    async def hours_page(request: web.Request) -> web.Response:
        principal = await admin_of(request)
        try:
            hours = kernel.config.section("routing").hours_for(principal.site_id)
        except KeyError:
            hours = None
        days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        open_now = hours is None or hours.is_open(time.time())
        return await show(request, "hours", hours=hours, days=days, open_now=open_now)

    async def canned_page(request: web.Request) -> web.Response:
        return await show(request, "canned")

    async def bot_page(request: web.Request) -> web.Response:
        return await show(request, "bot")  # static/admin/bot.js calls /v1/bot/flows

    async def faq_page(request: web.Request) -> web.Response:
        return await show(request, "faq")  # static/admin/faq.js calls /v1/bot/faq

    async def kb_page(request: web.Request) -> web.Response:
        return await show(request, "kb")  # static/admin/kb.js calls /v1/kb/articles, /v1/kb/search

    async def llm_page(request: web.Request) -> web.Response:
        return await show(request, "llm")  # static/admin/llm.js calls /v1/llm/settings

    async def webhooks_page(request: web.Request) -> web.Response:
        return await show(request, "webhooks")  # static/admin/webhooks.js calls /v1/webhooks

    async def identity_page(request: web.Request) -> web.Response:
        return await show(request, "identity")  # static/admin/identity.js calls /v1/identity

    async def reports_page(request: web.Request) -> web.Response:
        # static/admin/reports.js calls /v1/reports and draws the charts (SVG)
        return await show(request, "reports", await reader_of(request, "reports"))

    async def plugins_page(request: web.Request) -> web.Response:
        records = [r.as_dict() for r in kernel.plugins.records]
        return await show(request, "plugins", plugins=records)

    return [
        web.get("/admin", index),
        web.get("/admin/status", status_page),
        web.get("/admin/status.json", status_json),
        web.get("/admin/agents", agents_page),
        web.post("/admin/status/degradation", hold_level),
        web.post("/admin/agents", create_agent),
        web.post("/admin/agents/{id}", update_agent),
        web.get("/admin/sites", sites_page),
        web.post("/admin/sites", update_site),
        web.get("/admin/widget", widget_page),
        web.get("/admin/routing", routing_page),
        web.get("/admin/hours", hours_page),
        web.get("/admin/canned", canned_page),
        web.get("/admin/bot", bot_page),
        web.get("/admin/faq", faq_page),
        web.get("/admin/kb", kb_page),
        web.get("/admin/llm", llm_page),
        web.get("/admin/webhooks", webhooks_page),
        web.get("/admin/identity", identity_page),
        web.get("/admin/plugins", plugins_page),
        web.get("/admin/reports", reports_page),
    ]
