"""Waiting for an assigned agent's answer, and reassigning when none comes in time.

An assignment is answered when its agent ``accept``\\ s it or sends a message after
``meta["assigned_seq"]``. The first message also emits
``conversation.first_response`` {conversation_id, agent_id, seconds}, which feeds the
``first_response`` weight factor. After ``[routing] answer_timeout_s`` without an
answer, the conversation is released back to the queue (the workflow's
``release``: the agent is never offered it again).

Deadlines are kept in one heap per process, fed by events: the assignments this
process makes, and those it learns of from storage (its start-up and rebuilds, and
the records other processes point it at over the bus). The claim persists the
deadline in the record (``meta["answer_by"]``, and ``meta["assigned_by"]``, the
service that made it), so any process can expire it: the one that assigned it at
the deadline, the others a grace period later, in case that one went away. One
timer wakes the process at the earliest deadline; only due assignments are read
again, each once, and released by compare-and-set (a release another process won
is a no-op). Nothing reads every assigned conversation.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kefu.core.domain import ASSIGNED, Conversation

log = logging.getLogger(__name__)

#: Seconds before a release that failed (storage) is tried again.
RETRY_S = 5.0

Release = Callable[[Conversation, str, str], Awaitable[Conversation | None]]


@dataclass(slots=True)
class Pending:
    """An assignment waiting for its agent's first answer."""

    agent_id: str
    assigned_at: float
    #: UNIX time it is released unanswered; None once accepted or when never
    due: float | None
    #: this process assigned it (others expire it only after a grace period)
    own: bool = True


