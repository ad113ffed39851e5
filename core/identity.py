"""Identity changes, announced to every process so that open connections follow them.

When an agent's identity changes — logged out, signed out everywhere, password
changed, disabled, deleted, roles changed — whoever changed it calls
:func:`announce`. The change is published on the bus (every worker process gets
it; with the in-process bus, this one), and the gateway of each process checks
its open connections of that principal again: a credential that no longer
authenticates closes the connection (reason ``revoked``), one that now names
other roles updates the connection in place (docs/protocol.md, "Identity
changes"). WebSocket and long-poll connections are both gateway connections, so
both follow.

The bus is not durable: a change published while the bus is down may be missed
by another worker; the gateway therefore also re-checks its agent connections
every ``[gateway] recheck_interval_s`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

TOPIC = "kefu.identity.changed"


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """Connections of ``kind``/``id`` in ``site_id`` must be checked again."""

    site_id: str
    kind: str  # "agent" | "visitor"
    id: str
    #: why, for logs and metrics: logout, logout_all, password, disabled, deleted, roles
    reason: str = "changed"

    def encode(self) -> bytes:
        return orjson.dumps([self.site_id, self.kind, self.id, self.reason])

    @classmethod
    def decode(cls, payload: bytes) -> IdentityChange | None:
        try:
            site_id, kind, id_, reason = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (site_id, kind, id_, reason)):
            return None
        return cls(site_id, kind, id_, reason)


async def announce(kernel: Any, change: IdentityChange) -> None:
    """Publish ``change`` to every process (and flush it: it matters within a second)."""
    bus = kernel.bus
    if bus is None:
        return
    bus.publish(TOPIC, change.encode())
    await bus.flush()
