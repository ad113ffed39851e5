"""The routing service of one kernel: builds the engine from hooks and config, reacts to events.

Wiring is by domain events, so the gateway and the REST API never import this
plugin:

- ``conversation.queued`` {conversation_id}: the site runs a routing pass;
- ``conversation.resolved``, ``agent.presence`` {agent_id, status, accepting?},
  ``agent.updated`` / ``agent.capacity_changed`` {agent_id}: capacity may have
  freed, the site runs a pass (a resolution's handle time, ``meta["assigned_at"]``
  to ``resolved_at``, feeds the wait estimate);
- ``message.stored`` from an assigned agent answers the assignment
  (``conversation.first_response`` {agent_id, seconds} follows);
- ``conversation.first_response`` and ``conversation.rated`` {agent_id, score 0..1}
  feed the weight factors.

A *pass* (:meth:`RoutingService.drain`) reads the site's queued conversations and
business hours from storage, drains the queue, announces each assignment
(``conversation.assigned`` {conversation_id, agent_id, waited_s, policy}, frames to
the agent, the visitor and the site) and sends waiting visitors their new position
and estimate (``queue.updated`` {positions}). Passes run in a task after the event
(:meth:`kick`): requests that arrive while one runs are served by one more pass, and
the frame that caused them (a visitor's ``start``) is answered first.
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
from kefu.plugins.routing.notices import Notices
from kefu.plugins.routing.policies import Policy
from kefu.plugins.routing.presence import Presence
from kefu.plugins.routing.queue import HandleTimes
from kefu.plugins.routing.settings import site_hours
from kefu.plugins.routing.snapshots import Assignment, QueueStatus, RoutingSource
from kefu.plugins.routing.stats import AgentStats
from kefu.plugins.routing.workflow import Workflow

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
    hours_for: Callable[[str], Any] | None = None,
) -> RoutingEngine:
    """An engine with every plugin's filters, the configured (or named) policy, live hours."""
    settings = kernel.config.section("routing")
    if hours_for is None:

        def hours_for(site_id: str) -> Any:
            return kernel.config.section("routing").hours_for(site_id)

    return RoutingEngine(
        filters=kernel.hooks.routing_filters(),
        policy=make_policy(kernel, policy),
        source=source,
        clock=clock,
        handle_times=HandleTimes(settings.default_handle_time_s),
        hours_for=hours_for,
    )


