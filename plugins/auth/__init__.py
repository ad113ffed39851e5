"""Identity for kefu: signed tokens, agent login and sessions, visitor sessions, permissions.

- ``POST /v1/auth/login`` {site_id, email, password} -> an agent token (one session);
- ``POST /v1/auth/logout`` ends the caller's session, ``POST /v1/auth/logout-all``
  every session of the caller; agent administration (disable, enable, delete,
  password) in :mod:`kefu.plugins.auth.accounts`;
- ``POST /v1/visitors/session`` {widget_key, token?, ...} -> a visitor token;
- :func:`kefu_auth_authenticate` turns a token into a
  :class:`kefu.core.types.Principal`; :func:`kefu_auth_permits` applies the rules
  of :mod:`kefu.plugins.auth.policy`.

Tokens are HMAC-SHA256 signed with the per-install secret and bound to one site
(:mod:`kefu.plugins.auth.tokens`; rotation in :mod:`kefu.plugins.auth.rotation`);
an agent token names a session record that is checked on every use
(:mod:`kefu.plugins.auth.sessions`), so it can be revoked. Passwords are scrypt
hashes (:mod:`kefu.plugins.auth.passwords`). This plugin is essential: it cannot
be disabled, but another plugin may answer the auth hooks first
(``@hookimpl(tryfirst=True)``).
"""

from __future__ import annotations

import asyncio

from kefu.core.identity import IdentityChange, announce
from kefu.core.types import Principal
from kefu.hooks import hookimpl, listens_to
from kefu.plugins.auth import passwords, policy, tokens
from kefu.plugins.auth.accounts import end_session, make_endpoints
from kefu.plugins.auth.bootstrap import bootstrap_demo
from kefu.plugins.auth.rotation import token_keys
from kefu.plugins.auth.sessions import Sessions
from kefu.plugins.auth.settings import AuthSettings
from kefu.plugins.auth.views import make_views


def sessions(kernel) -> Sessions:
    return Sessions(kernel.storage)


@hookimpl
def kefu_config_schema():
    return {"auth": AuthSettings}


@hookimpl
def kefu_routes(kernel):
    return make_views(kernel, token_keys)


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints()


@hookimpl
async def kefu_startup(kernel):
    await token_keys(kernel).load()
    if kernel.config.section("auth").bootstrap_demo:
        await bootstrap_demo(kernel)


@hookimpl
async def kefu_config_changed(kernel, section, old, new):
    if section == "auth":
        await token_keys(kernel).load()


@hookimpl
async def kefu_auth_authenticate(kernel, request, token):
    claims = tokens.verify(token_keys(kernel).accepted(), token)
    if claims is None:
        return None
    roles = claims.roles
    if claims.kind == "agent":
        # The stored account and session decide on every use: a deleted agent's or a
        # revoked session's token stops working at once, and role changes apply to
        # tokens already issued.
        agent = await kernel.storage.get_agent(claims.site_id, claims.id)
        if agent is None or not await sessions(kernel).valid(
            claims.site_id, claims.id, claims.session
        ):
            return None
        roles = agent.roles
    return Principal(kind=claims.kind, id=claims.id, site_id=claims.site_id, roles=frozenset(roles))


@hookimpl
def kefu_auth_permits(kernel, principal, action, resource):
    return policy.permits(principal, action, resource)


# Added by the REST API work (issue 3): agent administration hashes passwords through
# this hook, because plugins cannot import each other.
@hookimpl
async def kefu_auth_hash_password(kernel, password):
    cost = kernel.config.section("auth").password_cost
    return await asyncio.to_thread(passwords.hash_password, password, cost)


@hookimpl
async def kefu_auth_revoke(kernel, site_id, agent_id, reason):
    ended = await sessions(kernel).end_all(site_id, agent_id)
    await announce(kernel, IdentityChange(site_id, "agent", agent_id, reason))
    return ended


@hookimpl
async def kefu_auth_end_session(kernel, token):
    return await end_session(kernel, token)


@hookimpl
async def kefu_auth_account_states(kernel, site_id):
    return await sessions(kernel).accounts(site_id)


@hookimpl
@listens_to("agent.updated")
async def kefu_event(kernel, event):
    # roles or other account fields changed (REST, admin pages): open connections follow
    if event.type == "agent.updated" and event.site_id and event.data.get("agent_id"):
        change = IdentityChange(event.site_id, "agent", event.data["agent_id"], "updated")
        await announce(kernel, change)
