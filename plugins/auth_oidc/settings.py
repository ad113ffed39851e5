"""``[auth_oidc]``: agent single sign-on with an OpenID Connect provider's ID tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kefu.core.config import Section

Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class OidcSettings(Section):
    #: The provider's JWKS document (``jwks_uri`` of its discovery document); unset: off.
    jwks_url: str | None = None
    #: The ``iss`` every token must carry, exactly.
    issuer: str = ""
    #: The ``aud`` every token must name (the client id kefu is registered with).
    audience: str = ""
    #: Signature algorithms accepted: asymmetric only (no ``none``, no HMAC).
    algorithms: list[Algorithm] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    #: Seconds of clock difference tolerated on ``exp``, ``nbf`` and ``iat``.
    leeway_s: float = Field(60.0, ge=0, le=600)
    #: Seconds the keys are kept before the JWKS is fetched again.
    jwks_cache_s: float = Field(300.0, ge=0)
    #: Shortest interval between two fetches caused by an unknown ``kid`` (key rotation).
    jwks_min_refresh_s: float = Field(10.0, ge=0)
    #: The site every token signs in to; or, when unset, the site named by ``site_claim``.
    site_id: str | None = None
    site_claim: str = "kefu_site"
    #: The claim matched against the agent's e-mail in that site (case-insensitive).
    email_claim: str = "email"
    #: Refuse tokens whose ``email_verified`` claim is present and false.
    require_verified_email: bool = True