class RoutingService:
    """Owns the engine of a running kernel; see the module docstring for the events."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.stats = AgentStats()
        self.source = StorageSource(kernel.storage, self.stats)
        self.engine = build_engine(kernel, self.source, hours_for=self.hours_for)
        self.notices = Notices(kernel)
        self.workflow = Workflow(self)
        self.presence = Presence(self)
        self.site_hours: dict[str, Any] = {}  # site id -> hours from the site's settings
        self._passes: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self._sweeper: asyncio.Task | None = None

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("routing")

    def hours_for(self, site_id: str) -> Any:
        """The site's own business hours (site settings), else the config's, else None."""
        return self.site_hours.get(site_id) or self.settings.hours_for(site_id)

    async def start(self) -> None:
        for site in await self.kernel.storage.list_sites():
            self.kick(site.id)
        self.presence.start()
        if self.settings.sweep_interval_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="kefu-routing-sweep")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._passes.values()) if t is not None]
        self.presence.stop()
        self.workflow.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

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

    # -- passes -----------------------------------------------------------------------
    def kick(self, site_id: str) -> None:
        """Run a routing pass for the site soon; coalesces with one already running."""
        task = self._passes.get(site_id)
        if task is not None and not task.done():
            self._again.add(site_id)
            return
        self._passes[site_id] = asyncio.create_task(self._run(site_id), name="kefu-routing-pass")

    async def _run(self, site_id: str) -> None:
        try:
            while True:
                self._again.discard(site_id)
                try:
                    await self.drain(site_id)
                except Exception:
                    log.exception("routing pass of site %s failed", site_id)
                if site_id not in self._again:
                    return
        finally:
            if self._passes.get(site_id) is asyncio.current_task():
                del self._passes[site_id]

    async def settle(self) -> None:
        """Wait until no pass is pending (tests; a graceful shutdown)."""
        while self._passes:
            await asyncio.gather(*list(self._passes.values()), return_exceptions=True)

    async def sync(self, site_id: str) -> None:
        """Make the site's line and hours match storage (other processes queue too)."""
        storage = self.kernel.storage
        site = await storage.get_site(site_id)
        hours = site_hours(site.settings) if site is not None else None
        if hours is None:
            self.site_hours.pop(site_id, None)
        else:
            self.site_hours[site_id] = hours
        stored = await storage.list_conversations(site_id, state=QUEUED, limit=SCAN_LIMIT)
        ids = {c.id for c in stored}
        queue = self.engine.queue(site_id)
        for conversation in queue.ordered():
            if conversation.id not in ids:
                queue.remove(conversation.id)
        for conversation in stored:
            if conversation.id not in queue:
                self.engine.enqueue(await self.source.snapshot(conversation))

    async def drain(self, site_id: str) -> list[Assignment]:
        """One routing pass: sync, drain, announce assignments, update waiting visitors."""
        await self.sync(site_id)
        made = await self.engine.drain(site_id)
        for assignment in made:
            await self.announce(assignment)
        await self.tell_waiting(site_id)
        return made

    async def announce(self, assignment: Assignment, reason: str = "routed") -> None:
        """Events and frames for a conversation the engine (or a pick) gave to an agent."""
        site_id = assignment.site_id
        await self.kernel.emit(
            "conversation.assigned",
            site_id,
            conversation_id=assignment.conversation_id,
            agent_id=assignment.agent_id,
            waited_s=assignment.waited_s,
            policy=assignment.policy,
        )
        await self.workflow.handed(site_id, assignment.conversation_id, reason)

    async def tell_waiting(self, site_id: str) -> None:
        """``queue.updated`` and, to each visitor whose place changed, a ``queue`` frame."""
        queue = self.engine.queue(site_id)
        if not len(queue):
            await self.notices.queue(site_id, {}, {}, False, self.settings.eta_step_s)
            return
        statuses = await self.engine.status(site_id)
        await self.kernel.emit(
            "queue.updated",
            site_id,
            positions={
                cid: {"position": s.position, "eta_s": s.eta_s} for cid, s in statuses.items()
            },
        )
        closed = self.closed(site_id)
        visitors = {c.id: c.meta.get("visitor_id") for c in queue.ordered()}
        await self.notices.queue(site_id, statuses, visitors, closed, self.settings.eta_step_s)

    async def queue_status(self, conversation: Any) -> tuple[QueueStatus, bool] | None:
        """Position and estimate of a waiting conversation, and whether the site is closed."""
        if conversation.state != QUEUED:
            return None
        site_id = conversation.site_id
        if conversation.id not in self.engine.queue(site_id):
            await self.sync(site_id)
        found = (await self.engine.status(site_id, [conversation.id])).get(conversation.id)
        if found is None:
            return None
        return found, self.closed(site_id)

    def closed(self, site_id: str) -> bool:
        """Whether the site is outside its business hours now."""
        hours = self.hours_for(site_id)
        return hours is not None and not hours.is_open(self.engine.clock())

    # -- events -------------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        site_id, data = event.site_id, event.data
        if site_id is None:
            return
        if event.type == "conversation.queued":
            self.kick(site_id)
        elif event.type in DRAIN_EVENTS:
            await self._observe(site_id, event)
            self.kick(site_id)
        elif event.type == "message.stored" and data.get("sender_kind") == "agent":
            await self.workflow.answers.answered(
                site_id, data["conversation_id"], data["sender_id"]
            )
        elif event.type == "conversation.first_response":
            self.stats.responded(site_id, data["agent_id"], float(data["seconds"]))
        elif event.type == "conversation.rated":
            self.stats.rated(site_id, data["agent_id"], float(data["score"]))

    async def _observe(self, site_id: str, event: Event) -> None:
        data = event.data
        if event.type == "agent.presence":
            if "accepting" in data:
                self.stats.set_accepting(site_id, data["agent_id"], bool(data["accepting"]))
            await self.presence.store(site_id, data["agent_id"], data["status"])
        if event.type == "conversation.resolved" and "conversation_id" in data:
            self.engine.withdraw(site_id, data["conversation_id"])
            self.workflow.answers.disarm(site_id, data["conversation_id"])
            stored = await self.kernel.storage.get_conversation(site_id, data["conversation_id"])
            assigned_at = stored.meta.get("assigned_at") if stored else None
            if assigned_at is not None and stored.resolved_at is not None:
                handled = stored.resolved_at - float(assigned_at)
                self.engine.observe_handled(site_id, stored.department, handled)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                for site in await self.kernel.storage.list_sites():
                    self.kick(site.id)
                    await self.workflow.answers.sweep(site.id)
            except Exception:
                log.exception("routing sweep failed; retrying at the next interval")