class Answers:
    """Answer deadlines of one routing service."""

    def __init__(self, service: Any, release: Release) -> None:
        self.service = service
        self.kernel = service.kernel
        self.release = release
        self._pending: dict[tuple[str, str], Pending] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task] = set()

    @property
    def storage(self) -> Any:
        return self.kernel.storage

    @property
    def timeout(self) -> float:
        return self.service.settings.answer_timeout_s

    @property
    def grace(self) -> float:
        """How long past a deadline another process's assignment is left to it."""
        return max(2 * self.service.settings.sweep_interval_s, 2.0)

    def __len__(self) -> int:
        return len(self._pending)

    def due_count(self) -> int:
        """Deadlines in the heap (some may be stale: dropped when reached)."""
        return len(self._heap)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._heap.clear()
        for task in self._tasks:
            task.cancel()

    # -- tracking -------------------------------------------------------------------
    def arm(self, conversation: Conversation, *, own: bool = True) -> None:
        """Await the assignee's answer to an assignment this process just made."""
        self._track(conversation, own)

    def track(self, conversation: Conversation) -> None:
        """An assigned record read from storage (any process may have made it): keep its
        deadline unless the same assignment is tracked already."""
        key = (conversation.site_id, conversation.id)
        found = self._pending.get(key)
        assigned_at = conversation.meta.get("assigned_at")
        if (
            found is not None
            and found.agent_id == conversation.assignee_id
            and assigned_at is not None
            and found.assigned_at == float(assigned_at)
        ):
            if _answered(conversation):
                found.due = None
            return
        own = conversation.meta.get("assigned_by") == self.service.origin
        self._track(conversation, own)

    def _track(self, conversation: Conversation, own: bool) -> None:
        key = (conversation.site_id, conversation.id)
        self._pending.pop(key, None)
        agent_id = conversation.assignee_id
        assigned_at = conversation.meta.get("assigned_at")
        if agent_id is None or assigned_at is None or conversation.state != ASSIGNED:
            return
        due = None
        if self.timeout > 0 and not _answered(conversation):
            due = conversation.meta.get("answer_by")
            due = float(assigned_at) + self.timeout if due is None else float(due)
            if not own:
                due += self.grace
        self._pending[key] = Pending(agent_id, float(assigned_at), due, own)
        if due is not None:
            heapq.heappush(self._heap, (due, next(self._seq), *key))
            self._wake()

    def accepted(self, site_id: str, conversation_id: str) -> None:
        """Accepted: no release any more; the first reply is still awaited for its time."""
        pending = self._pending.get((site_id, conversation_id))
        if pending is not None:
            pending.due = None  # its heap entry is dropped when reached

    def disarm(self, site_id: str, conversation_id: str) -> None:
        self._pending.pop((site_id, conversation_id), None)

    # -- expiry ---------------------------------------------------------------------
    def _wake(self) -> None:
        """One timer, at the earliest deadline."""
        if not self._heap:
            return
        earliest = self._heap[0][0]
        if self._timer is not None and self._timer_at <= earliest:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = earliest
        self._timer = loop.call_later(max(earliest - time.time(), 0.0), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self.expire_due()

    def expire_due(self, now: float | None = None) -> int:
        """Start releasing every assignment whose deadline passed; returns how many."""
        now = time.time() if now is None else now
        count = 0
        while self._heap and self._heap[0][0] <= now:
            due, _, site_id, conversation_id = heapq.heappop(self._heap)
            pending = self._pending.get((site_id, conversation_id))
            if pending is None or pending.due != due:
                continue  # answered, accepted, released or re-armed meanwhile
            del self._pending[site_id, conversation_id]
            count += 1
            task = asyncio.create_task(
                self._expire(site_id, conversation_id, pending.agent_id, pending.assigned_at)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._wake()
        return count

    async def sweep(self, site_id: str | None = None) -> None:
        """Release what is due now (the timer does it too; kept for the periodic sweep)."""
        self.expire_due()

    async def settle(self) -> None:
        """Wait for the releases in progress (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _expire(
        self, site_id: str, conversation_id: str, agent_id: str, assigned_at: float
    ) -> None:
        try:
            found = await self.storage.get_conversation(site_id, conversation_id)
            if (
                found is None
                or found.state != ASSIGNED
                or found.assignee_id != agent_id
                or found.meta.get("assigned_at") is None
                or float(found.meta["assigned_at"]) != assigned_at
                or await self._has_answered(found)
            ):
                return
            if await self.release(found, agent_id, "timeout") is not None:
                log.info("conversation %s: %s did not answer in time", conversation_id, agent_id)
        except Exception:
            log.exception("reassigning unanswered conversation %s failed", conversation_id)
            retry = time.time() + RETRY_S  # storage failed: look again a little later
            self._pending[site_id, conversation_id] = Pending(agent_id, assigned_at, retry)
            heapq.heappush(self._heap, (retry, next(self._seq), site_id, conversation_id))
            self._wake()

    async def _has_answered(self, conversation: Conversation) -> bool:
        if _answered(conversation):
            return True
        after = int(conversation.meta.get("assigned_seq", 0))
        since = await self.storage.list_messages(
            conversation.site_id, conversation.id, after_seq=after, limit=200
        )
        agent_id = conversation.assignee_id
        replies = (m for m in since if m.sender_kind == "agent" and m.sender_id == agent_id)
        reply = next(replies, None)
        if reply is None:
            return False
        # answered in another process: note it, so that no process looks again
        conversation.meta = {**conversation.meta, "answered_at": reply.created_at}
        await self.storage.update_conversation(
            conversation, if_state=ASSIGNED, if_assignee=agent_id
        )
        return True

    async def answered(self, site_id: str, conversation_id: str, agent_id: str) -> None:
        """An agent's message was stored: the first one of an assignee answers it."""
        pending = self._pending.get((site_id, conversation_id))
        if pending is None or pending.agent_id != agent_id:
            return
        self.disarm(site_id, conversation_id)
        found = await self.storage.get_conversation(site_id, conversation_id)
        if found is None or found.assignee_id != agent_id or found.meta.get("answered_at"):
            return
        now = time.time()
        found.meta = {**found.meta, "answered_at": now}
        if await self.storage.update_conversation(found, if_state=ASSIGNED, if_assignee=agent_id):
            await self.kernel.emit(
                "conversation.first_response",
                site_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                seconds=max(now - pending.assigned_at, 0.0),
            )


def _answered(conversation: Conversation) -> bool:
    return bool(conversation.meta.get("accepted_at") or conversation.meta.get("answered_at"))
