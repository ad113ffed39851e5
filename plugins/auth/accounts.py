"""Sessions and agent accounts over REST: logout, sign out everywhere, disable, delete, password.

Contributed to the REST API through ``kefu_rest_endpoints`` (served and documented
in ``/v1/openapi.json`` like its own endpoints):

- ``POST /v1/auth/logout``: end the caller's session (its token stops working);
- ``POST /v1/auth/logout-all``: end every session of the caller ("sign out everywhere");
- ``GET /v1/auth/sessions``: the caller's sessions;
- ``POST /v1/agents/{id}/disable`` and ``/enable``: an admin stops (or allows again) an
  agent from signing in; disabling ends its sessions;
- ``DELETE /v1/agents/{id}``: an admin deletes an agent (sessions ended, e-mail freed,
  the record kept scrubbed for history);
- ``POST /v1/agents/{id}/password``: an admin resets an agent's password, or an agent
  changes its own (with ``current_password``); every session of the agent ends, and an
  agent changing its own password gets a new token.

Every one of them that ends sessions announces it (:mod:`kefu.core.identity`): the
agent's open WebSocket and long-poll connections close within a second on every worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.core.errors import ApiError
from kefu.core.identity import IdentityChange, announce
from kefu.core.types import RestEndpoint
from kefu.core.web_app import bearer_token
from kefu.plugins.auth import passwords, tokens
from kefu.plugins.auth.rotation import token_keys
from kefu.plugins.auth.sessions import Sessions

log = logging.getLogger(__name__)

Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PasswordChange(_Body):
    password: Password = Field(description="The new password (8 to 256 characters).")
    current_password: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        None, description="Required when agents change their own password."
    )


class PasswordChanged(BaseModel):
    sessions_ended: int = Field(description="Sessions of the agent that were ended.")
    token: str | None = Field(
        None, description="A new token, when agents changed their own password."
    )
    expires_at: float | None = None


class SessionsEnded(BaseModel):
    sessions_ended: int


class AccountState(BaseModel):
    agent_id: str
    disabled: bool
    deleted: bool = False
    sessions_ended: int = 0


class SessionOut(BaseModel):
    id: str
    created_at: float | None
    expires_at: float | None
    current: bool = Field(description="The session of the token making this request.")


class SessionList(BaseModel):
    sessions: list[SessionOut]


def _sessions(call: Any) -> Sessions:
    return Sessions(call.kernel.storage)


def _agent_principal(call: Any) -> Any:
    principal = call.principal
    if principal is None or principal.kind != "agent":
        raise ApiError(403, "forbidden", "only agents have sessions")
    return principal


def _session_of(call: Any) -> str | None:
    """The session of the request's own token."""
    claims = tokens.verify(token_keys(call.kernel).accepted(), bearer_token(call.request))
    return claims.session if claims is not None else None


async def issue_agent_token(kernel: Any, agent: Any, remote: str | None) -> tuple[str, float]:
    """A new session for ``agent`` and a token naming it."""
    ttl = kernel.config.section("auth").agent_token_ttl
    expires_at = float(int(time.time() + ttl))
    sid = await Sessions(kernel.storage).create(agent.site_id, agent.id, expires_at, remote)
    return tokens.issue(
        tokens.kernel_secret(kernel),
        kind="agent",
        site_id=agent.site_id,
        subject=agent.id,
        roles=agent.roles,
        ttl=expires_at - time.time(),
        session=sid,
    )


async def end_all(kernel: Any, site_id: str, agent_id: str, reason: str) -> int:
    """End the agent's sessions here and in every other auth plugin, and announce it."""
    return await kernel.hooks.revoke(site_id, agent_id, reason)


# -- the caller's own sessions -------------------------------------------------------
async def end_session(kernel: Any, token: str | None) -> bool:
    """End the agent session ``token`` names and announce it; False when it names none."""
    claims = tokens.verify(token_keys(kernel).accepted(), token)
    if claims is None or claims.kind != "agent" or claims.session is None:
        return False
    ended = await Sessions(kernel.storage).end(claims.site_id, claims.session)
    await announce(kernel, IdentityChange(claims.site_id, "agent", claims.id, "logout"))
    return ended


async def logout(call: Any) -> None:
    _agent_principal(call)
    await end_session(call.kernel, bearer_token(call.request))


async def logout_all(call: Any) -> SessionsEnded:
    principal = _agent_principal(call)
    ended = await end_all(call.kernel, principal.site_id, principal.id, "logout_all")
    return SessionsEnded(sessions_ended=ended)


async def list_sessions(call: Any) -> SessionList:
    principal = _agent_principal(call)
    current = _session_of(call)
    found = await _sessions(call).list(principal.site_id, principal.id)
    return SessionList(
        sessions=[
            SessionOut(
                id=r.id,
                created_at=r.data.get("created_at"),
                expires_at=r.data.get("expires_at"),
                current=r.id == current,
            )
            for r in found
        ]
    )


# -- administration of agents --------------------------------------------------------
async def _managed_agent(call: Any) -> Any:
    """The agent of the path, if the caller may manage it (403 for oneself)."""
    agent = await call.kernel.storage.get_agent(call.site_id, call.params["id"])
    state = await _sessions(call).account(call.site_id, agent.id) if agent else {}
    if agent is None or state.get("deleted"):
        raise ApiError(404, "not_found", "agent not found")
    await call.require("agents.manage", agent)
    if agent.id == call.principal.id:
        raise ApiError(400, "cannot_change_self", "an admin cannot disable or delete itself")
    return agent


