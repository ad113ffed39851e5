"""REST endpoints of signed visitor identity: a site's secrets and policy (admins), and what
a visitor's identity is (agents). docs/api.md, "Visitor identity"; docs/security.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint
from kefu.plugins.visitor_identity import keys as k

TAG = "identity"
ACTION = "identity.manage"
#: Longest grace period a rotation may give the previous secret: 30 days.
MAX_GRACE_S = 30 * 86400.0
SECRET_FIELDS = ("id", "secret", "created_at", "expires_at")


class SecretOut(BaseModel):
    id: str
    secret: str = Field(description="Sign user ids with it: `hex(HMAC-SHA256(secret, user_id))`.")
    created_at: float
    expires_at: float | None = Field(description="Retired: accepted until then. Current: null.")
    current: bool


class IdentitySettings(BaseModel):
    unverified: Literal["refuse", "accept"] = Field(
        description="`refuse`: a claim without a valid `user_hash` is refused; `accept`: it is "
        "kept as an unverified claim (never linked to a contact)."
    )
    secrets: list[SecretOut] = Field(description="The current secret first, then retired ones.")
    grace_s: float = Field(description="The grace period a rotation gives the previous secret.")


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_s: float | None = Field(
        None, ge=0, le=MAX_GRACE_S, description="Default: `[visitor_identity] grace_s`."
    )


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unverified: Literal["refuse", "accept"]


class VisitorIdentityOut(BaseModel):
    visitor_id: str
    user_id: str
    verified: bool
    at: float = Field(description="When the identity was last claimed or linked.")


def _settings(kernel: Any, keys: k.SiteKeys) -> IdentitySettings:
    return IdentitySettings(
        unverified=keys.unverified,
        secrets=[
            SecretOut(**{f: s[f] for f in SECRET_FIELDS}, current=i == 0)
            for i, s in enumerate(keys.secrets)
        ],
        grace_s=kernel.config.section("visitor_identity").grace_s,
    )


async def get_settings(call: Any) -> IdentitySettings:
    await call.require(ACTION, call.site_id)
    return _settings(call.kernel, await k.load(call.kernel.storage, call.site_id))


async def rotate_secret(call: Any) -> IdentitySettings:
    await call.require(ACTION, call.site_id)
    grace = call.body.grace_s
    if grace is None:
        grace = call.kernel.config.section("visitor_identity").grace_s
    keys = await k.rotate(call.kernel.storage, call.site_id, grace)
    return _settings(call.kernel, keys)


async def set_policy(call: Any) -> IdentitySettings:
    await call.require(ACTION, call.site_id)
    keys = await k.set_policy(call.kernel.storage, call.site_id, call.body.unverified)
    return _settings(call.kernel, keys)


async def visitor_identity(call: Any) -> VisitorIdentityOut:
    visitor = await call.kernel.storage.get_visitor(call.site_id, call.params["id"])
    if visitor is not None:
        await call.require("visitor.read", visitor)
        record = await call.kernel.storage.get_record(call.site_id, k.VISITORS, visitor.id)
        if record is not None:
            return VisitorIdentityOut(visitor_id=visitor.id, **record.data)
    raise ApiError(404, "unknown_identity", "this visitor has not been identified")


def make_endpoints() -> list[RestEndpoint]:
    def endpoint(method, path, operation_id, summary, handler, response, **kw) -> RestEndpoint:
        return RestEndpoint(method, path, operation_id, summary, TAG, handler, response, **kw)

    return [
        endpoint("GET", "/v1/identity", "get_identity_settings",
                 "The site's identity secrets and policy", get_settings, IdentitySettings,
                 errors=(403,), description="Admins. Secrets are shown: they belong on the "
                 "company's backend only, never in a page."),
        endpoint("POST", "/v1/identity/secrets", "rotate_identity_secret",
                 "Create a new identity secret (rotate)", rotate_secret, IdentitySettings,
                 status=201, body=RotateBody, errors=(403, 409),
                 description="Admins. The new secret is current at once; the previous ones "
                 "stay accepted for `grace_s` seconds."),
        endpoint("PATCH", "/v1/identity", "set_identity_policy",
                 "Refuse or accept unverified identity claims", set_policy, IdentitySettings,
                 body=PolicyBody, errors=(403, 409)),
        endpoint("GET", "/v1/visitors/{id}/identity", "get_visitor_identity",
                 "A visitor's identity on the company's site", visitor_identity,
                 VisitorIdentityOut, errors=(404,),
                 path_patterns={"id": r"^(?!session$)[A-Za-z0-9_-]{1,64}$"},
                 description="The user id the company's site claimed for the visitor and "
                 "whether it was verified (`user_hash`)."),
    ]  # fmt: skip
