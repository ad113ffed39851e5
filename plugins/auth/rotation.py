"""Token secret rotation: a new secret signs, the previous ones still verify for a grace period.

To rotate, set the new secret as ``[server] secret`` and list the old one in
``[auth] previous_secrets``. Tokens signed with a previous secret keep working
for ``[auth] rotation_grace_s`` seconds, counted from the moment the first
worker started with it listed (recorded once in storage, install-level record
``auth.rotation``, so every worker and every restart count from the same
moment). New tokens are always signed with the current secret; a visitor who
comes back within the grace period keeps its identity and gets a new token.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from kefu.core.storage import INSTALL, VersionConflict

log = logging.getLogger(__name__)

KIND = "auth.rotation"


def fingerprint(secret: bytes) -> str:
    """Names a previous secret in storage without revealing it."""
    return hashlib.sha256(b"kefu.auth.rotation:" + secret).hexdigest()[:32]


class TokenKeys:
    """The secrets a token may be signed with: the current one first."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.current: bytes = kernel.secret
        #: (secret, accepted until) of the previous secrets
        self.previous: list[tuple[bytes, float]] = []

    def accepted(self, now: float | None = None) -> list[bytes]:
        now = time.time() if now is None else now
        return [self.current, *(key for key, until in self.previous if until > now)]

    async def load(self) -> None:
        """Read when each previous secret was first listed (recording it if new)."""
        settings = self.kernel.config.section("auth")
        previous = []
        for text in settings.previous_secrets:
            key = text.encode()
            if key == self.current:
                continue
            first_seen = await self._first_seen(fingerprint(key))
            until = first_seen + settings.rotation_grace_s
            if until <= time.time():
                log.warning(
                    "auth: a previous token secret's grace period ended; remove it from "
                    "[auth] previous_secrets"
                )
            previous.append((key, until))
        self.previous = previous

    async def _first_seen(self, name: str) -> float:
        storage = self.kernel.storage
        if storage is None:
            return time.time()
        record = await storage.get_record(INSTALL, KIND, name)
        if record is None:
            try:
                record = await storage.put_record(
                    INSTALL, KIND, name, {"first_seen": time.time()}, expect_version=0
                )
            except VersionConflict:  # another worker recorded it first
                record = await storage.get_record(INSTALL, KIND, name)
        return float(record.data.get("first_seen", time.time())) if record else time.time()


def token_keys(kernel: Any) -> TokenKeys:
    """The kernel's :class:`TokenKeys` (made on first use)."""
    return kernel.plugin_state("auth.keys", TokenKeys)
