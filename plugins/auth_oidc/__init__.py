"""Agent single sign-on with OpenID Connect (or any JWT issuer that publishes a JWKS).

With ``[auth_oidc] jwks_url`` set, an ID token from the company's identity provider is
accepted wherever a kefu agent token is (``Authorization: Bearer``, ``?token=`` on the
WebSocket and long-poll): its signature is checked against the provider's keys
(:mod:`.verifier`), then ``iss``, ``aud``, ``exp``/``nbf``/``iat`` (with ``leeway_s`` of
clock skew). The token maps to an existing agent: the site is ``site_id`` (or the
``site_claim`` claim), the agent is the one whose e-mail equals the ``email_claim``
claim; its roles are the stored agent's, so the provider proves *who*, kefu decides
*what*. A token for an unknown, disabled or deleted agent is refused, and so is one
with ``email_verified: false``. kefu's own tokens and passwords keep working beside it.

Needs PyJWT with its crypto extra (``pip install 'kefu[oidc]'``). docs/security.md
"Authentication providers".
"""

from __future__ import annotations

import logging

from kefu.core.types import Principal
from kefu.hooks import hookimpl
from kefu.plugins.auth_oidc.settings import OidcSettings

log = logging.getLogger(__name__)
_STATE = "auth_oidc"


@hookimpl
def kefu_config_schema():
    return {"auth_oidc": OidcSettings}


def _verifier(kernel):
    settings = kernel.config.section("auth_oidc")
    if not settings.jwks_url:
        return None
    from kefu.plugins.auth_oidc.verifier import JwksVerifier

    verifier = kernel.plugin_state(_STATE, lambda k: JwksVerifier(settings))
    if verifier.settings != settings:  # changed live: new keys, new rules
        kernel.drop_plugin_state(_STATE)
        verifier = kernel.plugin_state(_STATE, lambda k: JwksVerifier(settings))
    return verifier


def _looks_like_jwt(token: str | None) -> bool:
    # kefu's own tokens start with their version; a JWT with a JSON header ("eyJ")
    return bool(token) and token.startswith("eyJ") and token.count(".") == 2 and len(token) < 16384


@hookimpl(tryfirst=True)
async def kefu_auth_authenticate(kernel, request, token):
    if not _looks_like_jwt(token):
        return None
    verifier = _verifier(kernel)
    if verifier is None:
        return None
    from kefu.plugins.auth_oidc.verifier import Refused

    try:
        claims = await verifier.verify(token)
    except Refused as exc:
        log.debug("OIDC token refused: %s", exc)
        return None
    return await _agent_principal(kernel, verifier.settings, claims)


async def _agent_principal(kernel, settings: OidcSettings, claims: dict) -> Principal | None:
    site_id = settings.site_id or claims.get(settings.site_claim)
    email = claims.get(settings.email_claim)
    if not isinstance(site_id, str) or not isinstance(email, str):
        return None
    if settings.require_verified_email and claims.get("email_verified") is False:
        return None
    agent = await kernel.storage.get_agent_by_email(site_id, email)
    if agent is None:
        return None
    state = (await kernel.hooks.account_states(site_id)).get(agent.id, {})
    if state.get("disabled") or state.get("deleted"):
        return None
    return Principal(kind="agent", id=agent.id, site_id=site_id, roles=frozenset(agent.roles))
