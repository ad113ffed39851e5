"""The agent's own *Profile* page: display name, console language, picture; the password
form on it calls the auth plugin's ``POST /v1/agents/me/password``. Pictures are kept in
the agent's ``web.agent`` record (at most 200 KB, PNG, JPEG, GIF or WebP, checked by their
first bytes) and served at ``/avatars/{site}/{agent}`` to the console and the widget."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from aiohttp import web

from kefu.plugins.web import i18n, security
from kefu.plugins.web.pages import AGENT_KIND, team_pictures

MAX_AVATAR = 200 * 1024
BAD_PICTURE = "A picture is a PNG, JPEG, GIF or WebP file of at most 200 KB."
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def sniff(data: bytes) -> str | None:
    """The image type of ``data`` by its signature, None for anything else."""
    for signature, mime in _SIGNATURES.items():
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def make_routes(kernel: Any, pages: Any) -> list[web.RouteDef]:
    async def signed_in(request: web.Request) -> Any:
        principal = await pages.agent(request)
        if principal is None:
            raise web.HTTPSeeOther("/console/login")
        return principal

    async def show(request: web.Request, message: str | None = None, error: str | None = None):
        principal = await signed_in(request)
        agent = await kernel.storage.get_agent(principal.site_id, principal.id)
        if agent is None:
            raise web.HTTPSeeOther("/console/login")
        settings = await pages.settings_of(principal)
        return pages.render(
            request,
            "profile.html",
            agent=agent,
            settings=settings,
            avatar=(await team_pictures(kernel, agent.site_id)).get(agent.id),
            is_admin=principal.is_admin,
            message=message or ("Profile saved." if request.query.get("saved") else None),
            error=error,
            lang=await pages.language(request, principal),
        )

    async def profile_page(request: web.Request) -> web.StreamResponse:
        return await show(request)

    async def save_profile(request: web.Request) -> web.StreamResponse:
        principal = await signed_in(request)
        form = await request.post()
        submitted = form.get(security.CSRF_FIELD)
        if not isinstance(submitted, str) or not security.csrf_valid(
            kernel.secret,
            request.cookies.get(security.CSRF_COOKIE),
            submitted,
            security.session_of(request),  # (the value is bound to the session: hole 9)
        ):
            raise web.HTTPForbidden(text="the form's CSRF field is missing or wrong; reload")
        agent = await kernel.storage.get_agent(principal.site_id, principal.id)
        settings = await pages.settings_of(principal)
        name = str(form.get("name") or "").strip()[:200]
        if name and name != agent.name:
            await kernel.storage.update_agent(dataclasses.replace(agent, name=name))
            await kernel.emit("agent.updated", principal.site_id, agent_id=agent.id)
        language = str(form.get("language") or "auto")
        settings["language"] = language if language in i18n.LANGUAGES else "auto"
        upload = form.get("avatar")
        if isinstance(upload, web.FileField):
            data = upload.file.read(MAX_AVATAR + 1)
            if data:
                mime = sniff(data)
                if len(data) > MAX_AVATAR or mime is None:
                    return await show(request, error=BAD_PICTURE)
                settings["avatar"] = base64.b64encode(data).decode()
                settings["avatar_mime"] = mime
                settings["avatar_version"] = int(settings.get("avatar_version", 0)) + 1
        if form.get("remove_avatar") == "on":
            settings.pop("avatar", None)
        await kernel.storage.put_record(principal.site_id, AGENT_KIND, principal.id, settings)
        raise web.HTTPSeeOther("/console/profile?saved=1")

    async def avatar(request: web.Request) -> web.StreamResponse:
        site_id, agent_id = request.match_info["site"], request.match_info["agent"]
        record = await kernel.storage.get_record(site_id, AGENT_KIND, agent_id)
        data = record.data if record is not None else {}
        if not data.get("avatar"):
            raise web.HTTPNotFound(text="no picture")
        response = web.Response(
            body=base64.b64decode(data["avatar"]), content_type=data.get("avatar_mime")
        )
        response.headers["Cache-Control"] = "public, max-age=300"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Access-Control-Allow-Origin"] = "*"  # the widget, on any shop
        return response

    return [
        web.get("/console/profile", profile_page),
        web.post("/console/profile", save_profile),
        web.get("/avatars/{site}/{agent}", avatar),
    ]
