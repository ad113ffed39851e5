"""The routing service of one kernel: builds the engine from hooks and config, keeps its
indexes in step with storage, reacts to events.

Wiring is by domain events, so the gateway and the REST API never import this
plugin. Each event says which records changed; the service notes them and asks for
a pass of the site, which reads those records again (and nothing else) before it
routes:

- ``conversation.queued`` / ``.resolved`` / ``.declined`` / ``.reassigned`` /
  ``.transferred`` / ``.reopened`` {conversation_id}: that conversation (a
  resolution's handle time, ``meta["assigned_at"]`` to ``resolved_at``, feeds the
  wait estimate);
- ``agent.presence`` {agent_id, status, accepting?} (stored here first),
  ``agent.updated`` / ``agent.capacity_changed`` {agent_id}: that agent;
- ``site.business_hours_changed``: the site's own hours;
- ``message.stored`` from an assigned agent answers the assignment
  (``conversation.first_response`` {agent_id, seconds} follows);
- ``conversation.first_response`` and ``conversation.rated`` {agent_id, score 0..1}
  feed the weight factors (the agent moves in the policy's order).

Other processes sharing the storage hear of the same records on the bus topic
:data:`~kefu.plugins.routing.upkeep.TOPIC`. Storage stays the truth: a site's indexes
are built from it at the first pass (start-up), every ``[routing]
rebuild_interval_s``, and a record a claim disagrees with (the conversation was gone,
the agent full or away) is read again (:mod:`~kefu.plugins.routing.upkeep`).

A *pass* (:meth:`RoutingService.drain`) brings the site's indexes up to date, drains
(:mod:`~kefu.plugins.routing.engine`), announces each assignment
(``conversation.assigned`` {conversation_id, agent_id, waited_s, policy}, frames to
the agent, the visitor and the site) and sends waiting visitors their new position
and estimate (``queue.updated`` {positions}; at most every
``queue_notice_interval_s`` for a line longer than :data:`QUIET_LINE`). Passes run
in a task after the event (:meth:`kick`): requests that arrive while one runs are
served by one more pass, and the frame that caused them (a visitor's ``start``) is
answered first. A pass that storage failed is tried again after a back-off, without
waiting for another event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kefu.core.domain import ASSIGNED, QUEUED, Conversation, new_id
from kefu.core.facade import choose_named
from kefu.core.types import Event, Principal
from kefu.plugins.routing.engine import RoutingEngine
from kefu.plugins.routing.live import StorageSource, conversation_snapshot
from kefu.plugins.routing.notices import Notices
from kefu.plugins.routing.policies import Policy
from kefu.plugins.routing.presence import Presence
from kefu.plugins.routing.queue import HandleTimes
from kefu.plugins.routing.snapshots import Assignment, QueueStatus, RoutingSource
from kefu.plugins.routing.stats import AgentStats
from kefu.plugins.routing.upkeep import TOPIC, Upkeep
from kefu.plugins.routing.workflow import Workflow

log = logging.getLogger(__name__)

#: Events naming a conversation whose state or assignee changed.
CONVERSATION_EVENTS = frozenset(
    {
        "conversation.queued",
        "conversation.resolved",
        "conversation.declined",
        "conversation.reassigned",
        "conversation.transferred",
        "conversation.reopened",
    }
)
AGENT_EVENTS = frozenset({"agent.updated", "agent.capacity_changed"})
#: Lines up to this long are told their positions after every pass.
QUIET_LINE = 200
#: Back-off of a pass that storage failed: doubles from the first to the last.
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0
#: At most this many assignments are replayed to a connecting agent.
REPLAY_LIMIT = 500


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
    live: bool = False,
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
        live=live,
    )


def lease_key(site_id: str) -> str:
    """The shared-state key of a site's routing lease (one hash slot per site)."""
    return f"kefu:routing:{{{site_id}}}:lease"


