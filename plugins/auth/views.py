"""HTTP endpoints of the auth plugin: agent login and visitor sessions."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import orjson
from aiohttp import web

from kefu.core.domain import Visitor, new_id, now
from kefu.core.storage import email_key
from kefu.core.web_app import error_response
from kefu.plugins.auth import passwords, tokens
from kefu.plugins.auth.throttle import LoginThrottle

log = logging.getLogger(__name__)

MAX_FIELD = 2048
MAX_ATTRIBUTES_BYTES = 8192
VISITOR_FIELDS = ("name", "referrer", "page", "user_agent")


class BadRequest(Exception):
    """A request body problem, answered with 400 and the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("bad_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("bad_json", "the request body must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest("missing_field", f"field {name!r} is required")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise BadRequest("invalid_field", f"field {name!r} must be a string of at most 2048")
    return value


#: Seconds a widget key's site is reused by ``POST /v1/visitors/session``.
SITE_CACHE_TTL = 5.0
SITE_CACHE_MAX = 10_000


def make_views(kernel: Any) -> list[web.RouteDef]:
    """The auth plugin's routes, bound to one kernel."""
    sites: dict[str, tuple[Any, float]] = {}

    async def site_of(widget_key: str) -> Any:
        """The site of a widget key, cached for :data:`SITE_CACHE_TTL` seconds: a visitor
        storm opens thousands of sessions of one site per second (a rotated key stops
        working within that time; an unknown key is read every time)."""
        now = time.monotonic()
        cached = sites.get(widget_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        site = await kernel.storage.get_site_by_widget_key(widget_key)
        if site is not None:
            if len(sites) >= SITE_CACHE_MAX:
                sites.clear()
            sites[widget_key] = (site, now + SITE_CACHE_TTL)
        return site

    async def login(request: web.Request) -> web.Response:
        settings = kernel.config.section("auth")
        try:
            body = await _json_object(request)
            site_id = _string(body, "site_id", required=True)
            email = email_key(_string(body, "email", required=True))
            password = _string(body, "password", required=True)
        except BadRequest as exc:
            return error_response(400, exc.code, exc.message)
        if kernel.bus is None:
            return error_response(503, "unavailable", "no bus: logins cannot be throttled")
        throttle = LoginThrottle(
            kernel.bus.state, settings.login_max_failures, settings.login_window
        )
        key = (request.remote or "?", site_id, email)
        wait = await throttle.retry_after(*key)
        if wait > 0:
            response = error_response(429, "too_many_attempts", "too many failed logins; wait")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        agent = await kernel.storage.get_agent_by_email(site_id, email)
        stored = agent.password_hash if agent else passwords.dummy_hash(settings.password_cost)
        ok = await asyncio.to_thread(passwords.verify_password, password, stored)
        if agent is None or not ok:
            await throttle.failed(*key)
            log.info("failed login for %r in site %r from %s", email, site_id, key[0])
            return error_response(401, "invalid_credentials", "wrong site, e-mail or password")
        await throttle.succeeded(*key)
        token, expires_at = tokens.issue(
            tokens.kernel_secret(kernel),
            kind="agent",
            site_id=agent.site_id,
            subject=agent.id,
            roles=agent.roles,
            ttl=settings.agent_token_ttl,
        )
        public = {k: getattr(agent, k) for k in ("id", "site_id", "email", "name", "roles")}
        return web.json_response({"token": token, "expires_at": expires_at, "agent": public})

    async def visitor_session(request: web.Request) -> web.Response:
        settings = kernel.config.section("auth")
        try:
            body = await _json_object(request)
            widget_key = _string(body, "widget_key", required=True)
            previous = _string(body, "token", required=False)
            fields = {name: _string(body, name, required=False) for name in VISITOR_FIELDS}
            attributes = _attributes(body.get("attributes"))
        except BadRequest as exc:
            return error_response(400, exc.code, exc.message)
        site = await site_of(widget_key)
        if site is None:
            return error_response(401, "invalid_widget_key", "no site has this widget key")
        fields["user_agent"] = fields["user_agent"] or request.headers.get("User-Agent")
        visitor = None
        claims = tokens.verify(tokens.kernel_secret(kernel), previous)
        if claims is not None and claims.kind == "visitor" and claims.site_id == site.id:
            visitor = await kernel.storage.get_visitor(site.id, claims.id)
        if visitor is None:
            visitor = Visitor(id=new_id(), site_id=site.id)
        for name, value in fields.items():
            if value is not None:
                setattr(visitor, name, value[:MAX_FIELD])
        visitor.attributes = {**visitor.attributes, **attributes}
        visitor.last_seen_at = now()
        visitor = await kernel.storage.upsert_visitor(visitor)
        token, expires_at = tokens.issue(
            tokens.kernel_secret(kernel),
            kind="visitor",
            site_id=site.id,
            subject=visitor.id,
            ttl=settings.visitor_token_ttl,
        )
        return web.json_response(
            {
                "token": token,
                "expires_at": expires_at,
                "visitor_id": visitor.id,
                "site_id": site.id,
            }
        )

    return [
        web.post("/v1/auth/login", login),
        web.post("/v1/visitors/session", visitor_session),
    ]


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("invalid_field", "field 'attributes' must be an object")
    if len(orjson.dumps(value)) > MAX_ATTRIBUTES_BYTES:
        raise BadRequest("invalid_field", "field 'attributes' is larger than 8 KiB")
    return value
