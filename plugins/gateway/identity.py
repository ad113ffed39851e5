"""Open connections follow identity changes (:mod:`kefu.core.identity`).

On an :class:`~kefu.core.identity.IdentityChange` from the bus, every connection
of that principal held by this process is authenticated again with the
credential it connected with:

- no longer valid (logged out, signed out everywhere, password changed, disabled,
  deleted, expired): closed with the reason ``revoked`` (WebSocket close code
  4403 after a fatal ``revoked`` error frame; a long-poll session answers
  ``410 revoked``);
- valid with other roles (demoted, promoted): the connection's principal is
  replaced in place and the client gets an ``identity`` frame; every later frame
  is authorised with the new roles.

Every ``[gateway] recheck_interval_s`` seconds all agent connections are checked
the same way, in case a change was published while the bus was down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kefu.core.identity import TOPIC, IdentityChange

log = logging.getLogger(__name__)

REVOKED = "revoked"


def identity_frame(principal: Any, reason: str) -> dict[str, Any]:
    return {
        "op": "identity",
        "reason": reason,
        "principal": {
            "kind": principal.kind,
            "id": principal.id,
            "site": principal.site_id,
            "roles": sorted(principal.roles),
        },
    }


class IdentityWatch:
    """Re-checks this process's connections when an identity changes."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self._unsubscribe: Any = None
        self._sweeper: asyncio.Task | None = None
        self.checked = self.revoked = self.changed = 0  # counters for stats and tests

    def start(self) -> None:
        kernel = self.gateway.kernel
        if kernel.bus is not None:
            self._unsubscribe = kernel.bus.subscribe(TOPIC, self._on_bus)
        interval = self.gateway.settings.recheck_interval_s
        if interval:
            self._sweeper = asyncio.ensure_future(self._sweep(interval))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _on_bus(self, topic: str, payload: bytes) -> None:
        change = IdentityChange.decode(payload)
        if change is None:
            log.warning("ignoring a malformed identity change: %r", payload[:200])
            return
        await self.apply(change)

    def connections_of(self, change: IdentityChange) -> list[Any]:
        registry = self.gateway.registry
        if change.kind == "visitor":
            return list(registry.visitor(change.site_id, change.id))
        return [c for c in registry.site_agents(change.site_id) if c.principal.id == change.id]

    async def apply(self, change: IdentityChange) -> None:
        conns = self.connections_of(change)
        if conns:
            await asyncio.gather(*(self.check(conn, change.reason) for conn in conns))

    async def check(self, conn: Any, reason: str = "changed") -> None:
        """Authenticate ``conn``'s credential again; close or update it."""
        if conn.closed or conn.credential is None:
            return  # not opened with a token (a gRPC service certificate): nothing to check
        self.checked += 1
        old = conn.principal
        try:
            new = await self.gateway.authenticate(None, conn.credential)
        except Exception:  # storage down: keep the connection, the next check decides
            log.warning("identity re-check of %r failed", conn, exc_info=True)
            return
        if new is None or (new.kind, new.id, new.site_id) != (old.kind, old.id, old.site_id):
            self.revoked += 1
            log.info("closing %r: its identity was revoked (%s)", conn, reason)
            await self.gateway.close(conn, REVOKED)
        elif new.roles != old.roles:
            self.changed += 1
            conn.principal = new
            self.gateway.send(conn, identity_frame(new, reason))

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            agents = [c for c in self.gateway.registry if c.principal.kind == "agent"]
            for conn in agents:
                await self.check(conn, "recheck")
