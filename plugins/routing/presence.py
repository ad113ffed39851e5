"""Agent presence and capacity as routing needs them.

- **Status** (``online`` / ``away`` / ``offline``) is stored on the agent record,
  which every worker's routing indexes read again when it changes. The gateway's
  ``presence`` frame emits ``agent.presence``; this module stores what it says.
  ``PUT /v1/agents/{id}/presence`` does the same over REST.
- **Automatic away.** When an online agent's last connection to this process closes,
  a timer of ``[routing] away_grace_s`` starts; if no connection of theirs opened
  meanwhile (in any worker: connections are announced on the bus topic
  :data:`TOPIC`), they are set ``away`` (``agent.presence`` with ``auto: true``).
  When they connect again to this process, they are set back ``online``.
- **Capacity** (``PUT /v1/agents/{id}/capacity``): 0 to 100 open conversations,
  the agent themselves or an admin; ``agent.capacity_changed`` makes routing drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from kefu.core.domain import Agent
from kefu.core.errors import ApiError
from kefu.core.types import Principal
from kefu.plugins.routing.snapshots import AGENT_STATUSES, AWAY, ONLINE

log = logging.getLogger(__name__)

#: Bus topic on which workers announce agent connections (cancels their away timers).
TOPIC = "kefu.routing.presence"
MAX_CAPACITY = 100


class Presence:
    """Presence and capacity of agents for one kernel's routing service."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.kernel = service.kernel
        self._connections: dict[tuple[str, str], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._auto_away: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()
        self._unsubscribe: Any = None

    def start(self) -> None:
        if self.kernel.bus is not None:
            self._unsubscribe = self.kernel.bus.subscribe(TOPIC, self._on_bus)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()

    # -- status ---------------------------------------------------------------------
    async def store(self, site_id: str, agent_id: str, status: str) -> Agent | None:
        """Write the status to the agent record when it differs (``agent.presence``)."""
        if status not in AGENT_STATUSES:
            return None
        agent = await self.kernel.storage.get_agent(site_id, agent_id)
        if agent is not None and agent.status != status:
            agent.status = status
            await self.kernel.storage.update_agent(agent)
        if status != AWAY:
            self._auto_away.discard((site_id, agent_id))
        return agent

    async def agent_for(self, principal: Principal, agent_id: str) -> Agent:
        """The agent record, if the caller is that agent or an admin of the site."""
        agent = await self.kernel.storage.get_agent(principal.site_id, agent_id)
        if agent is None:
            raise ApiError(404, "unknown_agent", f"no agent {agent_id!r} in this site")
        is_self = principal.kind == "agent" and principal.id == agent.id
        if not is_self and not await self.kernel.hooks.permits(principal, "agents.manage", agent):
            raise ApiError(403, "forbidden", "only the agent themselves or an admin may")
        return agent

    async def set_status(
        self,
        principal: Principal,
        agent_id: str,
        status: str,
        accepting: bool | None = None,
        *,
        auto: bool = False,
    ) -> Agent:
        """Store a status, tell the site's agents and emit ``agent.presence``."""
        if status not in AGENT_STATUSES:
            raise ApiError(400, "invalid_field", "status: online, away or offline", field="status")
        agent = await self.agent_for(principal, agent_id)
        await self._announce(agent, status, accepting, auto=auto)
        agent.status = status
        return agent

    async def _announce(
        self, agent: Agent, status: str, accepting: bool | None, auto: bool = False
    ) -> None:
        extra: dict[str, Any] = {} if accepting is None else {"accepting": accepting}
        if auto:
            extra["auto"] = True
        gateway = self.kernel.delivery
        if gateway is not None:
            frame = {"op": "presence", "agent_id": agent.id, "status": status, **extra}
            await gateway.publish_site_agents(agent.site_id, frame, ephemeral=True)
        await self.kernel.emit(
            "agent.presence", agent.site_id, agent_id=agent.id, status=status, **extra
        )

    # -- capacity --------------------------------------------------------------------
    async def set_capacity(self, principal: Principal, agent_id: str, capacity: int) -> Agent:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise ApiError(400, "invalid_capacity", "capacity must be a whole number")
        if not 0 <= capacity <= MAX_CAPACITY:
            raise ApiError(
                400,
                "invalid_capacity",
                f"capacity must be between 0 and {MAX_CAPACITY}, got {capacity}",
            )
        agent = await self.agent_for(principal, agent_id)
        previous, agent.capacity = agent.capacity, capacity
        if not await self.kernel.storage.update_agent(agent):
            raise ApiError(404, "unknown_agent", f"no agent {agent_id!r} in this site")
        await self.kernel.emit(
            "agent.capacity_changed",
            agent.site_id,
            agent_id=agent.id,
            capacity=capacity,
            previous=previous,
        )
        return agent

    # -- connections and the grace period -----------------------------------------------
    def connected(self, principal: Principal) -> None:
        key = (principal.site_id, principal.id)
        self._connections[key] = self._connections.get(key, 0) + 1
        self._cancel(key)
        if self.kernel.bus is not None:
            self.kernel.bus.publish(TOPIC, orjson.dumps(list(key)))
        if key in self._auto_away:
            self._auto_away.discard(key)
            self._spawn(self._back_online(key))

    def disconnected(self, principal: Principal) -> None:
        key = (principal.site_id, principal.id)
        left = self._connections.get(key, 0) - 1
        if left > 0:
            self._connections[key] = left
            return
        self._connections.pop(key, None)
        self._cancel(key)
        grace = self.service.settings.away_grace_s
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(grace, lambda: self._spawn(self._grace_over(key)))

    def _on_bus(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError):
            site_id, agent_id = orjson.loads(payload)
            self._cancel((site_id, agent_id))  # connected to another worker

    def _cancel(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _grace_over(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        if self._connections.get(key):
            return
        try:
            agent = await self.kernel.storage.get_agent(*key)
            if agent is None or agent.status != ONLINE or self._connections.get(key):
                return  # (or they connected again while it was read)
            await self.store(*key, AWAY)
            self._auto_away.add(key)
            await self._announce(agent, AWAY, None, auto=True)
            log.info("agent %s of site %s set away: disconnected", key[1], key[0])
            if self._connections.get(key) and key in self._auto_away:
                # connected again while this was stored: they must not stay away
                self._auto_away.discard(key)
                await self._back_online(key)
        except Exception:
            log.exception("setting agent %s away failed", key[1])

    async def _back_online(self, key: tuple[str, str]) -> None:
        try:
            agent = await self.kernel.storage.get_agent(*key)
            if agent is not None and agent.status == AWAY:
                await self.store(*key, ONLINE)
                await self._announce(agent, ONLINE, None, auto=True)
        except Exception:
            log.exception("setting agent %s back online failed", key[1])
