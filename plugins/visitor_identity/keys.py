"""Per-site identity secrets, the check of a claim, and the link of a user to one contact.

A site's secrets live in one record (kind :data:`KEYS`, id ``site``): the current one
first, then retired ones that are still accepted until their ``expires_at`` (the grace
period of a rotation). The company's backend signs its user id as
``hex(HMAC-SHA256(secret, user_id))``; :func:`check` compares it with every accepted
secret's, in constant time. A verified user is linked to one visitor by a record of kind
:data:`USERS` (id: a hash of the user id) created only once (``expect_version=0``), so
two devices identifying at the same moment still land in one contact; a record of kind
:data:`VISITORS` says which user a visitor is and whether that was verified.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kefu.core.domain import new_id
from kefu.core.errors import ApiError
from kefu.core.storage import VersionConflict
from kefu.core.types import VisitorIdentity

KEYS = "identity.keys"
USERS = "identity.user"
VISITORS = "identity.visitor"
KEYS_ID = "site"
SECRET_PREFIX = "idsec_"
#: Secrets kept per site: the current one and the retired ones still in their grace period.
MAX_SECRETS = 4
MAX_USER_ID = 256
#: The OpenAPI document's pattern of ``user_id`` (docs/api.md), the same rule.
USER_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,256}")


def user_hash(secret: str, user_id: str) -> str:
    """What the company's backend computes for ``user_id`` (hex, lowercase)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SiteKeys:
    """A site's identity secrets (newest first) and what an unverified claim gets."""

    secrets: tuple[dict[str, Any], ...] = ()
    #: ``refuse``: an unsigned or wrongly signed claim is refused; ``accept``: it is kept,
    #: marked unverified, and never linked to a contact.
    unverified: str = "refuse"
    version: int = 0

    def accepted(self, now: float) -> list[str]:
        return [s["secret"] for s in self.secrets if (s.get("expires_at") or now + 1) > now]


async def load(storage: Any, site_id: str) -> SiteKeys:
    record = await storage.get_record(site_id, KEYS, KEYS_ID)
    if record is None:
        return SiteKeys()
    data = record.data
    secrets_ = tuple(data.get("secrets", ()))
    return SiteKeys(secrets_, data.get("unverified", "refuse"), record.version)


async def _save(storage: Any, site_id: str, keys: SiteKeys) -> SiteKeys:
    data = {"secrets": list(keys.secrets), "unverified": keys.unverified}
    record = await storage.put_record(site_id, KEYS, KEYS_ID, data, expect_version=keys.version)
    return SiteKeys(keys.secrets, keys.unverified, record.version)


async def rotate(storage: Any, site_id: str, grace_s: float, now: float | None = None) -> SiteKeys:
    """A new current secret; the previous one stays accepted for ``grace_s`` seconds."""
    now = time.time() if now is None else now
    for _ in range(5):  # another admin rotating at the same moment: read again
        keys = await load(storage, site_id)
        kept = []
        for old in keys.secrets:
            expires = old.get("expires_at") or now + grace_s
            if expires > now:
                kept.append({**old, "expires_at": min(expires, now + grace_s)})
        fresh = {
            "id": "ids_" + secrets.token_hex(4),
            "secret": SECRET_PREFIX + secrets.token_urlsafe(32),
            "created_at": now,
            "expires_at": None,
        }
        rotated = SiteKeys((fresh, *kept[: MAX_SECRETS - 1]), keys.unverified, keys.version)
        try:
            return await _save(storage, site_id, rotated)
        except VersionConflict:
            continue
    raise ApiError(409, "version_conflict", "the identity secrets changed meanwhile: retry")


async def set_policy(storage: Any, site_id: str, unverified: str) -> SiteKeys:
    keys = await load(storage, site_id)
    try:
        return await _save(storage, site_id, SiteKeys(keys.secrets, unverified, keys.version))
    except VersionConflict:
        raise ApiError(409, "version_conflict", "the identity settings changed: retry") from None


