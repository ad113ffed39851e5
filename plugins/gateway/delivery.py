"""The one store-and-deliver path, and the conversation cache the sends read.

:meth:`Store.deliver` is what every producer of a message calls (a client's
``send``, the bot, greetings, offline messages, system notices): pipeline,
durable store, ack, publish, ``message.stored``. The ack is queued before the
fan-out is published and the fan-out is batched per loop tick by the bus, so the
sender never waits for delivery to others; ``message.stored`` listeners run after
both.

The conversation record a ``send`` needs is cached: what cannot change (site,
visitor: the permission) is kept; what can (state, assignee) is dropped whenever
it changes, in every process: a ``conversation.*`` event in the process that made
the change calls :meth:`Store.forget`, which drops the local copy and broadcasts
the key on :data:`FORGET_TOPIC`. ``conversation_cache_ttl`` bounds the age of a
copy as a safety net for a change that announced nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import orjson

from kefu.core.domain import Conversation, Message
from kefu.core.errors import ApiError
from kefu.core.types import PipelineReject, Principal
from kefu.plugins.gateway.frames import message_frame

log = logging.getLogger(__name__)

#: Conversations kept in the cache at most.
CACHE_MAX = 50_000
#: Broadcast topic of cache invalidations: payload ``site_id \\0 conversation_id``.
FORGET_TOPIC = "kefu.gateway.forget"


class Store:
    """The store-and-deliver half of :class:`kefu.core.delivery.Delivery` (mixed into the
    gateway, which provides ``kernel``, ``processors``, ``settings``, ``send`` and
    ``fan_conversation``)."""

    kernel: Any
    processors: list[Any]
    settings: Any
    _conversations: dict[tuple[str, str], tuple[Conversation, float]]

    async def deliver(
        self,
        conversation: Conversation,
        message: Message,
        *,
        origin: Any = None,
        transport: str | None = None,
        extra: dict[str, Any] | None = None,
        ack: Any = None,
    ) -> tuple[Message, bool]:
        """Pipeline, durable store, ``ack(stored, created)``, publish, ``message.stored``.

        ``ack`` (the ``send`` op's) is called right after the store, before the
        fan-out is published and before any listener runs.
        """
        received = time.perf_counter()
        message = await self._run_pipeline(origin, conversation, message)
        stored, created = await self.kernel.storage.append_message(message)
        if ack is not None:
            ack(stored, created)
        if not created:
            return stored, False
        frame = message_frame(stored)
        try:  # stored and acknowledged: a failed fan-out is covered by the clients' resume
            await self.fan_conversation(
                conversation,
                orjson.dumps(frame),
                "message",
                origin=origin,
                seq=stored.seq,
                sent_at=stored.created_at,
            )
        except Exception:
            log.exception("fan-out of %s/%s failed after it was stored", stored.cid, stored.seq)
        await self.kernel.emit(
            "message.stored",
            stored.site_id,
            conversation_id=stored.conversation_id,
            seq=stored.seq,
            cid=stored.cid,
            sender_kind=stored.sender_kind,
            sender_id=stored.sender_id,
            message_type=stored.type,
            transport=transport or (origin.transport if origin is not None else None),
            ack_ms=(time.perf_counter() - received) * 1000.0,
            **(extra or {}),
        )
        return stored, True

    async def _run_pipeline(self, origin: Any, conversation: Any, message: Message) -> Message:
        """Every processor in priority order; identity fields cannot be changed by one.

        ``wants`` is asked once per processor, just before its turn (an earlier step may
        have changed the message); the context is built only once a step wants it, so a
        message no step wants costs no allocation and no await."""
        context: dict[str, Any] | None = None
        fixed: tuple = ()
        for processor in self.processors:
            if processor.wants is not None and not processor.wants(message):
                continue
            if context is None:
                principal = (
                    origin.principal
                    if origin is not None
                    else Principal(message.sender_kind, message.sender_id, message.site_id)
                )
                context = {
                    "kernel": self.kernel,
                    "connection": origin,
                    "conversation": conversation,
                    "principal": principal,
                }
                fixed = (
                    message.site_id,
                    message.conversation_id,
                    message.cid,
                    message.sender_kind,
                    message.sender_id,
                )
            try:
                result = await processor.process(message, context)
            except PipelineReject as exc:
                await self.kernel.emit(
                    "message.rejected",
                    message.site_id,
                    conversation_id=message.conversation_id,
                    cid=message.cid,
                    processor=processor.name,
                    code=exc.code,
                )
                raise ApiError(
                    422, "rejected", exc.message, reason=exc.code, cid=message.cid
                ) from None
            if result is not None:
                message = result
        if context is None:
            return message  # no step wanted it
        (
            message.site_id,
            message.conversation_id,
            message.cid,
            message.sender_kind,
            message.sender_id,
        ) = fixed
        message.seq = 0
        return message

    # -- the conversation cache ------------------------------------------------------
    async def conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        """The conversation record, cached; None when the site has no such conversation."""
        conversation = self.cached(site_id, conversation_id)
        if conversation is not None:
            return conversation
        conversation = await self.kernel.storage.get_conversation(site_id, conversation_id)
        if conversation is not None:
            self.remember(conversation)
        return conversation

    def cached(self, site_id: str, conversation_id: str) -> Conversation | None:
        """The cached record if it is fresh (no storage read), else None."""
        cached = self._conversations.get((site_id, conversation_id))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def remember(self, conversation: Conversation, now: float | None = None) -> None:
        """Cache a conversation record (treated as read-only by every reader)."""
        ttl = self.settings.conversation_cache_ttl
        if ttl <= 0:
            return
        cache = self._conversations
        if len(cache) >= CACHE_MAX:
            for stale in list(itertools.islice(cache, CACHE_MAX // 4)):
                del cache[stale]
        key = (conversation.site_id, conversation.id)
        cache.pop(key, None)
        cache[key] = (conversation, (time.monotonic() if now is None else now) + ttl)

    def forget(self, site_id: str | None, conversation_id: str) -> None:
        """Drop a cached conversation here and in every other process."""
        if site_id is None:
            return
        self._conversations.pop((site_id, conversation_id), None)
        bus = self.kernel.bus
        if bus is not None:
            payload = f"{site_id}\0{conversation_id}".encode()
            bus.publish(FORGET_TOPIC, payload)

    def _on_forget(self, topic: str, payload: bytes) -> None:
        site_id, _, conversation_id = payload.decode().partition("\0")
        self._conversations.pop((site_id, conversation_id), None)