async def _set_disabled(call: Any, disabled: bool) -> AccountState:
    agent = await _managed_agent(call)
    await _sessions(call).set_account(call.site_id, agent.id, disabled=disabled)
    ended = 0
    if disabled:
        ended = await end_all(call.kernel, call.site_id, agent.id, "disabled")
    log.info(
        "agent %s %s in site %s by %s",
        agent.id, "disabled" if disabled else "enabled", call.site_id, call.principal.id,
    )  # fmt: skip
    await call.kernel.emit("agent.updated", call.site_id, agent_id=agent.id)
    return AccountState(agent_id=agent.id, disabled=disabled, sessions_ended=ended)


async def disable_agent(call: Any) -> AccountState:
    return await _set_disabled(call, True)


async def enable_agent(call: Any) -> AccountState:
    return await _set_disabled(call, False)


async def delete_agent(call: Any) -> None:
    agent = await _managed_agent(call)
    kernel = call.kernel
    await _sessions(call).set_account(call.site_id, agent.id, deleted=True, disabled=True)
    await end_all(kernel, call.site_id, agent.id, "deleted")
    # the record stays (messages name it) but can never sign in again, and frees its e-mail
    scrubbed = dataclasses.replace(
        agent,
        email=f"deleted.{agent.id.lower()}@deleted.invalid",
        name="(deleted)",
        password_hash="!deleted",
        roles=["agent"],
        capacity=0,
        skills=[],
        status="offline",
    )
    await kernel.storage.update_agent(scrubbed)
    log.info("agent %s deleted in site %s by %s", agent.id, call.site_id, call.principal.id)
    await kernel.emit("agent.updated", call.site_id, agent_id=agent.id)


async def change_password(call: Any) -> PasswordChanged:
    kernel, body = call.kernel, call.body
    agent = await kernel.storage.get_agent(call.site_id, call.params["id"])
    state = await _sessions(call).account(call.site_id, agent.id) if agent else {}
    if agent is None or state.get("deleted"):
        raise ApiError(404, "not_found", "agent not found")
    own = call.principal.kind == "agent" and call.principal.id == agent.id
    if own:
        current = body.current_password or ""
        if not await asyncio.to_thread(passwords.verify_password, current, agent.password_hash):
            raise ApiError(403, "wrong_password", "current_password is missing or wrong")
    else:
        await call.require("agents.manage", agent)
    hashed = await kernel.hooks.hash_password(body.password)
    if not hashed:
        raise ApiError(503, "no_password_hasher", "no enabled plugin hashes passwords")
    if not await kernel.storage.update_agent(dataclasses.replace(agent, password_hash=hashed)):
        raise ApiError(404, "not_found", "agent not found")
    ended = await end_all(kernel, call.site_id, agent.id, "password")
    log.info("password of agent %s changed by %s", agent.id, call.principal.id)
    if not own:
        return PasswordChanged(sessions_ended=ended)
    token, expires_at = await issue_agent_token(kernel, agent, call.request.remote)
    return PasswordChanged(sessions_ended=ended, token=token, expires_at=expires_at)


def make_endpoints() -> list[RestEndpoint]:
    agent = {"path_patterns": {"id": r"^[A-Za-z0-9_-]{1,64}$"}}
    return [
        RestEndpoint(
            "POST", "/v1/auth/logout", "logout", "End this session", "auth", logout,
            status=204,
            description="The token of this request stops working at once, and connections "
            "opened with it close (WebSocket 4403, long-poll 410 `revoked`).",
        ),
        RestEndpoint(
            "POST", "/v1/auth/logout-all", "logout_all", "Sign out everywhere", "auth",
            logout_all, response=SessionsEnded,
            description="Every session of the calling agent ends: all its tokens stop working "
            "and its open connections close within a second on every worker.",
        ),
        RestEndpoint(
            "GET", "/v1/auth/sessions", "list_sessions", "The caller's sessions", "auth",
            list_sessions, response=SessionList,
        ),
        RestEndpoint(
            "POST", "/v1/agents/{id}/disable", "disable_agent", "Disable an agent", "agents",
            disable_agent, response=AccountState, errors=(404,), **agent,
            description="The agent can no longer sign in; its sessions end at once. Admins of "
            "the site; an owner's account only by an owner; not oneself (400).",
        ),
        RestEndpoint(
            "POST", "/v1/agents/{id}/enable", "enable_agent", "Enable a disabled agent",
            "agents", enable_agent, response=AccountState, errors=(404,), **agent,
        ),
        RestEndpoint(
            "DELETE", "/v1/agents/{id}", "delete_agent", "Delete an agent", "agents",
            delete_agent, status=204, errors=(404,), **agent,
            description="Sessions end at once; the e-mail is freed; the record is kept "
            "scrubbed, so conversations still name the agent's id.",
        ),
        RestEndpoint(
            "POST", "/v1/agents/{id}/password", "change_agent_password",
            "Reset or change a password", "agents", change_password, body=PasswordChange,
            response=PasswordChanged, errors=(404, 503), **agent,
            description="Admins reset any agent of their site; agents change their own with "
            "`current_password` (403 `wrong_password`) and get a new token. Every session of "
            "the agent ends: old tokens are refused on every transport.",
        ),
    ]  # fmt: skip
