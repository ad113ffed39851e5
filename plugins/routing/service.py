"""The routing service of one kernel: builds the engine from hooks and config, reacts to events.

Wiring is by domain events only, so the gateway and the REST API never import
this plugin:

- ``conversation.queued`` {conversation_id}: the conversation joins its site's
  line and the site drains;
- ``conversation.resolved`` {conversation_id}, ``agent.presence`` {agent_id,
  status, accepting?}, ``agent.updated`` / ``agent.capacity_changed``
  {agent_id}: capacity may have freed, the site drains (a resolution's handle
  time, ``meta["assigned_at"]`` to ``resolved_at``, feeds the wait estimate);
- ``conversation.first_response`` {agent_id, seconds} and
  ``conversation.rated`` {agent_id, score 0..1} feed the weight factors.

It emits ``conversation.assigned`` {conversation_id, agent_id, waited_s,
policy} for each assignment and ``queue.updated`` {positions: {id: {position,
eta_s}}} after each drain that leaves conversations waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kefu.core.domain import QUEUED
from kefu.core.facade import choose_named
from kefu.core.types import Event
from kefu.plugins.routing.engine import RoutingEngine
from kefu.plugins.routing.live import SCAN_LIMIT, StorageSource
from kefu.plugins.routing.policies import Policy
from kefu.plugins.routing.queue import HandleTimes
from kefu.plugins.routing.snapshots import Assignment, RoutingSource
from kefu.plugins.routing.stats import AgentStats

log = logging.getLogger(__name__)

DRAIN_EVENTS = frozenset(
    {"conversation.resolved", "agent.presence", "agent.updated", "agent.capacity_changed"}
)


def make_policy(kernel: Any, name: str | None = None) -> Policy:
    """The policy named by ``name`` or ``[routing] policy``; unknown names list the known ones."""
    wanted = name or kernel.config.section("routing").policy
    return choose_named("routing policy", kernel.hooks.routing_policies(), wanted)(kernel)


def build_engine(
    kernel: Any,
    source: RoutingSource,
    *,
    policy: str | None = None,
    clock: Callable[[], float] = time.time,
) -> RoutingEngine:
    """An engine with every plugin's filters, the configured (or named) policy, live hours."""
    settings = kernel.config.section("routing")
    return RoutingEngine(
        filters=kernel.hooks.routing_filters(),
        policy=make_policy(kernel, policy),
        source=source,
        clock=clock,
        handle_times=HandleTimes(settings.default_handle_time_s),
        hours_for=lambda site_id: kernel.config.section("routing").hours_for(site_id),
    )


class RoutingService:
    """Owns the engine of a running kernel; see the module docstring for the events."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.stats = AgentStats()
        self.source = StorageSource(kernel.storage, self.stats)
        self.engine = build_engine(kernel, self.source)
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        for site in await self.kernel.storage.list_sites():
            await self.sync(site.id)
            await self.drain(site.id)
        if self.kernel.config.section("routing").sweep_interval_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="kefu-routing-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def reconfigure(self, settings: Any) -> None:
        """Apply a live ``[routing]`` change: a new policy name or new weights."""
        try:
            if settings.policy != self.engine.policy.name:
                self.engine.policy = make_policy(self.kernel, settings.policy)
            elif hasattr(self.engine.policy, "configure"):
                self.engine.policy.configure(settings.weights)
        except Exception as exc:
            log.error("routing: new settings refused, the running policy stays: %s", exc)
            return
        log.info("routing: policy %r in force", self.engine.policy.name)

    async def sync(self, site_id: str) -> None:
        """Make the site's line match storage (conversations queued by other processes)."""
        stored = await self.kernel.storage.list_conversations(
            site_id, state=QUEUED, limit=SCAN_LIMIT
        )
        ids = {c.id for c in stored}
        queue = self.engine.queue(site_id)
        for conversation in queue.ordered():
            if conversation.id not in ids:
                queue.remove(conversation.id)
        for conversation in stored:
            if conversation.id not in queue:
                self.engine.enqueue(await self.source.snapshot(conversation))

    async def drain(self, site_id: str) -> list[Assignment]:
        made = await self.engine.drain(site_id)
        for assignment in made:
            await self.kernel.emit(
                "conversation.assigned",
                site_id,
                conversation_id=assignment.conversation_id,
                agent_id=assignment.agent_id,
                waited_s=assignment.waited_s,
                policy=assignment.policy,
            )
        if len(self.engine.queue(site_id)):
            statuses = await self.engine.status(site_id)
            await self.kernel.emit(
                "queue.updated",
                site_id,
                positions={
                    cid: {"position": s.position, "eta_s": s.eta_s} for cid, s in statuses.items()
                },
            )
        return made

    async def on_event(self, event: Event) -> None:
        site_id, data = event.site_id, event.data
        if site_id is None:
            return
        if event.type == "conversation.queued":
            stored = await self.kernel.storage.get_conversation(site_id, data["conversation_id"])
            if stored is not None and stored.state == QUEUED:
                self.engine.enqueue(await self.source.snapshot(stored))
                await self.drain(site_id)
        elif event.type in DRAIN_EVENTS:
            await self._observe(site_id, event)
            await self.drain(site_id)
        elif event.type == "conversation.first_response":
            self.stats.responded(site_id, data["agent_id"], float(data["seconds"]))
        elif event.type == "conversation.rated":
            self.stats.rated(site_id, data["agent_id"], float(data["score"]))

    async def _observe(self, site_id: str, event: Event) -> None:
        data = event.data
        if event.type == "agent.presence" and "accepting" in data:
            self.stats.set_accepting(site_id, data["agent_id"], bool(data["accepting"]))
        if event.type == "conversation.resolved" and "conversation_id" in data:
            self.engine.withdraw(site_id, data["conversation_id"])
            stored = await self.kernel.storage.get_conversation(site_id, data["conversation_id"])
            assigned_at = stored.meta.get("assigned_at") if stored else None
            if assigned_at is not None and stored.resolved_at is not None:
                handled = stored.resolved_at - float(assigned_at)
                self.engine.observe_handled(site_id, stored.department, handled)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.kernel.config.section("routing").sweep_interval_s)
            try:
                for site in await self.kernel.storage.list_sites():
                    await self.sync(site.id)
                    await self.drain(site.id)
            except Exception:
                log.exception("routing sweep failed; retrying at the next interval")
