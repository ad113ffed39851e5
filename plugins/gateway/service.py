"""The gateway: connections in, frames dispatched by ``op``, deliveries fanned out via the bus.

Transports reach it as ``kernel.gateway`` (set while the gateway plugin runs):

- ``principal = await gateway.authenticate(request, token)`` (None: refuse with
  ``invalid_token``);
- ``conn = await gateway.open(principal, "ws", remote=...)`` registers a
  :class:`Connection` and queues the ``hello`` frame;
- ``await gateway.receive(conn, data)`` for every frame the client sends
  (replies and deliveries go to the connection's outbox);
- ``await conn.take()`` for what to write to the client;
- ``await gateway.close(conn, reason)`` when the transport is done.

Deliveries go through ``kernel.bus`` (topic :data:`ENVELOPE_TOPIC`) so that
several worker processes serve one site: each process fans a delivery out to
the connections it holds. A frame is serialised once, however many receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from kefu.core.domain import Conversation, Message
from kefu.core.errors import ApiError
from kefu.core.storage import StorageError
from kefu.core.types import Principal
from kefu.plugins.gateway.connection import Connection
from kefu.plugins.gateway.frames import (
    ENVELOPE_TOPIC,
    PROTOCOL_VERSION,
    GatewayError,
    envelope,
    error_frame,
    message_frame,
    open_envelope,
)
from kefu.plugins.gateway.registry import Registry
from kefu.plugins.gateway.stats import GatewayStats

log = logging.getLogger(__name__)

#: Frames one batch (a long-poll ``send``) may carry.
BATCH_FRAMES = 64
#: Conversations kept in the cache of :meth:`Gateway.conversation_for` at most.
CACHE_MAX = 50_000


class Gateway:
    """Transport-independent messaging core; one per kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.registry = Registry(self.settings.shards)
        self.handlers: dict[str, Callable] = {}
        self.processors: list[Any] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._locks: dict[Any, list] = {}
        self._conversations: dict[tuple[str, str], tuple[Conversation, float]] = {}
        self.stats = GatewayStats()

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("gateway")

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.handlers = self.kernel.hooks.transport_frame_handlers()
        self.processors = self.kernel.hooks.pipeline_processors()
        if self.kernel.bus is not None:
            self._unsubscribe = self.kernel.bus.subscribe(ENVELOPE_TOPIC, self._on_bus)
        log.info("gateway ready; ops: %s", ", ".join(sorted(self.handlers)))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.close_all("shutdown")

    async def close_all(self, reason: str) -> None:
        """Close every connection of this process (clients reconnect and resume)."""
        for conn in list(self.registry):
            await self.close(conn, reason)

    # -- connections ---------------------------------------------------------------
    async def authenticate(self, request: Any, token: str | None) -> Principal | None:
        principal = await self.kernel.hooks.authenticate(request, token)
        return principal if principal and principal.kind in ("visitor", "agent") else None

    async def open(self, principal: Principal, transport: str, remote: str | None = None):
        s = self.settings
        conn = Connection(
            principal,
            transport,
            outbox_frames=s.outbox_frames,
            shed_ephemeral_at=s.shed_ephemeral_at,
            rate=s.rate,
            burst=s.burst,
            remote=remote,
        )
        self.registry.add(conn)
        self.send(
            conn,
            {
                "op": "hello",
                "protocol": PROTOCOL_VERSION,
                "connection_id": conn.id,
                "principal": {
                    "kind": principal.kind,
                    "id": principal.id,
                    "site": principal.site_id,
                },
                "limits": {"max_frame_bytes": s.max_frame_bytes, "rate": s.rate, "burst": s.burst},
            },
        )
        await self.kernel.hooks.transport_connected(conn)
        return conn

    async def close(self, conn: Connection, reason: str) -> None:
        """Unregister ``conn`` (idempotent) and tell the ``transport_disconnected`` listeners."""
        conn.close(reason)
        if self.registry.get(conn.id) is not conn:
            return
        self.registry.remove(conn)
        self.stats.shed += conn.shed
        await self.kernel.hooks.transport_disconnected(conn, conn.close_reason or reason)

    # -- inbound frames ------------------------------------------------------------
    async def receive(self, conn: Connection, data: str | bytes, *, batch: bool = False) -> None:
        """Handle one raw client frame or, with ``batch``, also a JSON array of frames.

        Every frame is held to ``max_frame_bytes``; a batch to :data:`BATCH_FRAMES` of them.
        """
        limit = self.settings.max_frame_bytes
        if len(data) > limit * (BATCH_FRAMES if batch else 1):
            self.send(conn, error_frame("frame_too_large", f"frames are limited to {limit} bytes"))
            return
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.send(conn, error_frame("bad_json", "the frame is not valid JSON"))
            return
        if not (batch and isinstance(parsed, list)):
            if len(data) > limit:
                self.send(conn, error_frame("frame_too_large", f"frames are limited to {limit}"))
                return
            parsed = (parsed,)
        elif len(parsed) > BATCH_FRAMES:
            self.send(conn, error_frame("frame_too_large", f"at most {BATCH_FRAMES} frames"))
            return
        for frame in parsed:
            if len(data) > limit and len(orjson.dumps(frame)) > limit:
                self.send(conn, error_frame("frame_too_large", f"frames are limited to {limit}"))
                continue
            await self.dispatch(conn, frame)

    async def dispatch(self, conn: Connection, frame: Any) -> None:
        if conn.closed:
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            self.send(conn, error_frame("bad_frame", "a frame is a JSON object with a string op"))
            return
        ref = frame.get("ref")
        handler = self.handlers.get(frame["op"])
        op = frame["op"] if handler is not None else "unknown"
        stats = self.stats
        stats.frames_in[op] = stats.frames_in.get(op, 0) + 1
        if not conn.allow():
            if conn.strikes >= self.settings.flood_close_after:
                conn.close("flood")
            elif conn.strikes == 1 or conn.strikes % 10 == 0:  # do not flood back
                error = error_frame("rate_limited", "slow down; frame not processed", ref)
                self.send(conn, error, ephemeral=True)
            return
        if handler is None:
            self.send(conn, error_frame("unknown_op", f"unknown op {frame['op']!r}", ref))
            return
        stats.inflight += 1
        started = time.perf_counter() if stats.armed else 0.0
        try:
            reply = await handler(conn, frame)
        except (GatewayError, ApiError) as exc:  # ApiError: raised by plugins' ops
            self.send(conn, error_frame(exc.code, exc.message, ref, **exc.extra))
            return
        except StorageError as exc:
            log.warning("storage failed on %s from %r: %s", frame["op"], conn, exc)
            self.send(conn, error_frame("unavailable", "storage is unavailable; retry", ref))
            return
        except Exception:
            log.exception("frame handler for op %r failed", frame["op"])
            self.send(conn, error_frame("internal_error", "the frame was not processed", ref))
            return
        finally:
            stats.inflight -= 1
            if started:
                stats.timed(op, time.perf_counter() - started)
        if reply is not None:
            if ref is not None:
                reply = {**reply, "ref": ref}
            self.send(conn, reply)

    def send(self, conn: Connection, frame: dict[str, Any], ephemeral: bool = False) -> bool:
        """Queue one frame for one connection."""
        if not conn.push(orjson.dumps(frame), ephemeral):
            return False
        out, op = self.stats.frames_out, frame.get("op", "unknown")
        out[op] = out.get(op, 0) + 1
        return True

    # -- authorisation ---------------------------------------------------------------
    async def conversation_for(
        self, conn: Connection, conversation_id: str, action: str, *, fresh: bool = False
    ) -> Conversation:
        """The conversation, if the connection's principal may ``action`` it.

        Sends, typing and receipts read it from a short-lived cache (``conversation_cache_ttl``):
        a storage read per message would cost more than the write (measured on SQLite, 5x
        fewer messages per second). ``fresh`` reads storage.
        """
        principal = conn.principal
        key = (principal.site_id, conversation_id)
        cached = None if fresh else self._conversations.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            conversation = cached[0]
        else:
            conversation = await self.kernel.storage.get_conversation(*key)
            if conversation is None:
                raise GatewayError("conversation_not_found", "no such conversation in your site")
            self.remember(conversation, now)
        if not await self.kernel.hooks.permits(principal, action, conversation):
            raise GatewayError("forbidden", f"you may not {action} this conversation")
        return conversation

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
        """Drop a cached conversation (its state or assignee changed in this process)."""
        if site_id is not None:
            self._conversations.pop((site_id, conversation_id), None)

    @contextlib.asynccontextmanager
    async def serialized(self, key: Any) -> AsyncIterator[None]:
        """One holder at a time per key in this process (e.g. a visitor starting a chat)."""
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]

    # -- fan-out ---------------------------------------------------------------------
    async def publish_conversation(
        self,
        conversation: Conversation,
        frame: dict[str, Any],
        *,
        origin: Connection | None = None,
        seq: int = 0,
        ephemeral: bool = False,
    ) -> None:
        """Deliver to the visitor's connections and every watcher, in every process."""
        header = {
            "k": "c",
            "op": frame.get("op", "unknown"),
            "t": frame.get("created_at", 0) if seq else 0,  # delivery latency
            "s": conversation.site_id,
            "c": conversation.id,
            "v": conversation.visitor_id,
            "q": seq,
            "e": ephemeral,
            "o": origin.id if origin else "",
            "p": f"{origin.principal.kind}:{origin.principal.id}" if origin else "",
        }
        await self._publish(envelope(orjson.dumps(frame), **header))

    async def publish_message(
        self, conversation: Conversation, message: Message, *, origin: Connection | None = None
    ) -> None:
        """Deliver a stored message (a plugin's system or bot message) like a sent one."""
        frame = message_frame(message)
        await self.publish_conversation(conversation, frame, origin=origin, seq=message.seq)

    async def publish_visitor(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """Deliver to the conversation's visitor only (every tab), not to watching agents."""
        header = {
            "k": "v",
            "op": frame.get("op", "unknown"),
            "s": conversation.site_id,
            "v": conversation.visitor_id,
        }
        await self._publish(envelope(orjson.dumps(frame), **header))

    async def publish_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        agent_ids: list[str] | None = None,
        watchers_of: str | None = None,
        watch: str | None = None,
    ) -> None:
        """Deliver to agent connections of a site, in every process: only those of
        ``agent_ids`` when given, only those watching ``watchers_of`` when given (never
        the visitor: private notes travel this way). Each connection reached starts
        watching ``watch`` when given (an agent given a conversation receives it)."""
        header = {
            "k": "g",
            "op": frame.get("op", "unknown"),
            "s": site_id,
            "a": agent_ids,
            "c": watchers_of,
            "w": watch,
        }
        await self._publish(envelope(orjson.dumps(frame), **header))

    async def publish_site_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        origin: Connection | None = None,
        ephemeral: bool = False,
    ) -> None:
        """Deliver to every agent connection of a site, in every process."""
        header = {
            "k": "a",
            "op": frame.get("op", "unknown"),
            "s": site_id,
            "e": ephemeral,
            "o": origin.id if origin else "",
        }
        await self._publish(envelope(orjson.dumps(frame), **header))

    async def _publish(self, payload: bytes) -> None:
        if self.kernel.bus is None:
            self._on_bus(ENVELOPE_TOPIC, payload)
        else:
            await self.kernel.bus.publish(ENVELOPE_TOPIC, payload)

    def _on_bus(self, topic: str, payload: bytes) -> None:
        try:
            head, frame = open_envelope(payload)
        except (ValueError, TypeError):
            log.warning("dropped a malformed gateway envelope")
            return
        site_id, origin, ephemeral = head.get("s"), head.get("o"), bool(head.get("e"))
        conversation_id = head.get("c")
        kind = head.get("k")
        if kind == "a":
            targets = self.registry.site_agents(site_id)
        elif kind == "v":
            targets = self.registry.visitor(site_id, head.get("v"))
        elif kind == "g":
            targets = self.registry.agents(site_id, head.get("a"), head.get("c"), head.get("w"))
        else:
            targets = self.registry.visitor(site_id, head.get("v")) | self.registry.watchers(
                conversation_id
            )
        seq, sender = head.get("q") or 0, head.get("p")
        pushed = 0
        for conn in targets:
            p = conn.principal
            if conn.id == origin or p.site_id != site_id:
                continue
            if ephemeral and sender and sender == f"{p.kind}:{p.id}":
                continue  # nobody needs their own typing or read receipts back
            if seq and conn.replaying is not None and conversation_id in conn.replaying:
                conn.replaying[conversation_id].append((seq, frame))
            elif conn.push(frame, ephemeral):
                pushed += 1
        if pushed:
            stats, op = self.stats, head.get("op") or "unknown"
            stats.frames_out[op] = stats.frames_out.get(op, 0) + pushed
            if stats.armed and head.get("t"):
                stats.delivery.observe(max(0.0, time.time() - head["t"]))
