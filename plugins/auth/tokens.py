"""Signed bearer tokens: HMAC-SHA256 over a compact JSON payload.

Format: ``v1.<payload>.<signature>``, both parts base64url without padding.
The payload carries the token's kind (``visitor`` or ``agent``), the site, the
subject id, the roles, the expiry and, for agents, the session it belongs to
(:mod:`kefu.plugins.auth.sessions`: a token is revoked by deleting its session).
The signing key is derived from the per-install secret, so a token signed by
another install (or forged without the secret) never verifies; the site is part
of the signed payload, so a token cannot be moved to another site.

Secret rotation: :func:`verify` takes the current secret first and then the
previous ones still inside their grace period (:mod:`kefu.plugins.auth.rotation`);
:func:`issue` always signs with the current one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import orjson

VERSION = "v1"
KINDS = ("visitor", "agent")
_KEY_LABEL = b"kefu.auth.token.v1"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says about its bearer."""

    kind: str
    site_id: str
    id: str
    roles: tuple[str, ...]
    expires_at: float
    #: the agent session this token belongs to (None for visitors)
    session: str | None = None


_secrets: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def kernel_secret(kernel: Any) -> bytes:
    """``kernel.secret``, read once per kernel (it may live in a file in the data dir)."""
    secret = _secrets.get(kernel)
    if secret is None:
        secret = _secrets[kernel] = kernel.secret
    return secret


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _sign(secret: bytes, signed_part: str) -> str:
    return _b64encode(hmac.new(_key(secret), signed_part.encode(), hashlib.sha256).digest())


def issue(
    secret: bytes,
    *,
    kind: str,
    site_id: str,
    subject: str,
    roles: tuple[str, ...] | list[str] = (),
    ttl: float,
    now: float | None = None,
    session: str | None = None,
) -> tuple[str, float]:
    """Return ``(token, expires_at)`` for a visitor or an agent (``session``: its session id)."""
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    issued = time.time() if now is None else now
    expires_at = float(int(issued + ttl))
    payload = {"k": kind, "s": site_id, "i": subject, "r": list(roles), "e": expires_at}
    if session is not None:
        payload["sid"] = session
    signed_part = f"{VERSION}.{_b64encode(orjson.dumps(payload))}"
    return f"{signed_part}.{_sign(secret, signed_part)}", expires_at


def verify(
    secret: bytes | list[bytes] | tuple[bytes, ...], token: str | None, now: float | None = None
) -> Claims | None:
    """The token's claims, or None when it is malformed, forged or expired.

    ``secret`` may be a list: the token verifies if any of them signed it (rotation).
    An expiry that is not a finite number never verifies."""
    if not token or not isinstance(token, str) or len(token) > 4096:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        return None
    signed_part = f"{parts[0]}.{parts[1]}"
    keys = (secret,) if isinstance(secret, bytes) else secret
    if not any(hmac.compare_digest(_sign(key, signed_part), parts[2]) for key in keys):
        return None
    try:
        payload = orjson.loads(_b64decode(parts[1]))
        expires_at = payload["e"]
        session = payload.get("sid")
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
            return None
        if session is not None and not isinstance(session, str):
            return None
        claims = Claims(
            kind=payload["k"],
            site_id=payload["s"],
            id=payload["i"],
            roles=tuple(payload["r"]),
            expires_at=float(expires_at),
            session=session,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if claims.kind not in KINDS or not isinstance(claims.site_id, str):
        return None
    if not isinstance(claims.id, str) or not math.isfinite(claims.expires_at):
        return None
    if claims.expires_at <= (time.time() if now is None else now):
        return None
    return claims
