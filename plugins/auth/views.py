"""HTTP endpoints of the auth plugin: agent login and visitor sessions."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from typing import Any

import orjson
from aiohttp import web

from kefu.core.domain import Visitor, new_id, now
from kefu.core.errors import ApiError
from kefu.core.jsonlimits import MAX_DEPTH, too_deep
from kefu.core.storage import email_key
from kefu.core.web_app import error_response
from kefu.plugins.auth import passwords, tokens
from kefu.plugins.auth.accounts import issue_agent_token
from kefu.plugins.auth.sessions import Sessions
from kefu.plugins.auth.throttle import Busy, LoginThrottle, PasswordChecks, client_address

log = logging.getLogger(__name__)

MAX_FIELD = 2048
#: A claim of who the visitor is on the company's site (kefu_auth_visitor_identity).
IDENTITY_FIELDS = ("user_id", "user_hash")
MAX_ATTRIBUTES_BYTES = 8192
VISITOR_FIELDS = ("name", "email", "referrer", "page", "user_agent")


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
    if too_deep(body):
        raise BadRequest("bad_json", f"the request body nests deeper than {MAX_DEPTH} levels")
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


def _retry_later(status: int, code: str, message: str, wait: float) -> web.Response:
    response = error_response(status, code, message)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


def _tag(email: str) -> str:
    """A short stable tag of an e-mail: failures of one account can be told apart in the
    log without the log holding the address."""
    return "e:" + hashlib.sha256(email.encode()).hexdigest()[:10]


def make_views(kernel: Any, token_keys: Any) -> list[web.RouteDef]:
    """The auth plugin's routes, bound to one kernel."""
    sites: dict[str, tuple[Any, float]] = {}

    def checks() -> PasswordChecks:
        settings = kernel.config.section("auth")
        return kernel.plugin_state(
            "auth.password_checks",
            lambda _: PasswordChecks(settings.login_concurrency, settings.login_queue_max),
        )

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
            kernel.bus.state,
            settings.login_max_failures,
            settings.login_window,
            settings.login_global_failures,
        )
        key = (client_address(request, settings.trusted_proxies), site_id, email)
        wait = await throttle.retry_after(*key)
        if wait > 0:
            return _retry_later(429, "too_many_attempts", "too many failed logins; wait", wait)
        delay = await throttle.global_delay(settings.login_global_delay_s)
        if delay:
            await asyncio.sleep(delay)
        agent = await kernel.storage.get_agent_by_email(site_id, email)
        stored = agent.password_hash if agent else passwords.dummy_hash(settings.password_cost)
        try:
            ok = await checks().run(passwords.verify_password, password, stored)
        except Busy:
            return _retry_later(503, "busy", "too many logins at once; retry", 1.0)
        if agent is None or not ok:
            await throttle.failed(*key)
            # no e-mail at INFO (the log would collect guessed addresses and typos)
            log.info("failed login in site %r from %s (%s)", site_id, key[0], _tag(email))
            return error_response(401, "invalid_credentials", "wrong site, e-mail or password")
        await throttle.succeeded(*key)
        account = Sessions(kernel.storage)
        if (await account.account(agent.site_id, agent.id)).get("disabled"):
            return error_response(403, "account_disabled", "this agent is disabled")
        token, expires_at = await issue_agent_token(kernel, agent, key[0])
        if (await account.account(agent.site_id, agent.id)).get("disabled"):  # disabled meanwhile
            await account.end_all(agent.site_id, agent.id)
            return error_response(403, "account_disabled", "this agent is disabled")
        public = {k: getattr(agent, k) for k in ("id", "site_id", "email", "name", "roles")}
        return web.json_response({"token": token, "expires_at": expires_at, "agent": public})

    async def visitor_session(request: web.Request) -> web.Response:
        settings = kernel.config.section("auth")
        try:
            body = await _json_object(request)
            widget_key = _string(body, "widget_key", required=True)
            previous = _string(body, "token", required=False)
            fields = {name: _string(body, name, required=False) for name in VISITOR_FIELDS}
            claim = {name: _string(body, name, required=False) for name in IDENTITY_FIELDS}
            attributes = _attributes(body.get("attributes"))
            if fields["email"] is not None and "@" not in fields["email"]:
                raise BadRequest("invalid_field", "field 'email' is not an e-mail address")
        except BadRequest as exc:
            return error_response(400, exc.code, exc.message)
        site = await site_of(widget_key)
        if site is None:
            return error_response(401, "invalid_widget_key", "no site has this widget key")
        fields["user_agent"] = fields["user_agent"] or request.headers.get("User-Agent")
        visitor = None
        claims = tokens.verify(token_keys(kernel).accepted(), previous)
        if claims is not None and claims.kind == "visitor" and claims.site_id == site.id:
            visitor = await kernel.storage.get_visitor(site.id, claims.id)
        identity = None
        if claim["user_id"] is not None:
            # the identity plugin decides (kefu_auth_visitor_identity): verified claims
            # continue as the user's contact, refused ones end here
            try:
                identity = await kernel.hooks.visitor_identity(
                    site, claim, visitor.id if visitor else None
                )
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.message)
            if identity is None:
                return error_response(
                    401, "identity_not_configured", "no plugin verifies visitor identities"
                )
            if visitor is None or visitor.id != identity.visitor_id:
                visitor = await kernel.storage.get_visitor(site.id, identity.visitor_id)
                visitor = visitor or Visitor(id=identity.visitor_id, site_id=site.id)
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
                "identity": identity
                and {"user_id": identity.user_id, "verified": identity.verified},
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