class RoutingService:
    """Owns the engine of a running kernel; see the module docstring for the events."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.origin = new_id()  # this service on the bus and in ``meta["assigned_by"]``
        self.stats = AgentStats()
        self.source = StorageSource(
            kernel.storage,
            self.stats,
            answer_timeout=lambda: self.settings.answer_timeout_s,
            origin=self.origin,
        )
        self.engine = build_engine(kernel, self.source, hours_for=self.hours_for, live=True)
        self.notices = Notices(kernel)
        self.workflow = Workflow(self)
        self.presence = Presence(self)
        self.site_hours: dict[str, Any] = {}  # site id -> hours from the site's settings
        self.upkeep = Upkeep(self)
        self.engine.on_conflict = self.upkeep.conflict
        self._passes: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self._backoff: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        self._unsubscribe: Any = None
        self._owned: set[str] = set()  # sites whose lease this service holds
        self._lease_failing = False
        self._passed: dict[str, float] = {}  # site -> monotonic time of its last pass here
        self._keeper: asyncio.Task | None = None
        self._lease_watch: dict[str, asyncio.Task] = {}  # followers: site -> lease retries

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("routing")

    def hours_for(self, site_id: str) -> Any:
        """The site's own business hours (site settings), else the config's, else None."""
        return self.site_hours.get(site_id) or self.settings.hours_for(site_id)

    async def start(self) -> None:
        if self.kernel.bus is not None:
            self._unsubscribe = self.kernel.bus.subscribe(TOPIC, self.upkeep.on_bus)
        sites = [site.id for site in await self.kernel.storage.list_sites()]
        for site_id in sites:
            self.kick(site_id)
        self.presence.start()
        # agents left online by a process that died: away unless they come back in time
        task = asyncio.create_task(self.presence.adopt(sites), name="kefu-routing-adopt")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.settings.sweep_interval_s > 0:
            self._sweeper = asyncio.create_task(self._sweep(), name="kefu-routing-sweep")
        if self.kernel.bus is not None:
            self._keeper = asyncio.create_task(self._keep_leases(), name="kefu-routing-lease")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for handle in (*self._timers.values(), *(s.tell_later for s in self.upkeep.sites.values())):
            if handle is not None:
                handle.cancel()
        tasks = [
            t
            for t in (self._sweeper, self._keeper, *self._passes.values(), *self._tasks)
            if t is not None
        ]
        tasks += self._lease_watch.values()
        self.presence.stop()
        self.workflow.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        bus, owned, self._owned = self.kernel.bus, self._owned, set()
        for site_id in owned:  # another process takes over at once, not after the TTL
            with contextlib.suppress(Exception):
                await bus.state.release(lease_key(site_id), self.origin)

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

    def changed(self, site_id: str, *records: Any, **how: Any) -> None:
        """A record changed (here, in another process, or behind routing's back): read it
        again at the next pass of the site (arguments: :meth:`Upkeep.changed`)."""
        self.upkeep.changed(site_id, *records, **how)

    # -- passes -----------------------------------------------------------------------
    def kick(self, site_id: str) -> None:
        """Run a routing pass for the site soon; coalesces with one already running."""
        task = self._passes.get(site_id)
        if task is not None and not task.done():
            self._again.add(site_id)
            return
        timer = self._timers.pop(site_id, None)
        if timer is not None:
            timer.cancel()
        self._passes[site_id] = asyncio.create_task(self._run(site_id), name="kefu-routing-pass")

    async def _run(self, site_id: str) -> None:
        try:
            while True:
                self._again.discard(site_id)
                made, failed = [], True
                try:
                    made = await self.drain(site_id)
                    failed = bool(self.engine.failed_claims.get(site_id))
                except Exception:
                    if site_id not in self._backoff:  # once per outage, not per retry
                        log.exception("routing pass of site %s failed; retrying", site_id)
                if made or not failed:
                    self._backoff.pop(site_id, None)  # progress: no back-off
                if failed:
                    self._retry(site_id)
                if site_id not in self._again:
                    return
        finally:
            if self._passes.get(site_id) is asyncio.current_task():
                del self._passes[site_id]

    def _retry(self, site_id: str) -> None:
        """Pass again after a back-off: storage failing must not leave the line waiting
        for the next event."""
        delay = min(self._backoff.get(site_id, RETRY_FIRST_S / 2) * 2, RETRY_MAX_S)
        self._backoff[site_id] = delay
        old = self._timers.pop(site_id, None)
        if old is not None:
            old.cancel()
        self._timers[site_id] = asyncio.get_running_loop().call_later(
            delay, self._retry_now, site_id
        )

    def _retry_now(self, site_id: str) -> None:
        self._timers.pop(site_id, None)
        self.kick(site_id)

    async def settle(self) -> None:
        """Wait until no pass, release or replay is pending (tests; a graceful shutdown)."""
        while self._passes or self._tasks or self.workflow.answers._tasks:
            await asyncio.gather(*self._passes.values(), *self._tasks, return_exceptions=True)
            await self.workflow.answers.settle()

    async def sync(self, site_id: str) -> None:
        """Bring the site's indexes up to date with what is known to have changed; while a
        pass runs (it does that first) just ask for another one, without waiting for it."""
        lock = self.engine.lock(site_id)
        if lock.locked():
            self.kick(site_id)
            return
        async with lock:
            await self.upkeep.refresh(site_id)

    def owned_sites(self) -> set[str]:
        """The sites whose routing lease this process holds (as of its last renewal)."""
        return set(self._owned)

    async def owns(self, site_id: str) -> bool:
        """Whether this process runs the site's passes now (the site's routing lease)."""
        ttl, bus = self.settings.lease_ttl_s, self.kernel.bus
        if ttl <= 0 or bus is None:
            return True
        try:
            held = await bus.state.lease(lease_key(site_id), self.origin, ttl=ttl)
        except Exception as exc:  # the bus cannot say: the claims' compare-and-set decide
            if not self._lease_failing:
                log.warning("routing lease of %s unavailable (%s): passing anyway", site_id, exc)
            self._lease_failing = True
            return True
        self._lease_failing = False
        (self._owned.add if held else self._owned.discard)(site_id)
        return held

    async def _keep_leases(self) -> None:
        """Renew the leases held here every third of ``lease_ttl_s`` while their site has
        work (a pass running or run within the TTL, conversations waiting), so that a
        short TTL does not lapse between passes of a live holder. An idle site's lease is
        left to lapse: whoever passes next takes it."""
        while True:
            ttl = self.settings.lease_ttl_s
            await asyncio.sleep(ttl / 3 if ttl > 0 else 1.0)
            if ttl <= 0 or self._lease_failing:
                continue
            now = time.monotonic()
            for site_id in list(self._owned):
                busy = (
                    site_id in self._passes
                    or now - self._passed.get(site_id, 0.0) < ttl
                    or len(self.engine.queue(site_id)) > 0
                )
                if not busy:
                    self._owned.discard(site_id)
                    continue
                with contextlib.suppress(Exception):  # owns() reports an unavailable bus
                    if not await self.kernel.bus.state.lease(
                        lease_key(site_id), self.origin, ttl=ttl
                    ):
                        self._owned.discard(site_id)  # lost it (a stall): the claims decide

    def _watch_lease(self, site_id: str) -> None:
        """A follower with conversations waiting tries the lease every third of its TTL,
        so a holder that died is replaced about 4/3 of the TTL after its last renewal at
        most, not at the next sweep after the lease lapsed."""
        if site_id in self._lease_watch or self.settings.lease_ttl_s <= 0:
            return
        task = asyncio.create_task(self._await_lease(site_id), name="kefu-routing-lease-watch")
        self._lease_watch[site_id] = task
        task.add_done_callback(lambda _: self._lease_watch.pop(site_id, None))

    async def _await_lease(self, site_id: str) -> None:
        while True:
            ttl = self.settings.lease_ttl_s
            if ttl <= 0 or len(self.engine.queue(site_id)) == 0:
                return
            await asyncio.sleep(ttl / 3)
            if len(self.engine.queue(site_id)) and await self.owns(site_id):
                self.kick(site_id)
                return

    def _remind_holder(self, site_id: str) -> None:
        """A process that does not hold the site's lease tells the holder again of the
        first waiting conversation of each skill once it waited two sweeps: the news of
        it may have been lost on the bus (Redis restarting), and the holder would not
        read it before its next rebuild. One bus message per skill and sweep at most."""
        ttl, sweep = self.settings.lease_ttl_s, self.settings.sweep_interval_s
        if ttl <= 0 or site_id in self._owned or self._lease_failing:
            return
        waited = time.time() - 2 * sweep
        for head in self.engine.queue(site_id).heads():
            if head.queued_at < waited:
                self.upkeep.tell_others(site_id, head.id)

    async def drain(self, site_id: str) -> list[Assignment]:
        """One routing pass: refresh, drain, announce assignments, update waiting visitors.
        In a process that does not hold the site's lease: refresh only (the holder heard
        the same news on the bus and assigns, then tells the visitors still waiting: a
        ``queue`` frame from here would come before the holder's ``agent_joined`` for a
        conversation an agent is free for, docs/protocol.md section 3, ``start``)."""
        if await self.owns(site_id):
            made = await self.engine.drain(site_id, prepare=self.upkeep.refresh)
            self._passed[site_id] = time.monotonic()
        else:
            # wait for the lock (a pick holds it): handing the refresh to another pass, as
            # sync() does, would be this very pass again, spinning without yielding
            async with self.engine.lock(site_id):
                self.engine.failed_claims[site_id] = 0  # claims are the holder's now
                await self.upkeep.refresh(site_id)
            self._watch_lease(site_id)
            return []
        for assignment in made:
            await self.announce(assignment)
        sync = self.upkeep.site(site_id)
        if made or sync.changed or sync.told_closed != self.closed(site_id):
            await self.tell_waiting(site_id)
        return made

    async def announce(self, assignment: Assignment, reason: str = "routed") -> None:
        """Events and frames for a conversation the engine (or a pick) gave to an agent."""
        site_id = assignment.site_id
        self.upkeep.site(site_id).changed = True  # positions moved
        self.upkeep.tell_others(site_id, assignment.conversation_id)  # this process knows
        await self.kernel.emit(
            "conversation.assigned",
            site_id,
            conversation_id=assignment.conversation_id,
            agent_id=assignment.agent_id,
            waited_s=assignment.waited_s,
            policy=assignment.policy,
        )
        await self.workflow.handed(site_id, assignment.conversation_id, reason)

    # -- what waiting visitors are told ---------------------------------------------------
    async def tell_waiting(self, site_id: str, *, now: bool = False) -> None:
        """``queue.updated`` and, to each visitor whose place changed, a ``queue`` frame.

        A long line is told at most every ``queue_notice_interval_s``: each pass moves
        everyone behind, and telling them once a second is enough."""
        sync = self.upkeep.site(site_id)
        queue = self.engine.queue(site_id)
        loop = asyncio.get_running_loop()
        interval = self.settings.queue_notice_interval_s
        if not now and len(queue) > QUIET_LINE and loop.time() - sync.told_at < interval:
            if sync.tell_later is None:
                delay = sync.told_at + interval - loop.time()
                sync.tell_later = loop.call_later(delay, self._tell_later, site_id)
            return
        if sync.tell_later is not None:
            sync.tell_later.cancel()
            sync.tell_later = None
        sync.told_at, sync.changed = loop.time(), False
        sync.told_closed = closed = self.closed(site_id)
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
        visitors = {cid: queue.get(cid).meta.get("visitor_id") for cid in statuses}
        await self.notices.queue(site_id, statuses, visitors, closed, self.settings.eta_step_s)

    def _tell_later(self, site_id: str) -> None:
        self.upkeep.site(site_id).tell_later = None
        task = asyncio.create_task(self.tell_waiting(site_id, now=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def queue_status(self, conversation: Any) -> tuple[QueueStatus, bool] | None:
        """Position and estimate of a waiting conversation, and whether the site is closed."""
        if conversation.state != QUEUED:
            return None
        site_id = conversation.site_id
        if conversation.id not in self.engine.queue(site_id):
            self.changed(site_id, conversation.id, tell=False)  # the next pass indexes it
            self.kick(site_id)
        found = await self.engine.status_of(conversation_snapshot(conversation))
        return found, self.closed(site_id)

    def closed(self, site_id: str) -> bool:
        """Whether the site is outside its business hours now."""
        return self.engine.closed(site_id)

    # -- an agent's console connects ------------------------------------------------------
    def connected(self, principal: Principal) -> None:
        """Presence, and the replay of what the agent holds (it may have been assigned
        while their console was away)."""
        self.presence.connected(principal)
        task = self.kernel.spawn(self.replay(principal), "kefu-routing-replay")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def replay(self, principal: Principal) -> int:
        """An ``assignment`` frame (``reason: "replay"``) for every conversation assigned
        to the agent, oldest first; returns how many."""
        held = await self.kernel.storage.list_conversations(
            principal.site_id, state=ASSIGNED, assignee_id=principal.id, limit=REPLAY_LIMIT
        )
        held.sort(key=lambda c: float(c.meta.get("assigned_at", c.updated_at)))
        return await self.notices.replay(principal.id, held, self._answer_within)

    def _answer_within(self, conversation: Conversation) -> float | None:
        """Seconds left to answer an assignment; None once accepted or answered."""
        meta = conversation.meta
        due = meta.get("answer_by")
        if due is None or meta.get("accepted_at") or meta.get("answered_at"):
            return None
        return round(max(float(due) - time.time(), 0.0), 3)

    # -- events -------------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        site_id, data, kind = event.site_id, event.data, event.type
        if site_id is None:
            return
        if kind in CONVERSATION_EVENTS and "conversation_id" in data:
            if kind == "conversation.resolved":
                self.upkeep.site(site_id).resolved.add(data["conversation_id"])
            self.changed(site_id, data["conversation_id"])
            self.kick(site_id)
        elif kind == "agent.presence" and "agent_id" in data:
            agent_id = data["agent_id"]
            if "accepting" in data:
                self.stats.set_accepting(site_id, agent_id, bool(data["accepting"]))
            self.changed(site_id, agent_id=agent_id, tell=False)
            self.kick(site_id)  # even if storing fails below: the pass reads the record
            record = await self.presence.store(site_id, agent_id, data["status"])
            self.changed(site_id, agent_id=agent_id, record=record)
            self.kick(site_id)
        elif kind in AGENT_EVENTS and "agent_id" in data:
            self.changed(site_id, agent_id=data["agent_id"])
            self.kick(site_id)
        elif kind == "site.business_hours_changed":
            self.upkeep.site(site_id).hours = True
            self.upkeep.tell_others(site_id, hours=True)
            self.kick(site_id)
        elif kind == "message.stored" and data.get("sender_kind") == "agent":
            await self.workflow.answers.answered(
                site_id, data["conversation_id"], data["sender_id"]
            )
        elif kind == "conversation.first_response":
            self.stats.responded(site_id, data["agent_id"], float(data["seconds"]))
            self.upkeep.restat(site_id, data["agent_id"])
        elif kind == "conversation.rated":
            self.stats.rated(site_id, data["agent_id"], float(data["score"]))
            self.upkeep.restat(site_id, data["agent_id"])

    async def _sweep(self) -> None:
        """Every ``sweep_interval_s``: release what is due, pass where anyone waits (a third
        party's filter may have changed its mind), look for sites made elsewhere."""
        looked_at = time.time()
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                self.workflow.answers.expire_due()
                interval = self.settings.rebuild_interval_s
                if interval > 0 and time.time() - looked_at >= interval:
                    looked_at = time.time()
                    for site in await self.kernel.storage.list_sites():
                        self.upkeep.site(site.id)
                for site_id, sync in list(self.upkeep.sites.items()):
                    due = interval > 0 and time.time() - sync.built_at >= interval
                    if len(self.engine.queue(site_id)) or sync.rebuild or due:
                        self.kick(site_id)
                        self._remind_holder(site_id)
            except Exception:
                log.exception("routing sweep failed; retrying at the next interval")
