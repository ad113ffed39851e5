"""Identity for kefu: signed tokens, agent login, visitor sessions, permissions.

- ``POST /v1/auth/login`` {site_id, email, password} -> an agent token;
- ``POST /v1/visitors/session`` {widget_key, token?, ...} -> a visitor token;
- :func:`kefu_auth_authenticate` turns a token into a
  :class:`kefu.core.types.Principal`; :func:`kefu_auth_permits` applies the rules
  of :mod:`kefu.plugins.auth.policy`.

Tokens are HMAC-SHA256 signed with the per-install secret and bound to one site
(:mod:`kefu.plugins.auth.tokens`); passwords are scrypt hashes
(:mod:`kefu.plugins.auth.passwords`). This plugin is essential: it cannot be
disabled, but another plugin may answer the auth hooks first
(``@hookimpl(tryfirst=True)``).
"""

from __future__ import annotations

import asyncio

from kefu.core.types import Principal
from kefu.hooks import hookimpl
from kefu.plugins.auth import passwords, policy, tokens
from kefu.plugins.auth.bootstrap import bootstrap_demo
from kefu.plugins.auth.settings import AuthSettings
from kefu.plugins.auth.views import make_views


@hookimpl
def kefu_config_schema():
    return {"auth": AuthSettings}


@hookimpl
def kefu_routes(kernel):
    return make_views(kernel)


@hookimpl
async def kefu_startup(kernel):
    if kernel.config.section("auth").bootstrap_demo:
        await bootstrap_demo(kernel)


@hookimpl
async def kefu_auth_authenticate(kernel, request, token):
    claims = tokens.verify(tokens.kernel_secret(kernel), token)
    if claims is None:
        return None
    roles = claims.roles
    if claims.kind == "agent":
        # The stored account decides: a deleted agent's token stops working at once,
        # and a role change applies to tokens already issued.
        agent = await kernel.storage.get_agent(claims.site_id, claims.id)
        if agent is None:
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
