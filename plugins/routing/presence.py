"""Agent presence and capacity as routing needs them.

- **Status** (``online`` / ``away`` / ``offline``) is stored on the agent record,
  which every worker's routing indexes read again when it changes. The gateway's
  ``presence`` frame emits ``agent.presence``; this module stores what it says.
  ``PUT /v1/agents/{id}/presence`` does the same over REST.
- **Automatic away, across workers.** Which workers hold an agent's connections is
  kept in the bus's shared state: a set of worker node ids per agent, each member
  backed by a key of that worker's own with a TTL (renewed while it holds
  connections, so a killed worker's entry expires). When an online agent's last
  connection to a worker closes, a timer of ``[routing] away_grace_s`` starts; when
  it ends and no worker holds a connection of theirs, one worker (a shared lease per
  agent) sets them ``away`` (``agent.presence`` with ``auto: true``) and marks them
  auto-away in shared state. Their next connection, to any worker, takes that mark
  (an atomic delete: one winner) and sets them back ``online``. Connections are also
  announced on the bus topic :data:`TOPIC`, which cancels other workers' timers early.
- **Capacity** (``PUT /v1/agents/{id}/capacity``): 0 to 100 open conversations,
  the agent themselves or an admin; ``agent.capacity_changed`` makes routing drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from kefu.core.bus import LocalState, SharedState
from kefu.core.domain import Agent
from kefu.core.errors import ApiError
from kefu.core.types import Principal
from kefu.plugins.routing.snapshots import AGENT_STATUSES, AWAY, ONLINE

log = logging.getLogger(__name__)

#: Bus topic on which workers announce agent connections (cancels their away timers).
TOPIC = "kefu.routing.presence"
MAX_CAPACITY = 100
#: A worker's entry for an agent it holds connections of expires this long after its
#: last renewal (renewed every third of it): a killed worker stops counting after this.
NODE_TTL_S = 60.0
SET_TTL_S = 24 * 3600.0
#: The lease of the worker deciding an agent is away; the auto-away mark's lifetime.
DECIDE_TTL_S = 10.0
AUTO_TTL_S = 7 * 24 * 3600.0


class Presence:
    """Presence and capacity of agents for one kernel's routing service."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.kernel = service.kernel
        self._connections: dict[tuple[str, str], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ops: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None
        self._local: SharedState | None = None
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
        if status != AWAY:  # set by hand (or back online): no longer "away automatically"
            await self._state.delete(self._keys((site_id, agent_id))[2])
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
    def _keys(self, key: tuple[str, str], node: str | None = None) -> tuple[str, str, str]:
        """Shared-state keys: the agent's set of nodes, a node's own entry, the auto mark."""
        base = f"kefu:presence:{{{key[0]}}}:{key[1]}"  # (one hash slot per site)
        return f"{base}:nodes", f"{base}:node:{node or self._node}", f"{base}:auto"

    @property
    def _state(self) -> SharedState:
        bus = self.kernel.bus
        if bus is not None:
            return bus.state
        if self._local is None:  # no bus at all: this process is the whole install
            self._local = LocalState()
        return self._local

    @property
    def _node(self) -> str:
        bus = self.kernel.bus
        return bus.node_id if bus is not None else "local"

    def connected(self, principal: Principal) -> None:
        key = (principal.site_id, principal.id)
        count = self._connections[key] = self._connections.get(key, 0) + 1
        self._cancel(key)
        if self.kernel.bus is not None:
            self.kernel.bus.publish(TOPIC, orjson.dumps(list(key)))
        if count == 1:
            self._shared(self._joined, key)

    def disconnected(self, principal: Principal) -> None:
        key = (principal.site_id, principal.id)
        left = self._connections.get(key, 0) - 1
        if left > 0:
            self._connections[key] = left
            return
        self._connections.pop(key, None)
        self._cancel(key)
        self._shared(self._left, key)
        grace = self.service.settings.away_grace_s
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(grace, lambda: self._spawn(self._grace_over(key)))

    async def adopt(self, site_ids: list[str]) -> None:
        """At start-up: agents stored ``online`` with no connection to this process get
        the grace period a closed connection gets. The process before may have died (or
        stopped) with their consoles connected, and nothing else would ever set them away:
        one whose console does not come back would be given conversations forever. At
        its end they are set away unless some worker holds a connection of theirs; and
        once more after :data:`NODE_TTL_S`, when a killed worker's entry has expired."""
        grace = self.service.settings.away_grace_s
        for site_id in site_ids:
            try:
                agents = await self.kernel.storage.list_agents(site_id)
            except Exception:
                log.exception("presence: listing the agents of site %s failed", site_id)
                continue
            for agent in agents:
                key = (site_id, agent.id)
                if agent.status == ONLINE and not self._connections.get(key):
                    if key not in self._timers:
                        self._adopt_later(key, grace, max(0.0, NODE_TTL_S - grace))

    def _adopt_later(self, key: tuple[str, str], delay: float, again: float) -> None:
        def due() -> None:
            self._timers.pop(key, None)
            self._spawn(self._adopted(key, again))

        self._timers[key] = asyncio.get_running_loop().call_later(delay, due)

    async def _adopted(self, key: tuple[str, str], again: float) -> None:
        await self._grace_over(key)
        if again > 0 and not self._connections.get(key) and key not in self._timers:
            self._adopt_later(key, again, 0.0)

    def _shared(self, op: Any, key: tuple[str, str]) -> None:
        """Shared-state writes in the order the connections came and went (one queue)."""
        self._ops.put_nowait((op, key))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_ops())
            self._tasks.add(self._writer)
            self._writer.add_done_callback(self._tasks.discard)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())
            self._tasks.add(self._renewer)
            self._renewer.add_done_callback(self._tasks.discard)

    async def _write_ops(self) -> None:
        while not self._ops.empty():
            op, key = self._ops.get_nowait()
            try:
                await op(key)
            except Exception:
                log.exception("presence of agent %s: shared state write failed", key[1])

    async def _joined(self, key: tuple[str, str]) -> None:
        if not self._connections.get(key):
            return  # gone again before this ran (its _left follows)
        state = self._state
        nodes, mine, auto = self._keys(key)
        await state.set(mine, b"1", ttl=NODE_TTL_S)
        await state.set_add(nodes, [self._node], ttl=SET_TTL_S)
        if await state.delete(auto):  # set away automatically, by any worker: back online
            await self._back_online(key)

    async def _left(self, key: tuple[str, str]) -> None:
        if self._connections.get(key):
            return  # connected again before this ran
        state = self._state
        nodes, mine, _ = self._keys(key)
        await state.delete(mine)
        await state.set_remove(nodes, [self._node])

    async def _renew(self) -> None:
        """Keep this worker's entries alive while it holds the agents' connections."""
        while self._connections:
            await asyncio.sleep(NODE_TTL_S / 3)
            state = self._state
            for key in list(self._connections):
                nodes, mine, _ = self._keys(key)
                try:
                    await state.set(mine, b"1", ttl=NODE_TTL_S)
                    await state.set_add(nodes, [self._node], ttl=SET_TTL_S)
                except Exception:
                    log.warning("presence of agent %s: renewal failed", key[1], exc_info=True)

    async def connected_anywhere(self, key: tuple[str, str]) -> bool:
        """Whether any worker holds a connection of this agent (stale entries pruned)."""
        if self._connections.get(key):
            return True
        state = self._state
        nodes, _, _ = self._keys(key)
        for node in await state.set_members(nodes):
            if node == self._node:
                continue
            if await state.get(self._keys(key, node)[1]) is not None:
                return True
            await state.set_remove(nodes, [node])  # a worker that died holding them
        return False

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
        state = self._state
        decide = f"kefu:presence:{{{key[0]}}}:{key[1]}:decide"
        try:
            await self._ops_done()
            if await self.connected_anywhere(key):
                return
            if not await state.lease(decide, self._node, ttl=DECIDE_TTL_S):
                return  # another worker is deciding
            try:
                agent = await self.kernel.storage.get_agent(*key)
                if agent is None or agent.status != ONLINE or await self.connected_anywhere(key):
                    return  # (or they connected again while it was read)
                await self.store(*key, AWAY)
                await state.set(self._keys(key)[2], b"1", ttl=AUTO_TTL_S)
                await self._announce(agent, AWAY, None, auto=True)
                log.info("agent %s of site %s set away: disconnected", key[1], key[0])
                if await self.connected_anywhere(key) and await state.delete(self._keys(key)[2]):
                    # connected again while this was stored: they must not stay away
                    await self._back_online(key)
            finally:
                await state.release(decide, self._node)
        except Exception:
            log.exception("setting agent %s away failed", key[1])

    async def _ops_done(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)

    async def _back_online(self, key: tuple[str, str]) -> None:
        try:
            agent = await self.kernel.storage.get_agent(*key)
            if agent is not None and agent.status == AWAY:
                await self.store(*key, ONLINE)
                await self._announce(agent, ONLINE, None, auto=True)
        except Exception:
            log.exception("setting agent %s back online failed", key[1])
