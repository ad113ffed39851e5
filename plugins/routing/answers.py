"""Waiting for an assigned agent's answer, and reassigning when none comes in time.

An assignment is answered when its agent ``accept``\\ s it or sends a message after
``meta["assigned_seq"]``. The first message also emits
``conversation.first_response`` {conversation_id, agent_id, seconds}, which feeds the
``first_response`` weight factor. After ``[routing] answer_timeout_s`` without an
answer, the conversation is released back to the queue (the workflow's
``release``: the agent is never offered it again). Timers live in the process that
made the assignment; :meth:`Answers.sweep` (run with the routing sweep) catches
assignments whose process went away or restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kefu.core.domain import ASSIGNED, Conversation
from kefu.plugins.routing.live import SCAN_LIMIT

log = logging.getLogger(__name__)

Release = Callable[[Conversation, str, str], Awaitable[Conversation | None]]


@dataclass(slots=True)
class Pending:
    """An assignment waiting for its agent's first answer."""

    agent_id: str
    assigned_at: float
    timer: asyncio.TimerHandle | None


class Answers:
    """Answer timers of one routing service."""

    def __init__(self, service: Any, release: Release) -> None:
        self.service = service
        self.kernel = service.kernel
        self.release = release
        self._pending: dict[tuple[str, str], Pending] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def storage(self) -> Any:
        return self.kernel.storage

    @property
    def timeout(self) -> float:
        return self.service.settings.answer_timeout_s

    def stop(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        for task in self._tasks:
            task.cancel()

    def arm(self, conversation: Conversation) -> None:
        """Await the assignee's answer; release after ``answer_timeout_s`` without one."""
        key = (conversation.site_id, conversation.id)
        self.disarm(*key)
        agent_id = conversation.assignee_id
        assigned_at = conversation.meta.get("assigned_at")
        if agent_id is None or assigned_at is None:
            return
        timer = None
        if self.timeout > 0:
            timer = asyncio.get_running_loop().call_later(
                self.timeout, self._spawn, key, agent_id, assigned_at
            )
        self._pending[key] = Pending(agent_id, float(assigned_at), timer)

    def accepted(self, site_id: str, conversation_id: str) -> None:
        """Accepted: no release any more; the first reply is still awaited for its time."""
        pending = self._pending.get((site_id, conversation_id))
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None

    def disarm(self, site_id: str, conversation_id: str) -> None:
        pending = self._pending.pop((site_id, conversation_id), None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def _spawn(self, key: tuple[str, str], agent_id: str, assigned_at: float) -> None:
        task = asyncio.create_task(self._expire(*key, agent_id, assigned_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(
        self, site_id: str, conversation_id: str, agent_id: str, assigned_at: Any
    ) -> None:
        self._pending.pop((site_id, conversation_id), None)
        try:
            found = await self.storage.get_conversation(site_id, conversation_id)
            if (
                found is None
                or found.state != ASSIGNED
                or found.assignee_id != agent_id
                or found.meta.get("assigned_at") != assigned_at
                or await self._has_answered(found)
            ):
                return
            if await self.release(found, agent_id, "timeout") is not None:
                log.info("conversation %s: %s did not answer in time", conversation_id, agent_id)
        except Exception:
            log.exception("reassigning unanswered conversation %s failed", conversation_id)

    async def _has_answered(self, conversation: Conversation) -> bool:
        if conversation.meta.get("accepted_at") or conversation.meta.get("answered_at"):
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
        # answered in another process: note it, so that the sweep does not look again
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

    async def sweep(self, site_id: str) -> None:
        """Release unanswered assignments whose timer was lost (another process, a restart)."""
        if self.timeout <= 0:
            return
        deadline = time.time() - self.timeout
        held = await self.storage.list_conversations(site_id, state=ASSIGNED, limit=SCAN_LIMIT)
        for conversation in held:
            assigned_at = conversation.meta.get("assigned_at")
            if (site_id, conversation.id) in self._pending or assigned_at is None:
                continue
            if float(assigned_at) <= deadline and not conversation.meta.get("answered_at"):
                await self._expire(site_id, conversation.id, conversation.assignee_id, assigned_at)
