"""What people see: the embeddable visitor widget, the agent console and the admin pages.

- ``/widget.js`` is the one script a shop adds (``<script src=".../widget.js"
  data-site-key="...">``); it draws the chat in a shadow DOM and talks to the
  WebSocket (falling back to long-polling) from the shop's origin, so this plugin
  also answers CORS for the visitor endpoints (:mod:`kefu.plugins.web.cors`);
- ``/console`` is the agents' inbox and chat view (sign in at ``/console/login``);
- ``/admin/...`` are the site administration pages;
- ``/`` is a sample shop page that shows the widget.

Server-rendered with jinja2 plus small native ES modules from ``static/``: no build
step, nothing fetched from elsewhere at run time. Security: strict CSP, CSRF on
every form, HttpOnly SameSite session cookie (:mod:`kefu.plugins.web.security`).
Settings: ``[web]`` (:class:`~kefu.plugins.web.settings.WebSettings`). See docs/ui.md.
"""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web

from kefu.hooks import hookimpl, listens_to
from kefu.plugins.web import admin, pages, prechat, profile, security
from kefu.plugins.web.cors import OriginPolicy, make_cors_middleware
from kefu.plugins.web.settings import WebSettings
from kefu.plugins.web.status import MessageRate, WorkerFigures


class WebState:
    """What the plugin keeps per kernel."""

    def __init__(self, kernel: Any) -> None:
        self.pages = pages.Pages(kernel)
        self.origins = OriginPolicy(kernel)
        self.rate = MessageRate()
        #: set while the bus is shared by several processes (the status page adds them up)
        self.figures: WorkerFigures | None = None


_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state(kernel: Any) -> WebState:
    state = _states.get(kernel)
    if state is None:
        state = _states[kernel] = WebState(kernel)
    return state


@hookimpl
def kefu_config_schema():
    return {"web": WebSettings}


@hookimpl
def kefu_routes(kernel):
    state = _state(kernel)

    async def visitor_conversations(request: web.Request) -> web.Response:
        """A visitor's conversations, newest first (the REST list has no visitor filter)."""
        principal = await state.pages.agent(request)
        if principal is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        if not await kernel.hooks.permits(principal, "conversation.list", principal.site_id):
            return web.json_response({"error": {"code": "forbidden"}}, status=403)
        found = await kernel.storage.list_conversations(
            principal.site_id, visitor_id=request.match_info["id"], limit=20
        )
        keys = ("id", "state", "assignee_id", "created_at", "updated_at", "tags")
        return web.json_response(
            {"conversations": [{k: getattr(c, k) for k in keys} for c in found]}
        )

    async def agents(request: web.Request) -> web.Response:
        """The site's agents for the transfer form: name, presence, skills (no e-mails)."""
        principal = await state.pages.agent(request)
        if principal is None:
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        found = await kernel.storage.list_agents(principal.site_id)
        pictures = await pages.team_pictures(kernel, principal.site_id)
        keys = ("id", "name", "status", "skills", "capacity", "roles")
        return web.json_response(
            {
                "agents": [
                    {**{k: getattr(a, k) for k in keys}, "avatar": pictures.get(a.id)}
                    for a in found
                ]
            }
        )

    return [
        *pages.make_routes(kernel, state.pages),
        *profile.make_routes(kernel, state.pages),
        *prechat.make_routes(kernel, state.pages),
        *admin.make_routes(
            kernel, state.pages, state.rate, state.origins.forget, lambda: state.figures
        ),
        web.get("/console/agents.json", agents),
        web.get("/console/visitors/{id}/conversations.json", visitor_conversations),
    ]


@hookimpl
def kefu_middlewares(kernel):
    state = _state(kernel)
    # CORS outermost so that its headers reach every answer, the CSRF guard inside it
    return [
        (10, make_cors_middleware(kernel, state.origins)),
        (20, security.make_csrf_guard(kernel)),
    ]


@hookimpl
def kefu_startup(kernel):
    bus = kernel.bus
    if bus is not None and bus.name != "memory":
        state = _state(kernel)
        interval = kernel.config.section("web").cluster_interval_s
        state.figures = WorkerFigures(kernel, state.rate, interval)
        state.figures.start()


@hookimpl
async def kefu_shutdown(kernel):
    state = _states.get(kernel)
    if state is not None and state.figures is not None:
        await state.figures.stop()
        state.figures = None


@hookimpl
@listens_to("message.stored")
def kefu_event(kernel, event):
    if event.type == "message.stored" and event.site_id:
        _state(kernel).rate.add(event.site_id, event.ts)