def _signed_by(keys: SiteKeys, user_id: str, given: str, now: float) -> bool:
    given_bytes = given.strip().lower().encode()
    ok = False
    for secret in keys.accepted(now):  # every secret is compared: no early exit
        ok |= hmac.compare_digest(user_hash(secret, user_id).encode(), given_bytes)
    return ok


def _refusal(keys: SiteKeys, user_hash_given: str | None) -> ApiError:
    if not keys.secrets:
        return ApiError(
            401, "identity_not_configured",
            "this site has no identity secret: an admin creates one in Admin > Identity",
        )  # fmt: skip
    if not user_hash_given:
        return ApiError(401, "identity_unsigned", "user_id needs its user_hash (HMAC-SHA256)")
    return ApiError(401, "identity_invalid", "user_hash is not this site's signature of user_id")


async def check(
    storage: Any, site_id: str, claim: dict[str, str | None], visitor_id: str | None
) -> VisitorIdentity:
    """The contact a claim continues as; raises :class:`ApiError` when it is refused."""
    user_id, given = claim.get("user_id") or "", claim.get("user_hash")
    if not USER_ID.fullmatch(user_id):
        raise ApiError(400, "invalid_field", f"user_id: 1-{MAX_USER_ID} characters, no controls")
    now = time.time()
    keys = await load(storage, site_id)
    if given and _signed_by(keys, user_id, given, now):
        return VisitorIdentity(user_id, await link(storage, site_id, user_id, visitor_id), True)
    if keys.unverified != "accept":
        raise _refusal(keys, given)
    # kept as a claim only: never linked, and never on a visitor verified as someone else
    if visitor_id is not None and await verified_user(storage, site_id, visitor_id) not in (
        None,
        user_id,
    ):
        visitor_id = None
    visitor_id = visitor_id or new_id()
    if await verified_user(storage, site_id, visitor_id) is None:
        data = {"user_id": user_id, "verified": False, "at": now}
        await storage.put_record(site_id, VISITORS, visitor_id, data)
    return VisitorIdentity(user_id, visitor_id, False)


async def verified_user(storage: Any, site_id: str, visitor_id: str) -> str | None:
    record = await storage.get_record(site_id, VISITORS, visitor_id)
    if record is None or not record.data.get("verified"):
        return None
    return record.data["user_id"]


def user_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


async def link(storage: Any, site_id: str, user_id: str, visitor_id: str | None) -> str:
    """The visitor linked to ``user_id``; the first time, ``visitor_id`` (unless it is
    another user's contact) or a new one."""
    key = user_key(user_id)
    existing = await storage.get_record(site_id, USERS, key)
    if existing is not None:
        return existing.data["visitor_id"]
    if visitor_id is not None and await verified_user(storage, site_id, visitor_id) is not None:
        visitor_id = None  # a browser another user signed in on: not their contact
    visitor_id = visitor_id or new_id()
    now = time.time()
    try:
        data = {"user_id": user_id, "visitor_id": visitor_id, "linked_at": now}
        await storage.put_record(site_id, USERS, key, data, expect_version=0)
    except VersionConflict:  # the user's other device linked it first
        return (await storage.get_record(site_id, USERS, key)).data["visitor_id"]
    data = {"user_id": user_id, "verified": True, "at": now}
    await storage.put_record(site_id, VISITORS, visitor_id, data)
    return visitor_id


async def merged(storage: Any, site_id: str, kept_id: str, merged_id: str) -> bool:
    """Two contacts were merged (``visitor.merged``): the merged one's verified user now
    lands in the kept contact (unless the kept one is another user's). True when moved."""
    record = await storage.get_record(site_id, VISITORS, merged_id)
    if record is None:
        return False
    await storage.delete_record(site_id, VISITORS, merged_id)
    if not record.data.get("verified") or await verified_user(storage, site_id, kept_id):
        return False
    key = user_key(record.data["user_id"])
    link = await storage.get_record(site_id, USERS, key)
    if link is not None and link.data.get("visitor_id") == merged_id:
        data = {**link.data, "visitor_id": kept_id}
        await storage.put_record(site_id, USERS, key, data, expect_version=link.version)
    await storage.put_record(site_id, VISITORS, kept_id, record.data)
    return True
