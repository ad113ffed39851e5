"""Verify ID tokens against a JWKS URL: signature, issuer, audience, expiry with leeway.

The keys are fetched with aiohttp and cached for ``jwks_cache_s``; a token whose ``kid``
is not among them makes one early fetch (at most every ``jwks_min_refresh_s``), so a
provider's key rotation is followed without a restart and a flood of made-up ``kid``
values costs no more than one fetch per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jwt

from kefu.plugins.auth_oidc.settings import OidcSettings

log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 5.0


class Refused(Exception):
    """The token is not one this provider issued for kefu (the reason is logged at debug)."""


class JwksVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(self.settings.jwks_url) as resp:
                resp.raise_for_status()
                document = await resp.json(content_type=None)
        keys = {}
        for data in document.get("keys", []):
            try:
                key = jwt.PyJWK(data)
            except (jwt.PyJWKError, jwt.InvalidKeyError, KeyError, ValueError) as exc:
                log.debug("JWKS key skipped: %s", exc)
                continue
            if key.key_id and data.get("use", "sig") == "sig":
                keys[key.key_id] = key
        self._keys, self._fetched_at = keys, time.monotonic()

    async def key(self, kid: str) -> Any:
        age = time.monotonic() - self._fetched_at
        stale = not self._fetched_at or age > self.settings.jwks_cache_s
        unknown = kid not in self._keys and age > self.settings.jwks_min_refresh_s
        if stale or unknown:
            seen = self._fetched_at
            async with self._lock:
                if self._fetched_at == seen:  # nobody fetched while we waited
                    try:
                        await self._fetch()
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        self._fetched_at = time.monotonic()  # back off like a fetch
                        log.warning("JWKS fetch from %s failed: %s", self.settings.jwks_url, exc)
        if kid not in self._keys:
            raise Refused(f"unknown key id {kid!r}")
        return self._keys[kid]

    async def verify(self, token: str) -> dict[str, Any]:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refused(f"not a JWT: {exc}") from None
        if header.get("alg") not in s.algorithms:  # "none" and HS256 never are
            raise Refused(f"algorithm {header.get('alg')!r} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Refused("no key id")
        key = await self.key(kid)
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[header["alg"]],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused(str(exc)) from None
