"""Administration of a site's agents and of sites.

An admin manages its own site: every lookup is scoped to the caller's
site, so another site's agent or site id is "not found". Creating a site
is the one operation that makes a new tenant; it may create that site's
first admin, who then logs in to it.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from kefu.core.domain import Agent, Site, new_id
from kefu.core.kernel import Kernel
from kefu.core.storage import DuplicateError, email_key
from kefu.plugins.rest_api.endpoint import ApiError, Call, not_found
from kefu.plugins.rest_api.models import (
    AgentCreate,
    AgentList,
    AgentOut,
    SiteCreated,
    SiteList,
    SiteOut,
)
from kefu.plugins.rest_api.widget import with_widget

log = logging.getLogger(__name__)


def new_widget_key() -> str:
    return "wk_" + secrets.token_urlsafe(24)


async def hash_password(kernel: Kernel, password: str) -> str:
    """The auth plugin's slow salted hash (``kefu_auth_hash_password``)."""
    hashed = await kernel.hooks.hash_password(password)
    if not hashed:
        raise ApiError(503, "no_password_hasher", "no enabled plugin hashes passwords")
    return hashed


# -- agents -------------------------------------------------------------------
def agent_out(agent: Agent, state: dict | None = None) -> AgentOut:
    out = AgentOut.model_validate(agent)
    out.disabled = bool((state or {}).get("disabled"))
    return out


async def _visible_agent(call: Call) -> tuple[Agent, dict]:
    """The path's agent and its account state; deleted agents are not found."""
    agent = await call.kernel.storage.get_agent(call.site_id, call.params["id"])
    states = await call.kernel.hooks.account_states(call.site_id) if agent else {}
    state = states.get(agent.id, {}) if agent else {}
    if agent is None or state.get("deleted"):
        raise not_found("agent")
    return agent, state


async def _require_role_grant(call: Call, roles: list[str]) -> None:
    """Granting the install-level role ``owner`` is for owners only."""
    if "owner" in roles:
        await call.require("sites.create", call.site_id)


async def list_agents(call: Call) -> AgentList:
    await call.require("agents.manage", call.site_id)
    agents = await call.kernel.storage.list_agents(call.site_id)
    states = await call.kernel.hooks.account_states(call.site_id)
    return AgentList(
        agents=[
            agent_out(a, states.get(a.id))
            for a in agents
            if not states.get(a.id, {}).get("deleted")
        ]
    )


async def _new_agent(kernel: Kernel, site_id: str, body: AgentCreate) -> Agent:
    agent = Agent(
        id=new_id(),
        site_id=site_id,
        email=email_key(body.email),  # the form the login compares
        name=body.name,
        password_hash=await hash_password(kernel, body.password),
        roles=list(dict.fromkeys(body.roles)),
        capacity=body.capacity,
        skills=list(body.skills),
    )
    try:
        return await kernel.storage.create_agent(agent)
    except DuplicateError:
        raise ApiError(409, "conflict", "an agent with this e-mail exists in the site") from None


async def create_agent(call: Call) -> AgentOut:
    await call.require("agents.manage", call.site_id)
    await _require_role_grant(call, call.body.roles)
    agent = await _new_agent(call.kernel, call.site_id, call.body)
    log.info("agent %s created in site %s by %s", agent.id, agent.site_id, call.principal.id)
    return AgentOut.model_validate(agent)


async def get_agent(call: Call) -> AgentOut:
    agent, state = await _visible_agent(call)
    if not (call.principal.kind == "agent" and call.principal.id == agent.id):
        await call.require("agents.manage", agent)
    return agent_out(agent, state)


async def patch_agent(call: Call) -> AgentOut:
    agent, state = await _visible_agent(call)
    await call.require("agents.manage", agent)
    body = call.body
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    for name, value in changes.items():
        if value is None:  # an explicit null is not "unchanged" (issue 13, hole 7)
            raise ApiError(
                400, "invalid_request", f"{name}: may not be null", field=name, problem="null"
            )
    if "roles" in changes:
        changes["roles"] = list(dict.fromkeys(changes["roles"]))
        if agent.id == call.principal.id and "admin" not in changes["roles"]:
            raise ApiError(400, "cannot_demote_self", "an admin cannot remove its own admin role")
        await _require_role_grant(call, changes["roles"])
    if body.password is not None:
        changes["password_hash"] = await hash_password(call.kernel, body.password)
    updated = dataclasses.replace(agent, **changes)
    if not await call.kernel.storage.update_agent(updated):
        raise not_found("agent")
    if body.password is not None:  # old tokens stop working and open connections close
        await call.kernel.hooks.revoke(agent.site_id, agent.id, "password")
    # routing drains when capacity or skills change; connections follow role changes
    await call.kernel.emit("agent.updated", agent.site_id, agent_id=agent.id)
    return agent_out(updated, state)


# -- sites --------------------------------------------------------------------
async def _own_site(call: Call) -> Site:
    site_id = call.params.get("id", call.site_id)
    site = await call.kernel.storage.get_site(site_id) if site_id == call.site_id else None
    if site is None:
        raise not_found("site")
    await call.require("sites.manage", site.id)
    return site


async def list_sites(call: Call) -> SiteList:
    return SiteList(sites=[SiteOut.model_validate(await _own_site(call))])


async def get_site(call: Call) -> SiteOut:
    return SiteOut.model_validate(await _own_site(call))


async def create_site(call: Call) -> SiteCreated:
    # a new tenant is install-level: owners only, never any site's admin (issue 13, hole 1)
    await call.require("sites.create", call.site_id)
    body = call.body
    settings = with_widget(body.settings, None)
    site = Site(id=new_id(), name=body.name, widget_key=new_widget_key(), settings=settings)
    try:
        site = await call.kernel.storage.create_site(site)
    except DuplicateError:
        raise ApiError(409, "conflict", "the site could not be created, try again") from None
    admin = None
    if body.admin is not None:
        spec = AgentCreate(**body.admin.model_dump(), roles=["admin", "agent"])
        admin = AgentOut.model_validate(await _new_agent(call.kernel, site.id, spec))
    log.info("site %s created by %s of site %s", site.id, call.principal.id, call.site_id)
    return SiteCreated(**SiteOut.model_validate(site).model_dump(), admin=admin)


async def patch_site(call: Call) -> SiteOut:
    site = await _own_site(call)
    body = call.body
    changes = body.model_dump(exclude_unset=True, exclude={"rotate_widget_key", "widget"})
    if body.settings is not None or body.widget is not None:
        widget = body.widget.model_dump(mode="json") if body.widget is not None else None
        changes["settings"] = with_widget(
            body.settings if body.settings is not None else site.settings, widget
        )
    if body.rotate_widget_key:
        changes["widget_key"] = new_widget_key()
    updated = dataclasses.replace(site, **{k: v for k, v in changes.items() if v is not None})
    if not await call.kernel.storage.update_site(updated):
        raise not_found("site")
    return SiteOut.model_validate(updated)
