"""The gateway: connections in, frames dispatched by ``op``, deliveries fanned out via the bus.

It implements :class:`kefu.core.delivery.Gateway` for transports (``kernel.gateway``)
and :class:`kefu.core.delivery.Delivery` for every producer of messages
(``kernel.delivery``), both set while the gateway plugin runs:

- ``principal = await gateway.authenticate(request, token)`` (None: refuse with
  ``invalid_token``);
- ``conn = await gateway.open(principal, "ws", remote=...)`` registers a
  :class:`Connection` and queues the ``hello`` frame;
- ``await gateway.receive(conn, data)`` for every frame the client sends
  (replies and deliveries go to the connection's outbox);
- ``await conn.take()`` for what to write to the client;
- ``await gateway.close(conn, reason)`` when the transport is done.

Messages are stored and delivered by :meth:`deliver` (:mod:`.delivery`); frames
are fanned out through ``kernel.bus`` (:mod:`.fanout`) so that several worker
processes serve one site. A frame is serialised once, however many receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from kefu.core.domain import Conversation
from kefu.core.errors import ApiError
from kefu.core.jsonlimits import MAX_DEPTH, too_deep
from kefu.core.pressure import Tally
from kefu.core.storage import StorageError
from kefu.core.types import Principal
from kefu.plugins.gateway.connection import Connection
from kefu.plugins.gateway.degraded import Degraded
from kefu.plugins.gateway.delivery import FORGET_TOPIC, Store
from kefu.plugins.gateway.directory import Directory
from kefu.plugins.gateway.fanout import Fanout
from kefu.plugins.gateway.frames import (
    ENVELOPE_TOPIC,
    PROTOCOL_VERSION,
    GatewayError,
    error_frame,
    message_frame,
)
from kefu.plugins.gateway.identity import IdentityWatch
from kefu.plugins.gateway.registry import Registry
from kefu.plugins.gateway.stats import GatewayStats

log = logging.getLogger(__name__)

#: Frames one batch (a long-poll ``send``) may carry.
BATCH_FRAMES = 64
#: Longest ``ref`` a client may have echoed (a string; numbers are always fine).
MAX_REF_CHARS = 128
#: After a connection starts following a conversation with addressed fan-out: when its
#: messages are read again (see :meth:`Gateway.catch_up`), and how many at most.
CATCH_UP_DELAYS_S = (0.3, 2.0)
REPLAY_CATCH_UP = 200
#: Seconds a closing connection waits for the frames it already sent to be processed.
CLOSE_DRAIN_S = 5.0


def _bounded(ref: Any) -> Any:
    """``ref`` if it may be echoed (a short string or a number), else None."""
    if isinstance(ref, str):
        return ref if len(ref) <= MAX_REF_CHARS else None
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return ref
    return None


def _ref_of(data: str | bytes) -> Any:
    """The ``ref`` of an oversized frame, so its error can name it."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return _bounded(parsed.get("ref")) if isinstance(parsed, dict) else None


class Gateway(Store, Fanout):
    """Transport-independent messaging core; one per kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.registry = Registry(self.settings.shards)
        self.handlers: dict[str, Callable] = {}
        self.processors: list[Any] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._locks: dict[Any, list] = {}
        self._conversations: dict[tuple[str, str], tuple[Conversation, float]] = {}
        self.stats = GatewayStats()
        self.identity = IdentityWatch(self)
        self.degraded = Degraded()  # extras shed under pressure (degraded.py)
        self.inflow = Tally("gateway.frames")  # frames offered, for the degradation sensors

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("gateway")

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.handlers = self.kernel.hooks.transport_frame_handlers()
        self.processors = self.kernel.hooks.pipeline_processors()
        bus = self.kernel.bus
        if bus is not None:
            self._unsubscribe = [
                bus.subscribe(ENVELOPE_TOPIC, self._on_bus),
                bus.subscribe(FORGET_TOPIC, self._on_forget),
            ]
            fanout = self.settings.fanout
            if fanout == "addressed" or (fanout == "auto" and bus.name != "memory"):
                self.directory = Directory(self.kernel)
                self.directory.start()
                self.registry.on_held = self.directory.held
                self.registry.on_released = self.directory.released
        self.identity.start()
        log.info("gateway ready; ops: %s", ", ".join(sorted(self.handlers)))

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        await self.identity.stop()
        await self.close_all("shutdown")
        if self.directory is not None:
            await self.directory.stop()

    async def close_all(self, reason: str) -> None:
        """Close every connection of this process (clients reconnect and resume)."""
        for conn in list(self.registry):
            await self.close(conn, reason)

    # -- connections ---------------------------------------------------------------
    def connections(self, site_id: str | None = None) -> Iterator[Connection]:
        """Connections open in this process (of one site when given)."""
        for conn in self.registry:
            if site_id is None or conn.principal.site_id == site_id:
                yield conn

    def agent_connections(self, site_id: str) -> set[Connection]:
        """Agent connections of a site open in this process."""
        return set(self.registry.site_agents(site_id))

    async def authenticate(self, request: Any, token: str | None) -> Principal | None:
        principal = await self.kernel.hooks.authenticate(request, token)
        return principal if principal and principal.kind in ("visitor", "agent") else None

    async def open(
        self,
        principal: Principal,
        transport: str,
        remote: str | None = None,
        credential: str | None = None,
    ):
        s = self.settings
        conn = Connection(
            principal,
            transport,
            outbox_frames=s.outbox_frames,
            outbox_bytes=s.outbox_bytes,
            shed_ephemeral_at=s.shed_ephemeral_at,
            rate=s.rate,
            burst=s.burst,
            remote=remote,
            credential=credential,
        )
        self.registry.add(conn)
        if self.directory is not None:  # other processes know where to find it first
            await self.directory.settled()
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
                "heartbeat_s": self.degraded.heartbeat_s(s),
            },
        )
        await self.kernel.hooks.transport_connected(conn)
        return conn

    async def close(self, conn: Connection, reason: str) -> None:
        """Unregister ``conn`` (idempotent) and tell the ``transport_disconnected`` listeners.

        A client that closed gets the frames it had sent processed first (its last
        ``send`` is stored and acknowledged to its other tabs' view of storage).
        """
        worker = conn.worker
        if (
            reason == "client_closed"
            and worker is not None
            and not conn.closed
            and worker is not asyncio.current_task()
        ):
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout(CLOSE_DRAIN_S):
                    await asyncio.shield(worker)
        conn.close(reason)
        if self.registry.get(conn.id) is not conn:
            return
        self.registry.remove(conn)
        self.stats.shed += conn.shed
        await self.kernel.hooks.transport_disconnected(conn, conn.close_reason or reason)

    # -- inbound frames ------------------------------------------------------------
    async def receive(self, conn: Connection, data: str | bytes, *, batch: bool = False) -> None:
        """Take one raw client frame or, with ``batch``, also a JSON array of frames.

        Every frame is held to ``max_frame_bytes``; a batch to :data:`BATCH_FRAMES` of
        them. Frames are charged to the rate limit here, when they arrive, and queued
        for the connection's worker, which processes them one at a time in order: a
        slow store delays a client's frames but never makes them count twice against
        its rate, and the transport keeps reading meanwhile. With ``batch`` (a
        long-poll ``send``) this returns once the batch was processed.
        """
        worker = self._queue(conn, data, batch)
        if batch and worker is not None:
            await asyncio.shield(worker)

    def feed(self, conn: Connection, data: str | bytes) -> None:
        """:meth:`receive` of one frame, without waiting: the transport's reader calls it
        as the frame is parsed (no coroutine per frame; plugins/transport_ws/inbound.py)."""
        self._queue(conn, data, False)

    def _queue(self, conn: Connection, data: str | bytes, batch: bool) -> asyncio.Future | None:
        """Parse, admit and queue frames for the connection's worker (started if idle)."""
        frames = self._parse(conn, data, batch)
        self.inflow.count += len(frames)
        admitted = [frame for frame in frames if self._admit(conn, frame)]
        if not admitted or conn.closed:
            return None
        if conn.inbox is None:
            conn.inbox = admitted
        else:
            conn.inbox.extend(admitted)
        worker = conn.worker
        if worker is None:
            worker = conn.worker = asyncio.ensure_future(self._work(conn))
        return worker

    def _parse(self, conn: Connection, data: str | bytes, batch: bool) -> list[Any]:
        limit = self.settings.max_frame_bytes
        if len(data) > limit * (BATCH_FRAMES if batch else 1):
            ref = _ref_of(data) if len(data) <= 4 * limit * BATCH_FRAMES else None
            self.send(conn, error_frame("frame_too_large", f"frames are limited to {limit}", ref))
            return []
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.send(conn, error_frame("bad_json", "the frame is not valid JSON"))
            return []
        if not (batch and isinstance(parsed, list)):
            if len(data) > limit:
                ref = parsed.get("ref") if isinstance(parsed, dict) else None
                self.send(
                    conn,
                    error_frame("frame_too_large", f"frames are limited to {limit}", _bounded(ref)),
                )
                return []
            return [parsed]
        if len(parsed) > BATCH_FRAMES:
            self.send(conn, error_frame("frame_too_large", f"at most {BATCH_FRAMES} frames"))
            return []
        if len(data) <= limit:
            return parsed
        kept = []
        for frame in parsed:
            if too_deep(frame):
                kept.append(frame)  # refused by _admit with bad_frame (it cannot be measured)
                continue
            try:
                size = len(orjson.dumps(frame))
            except TypeError:  # nested deeper than orjson writes (it reads deeper): too large
                size = limit + 1
            if size > limit:
                ref = frame.get("ref") if isinstance(frame, dict) else None
                self.send(
                    conn,
                    error_frame("frame_too_large", f"frames are limited to {limit}", _bounded(ref)),
                )
            else:
                kept.append(frame)
        return kept

    def _admit(self, conn: Connection, frame: Any) -> bool:
        """Shape and rate checks at arrival; False when the frame was answered already."""
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            self.send(conn, error_frame("bad_frame", "a frame is a JSON object with a string op"))
            return False
        if too_deep(frame):
            message = f"a frame may nest objects and arrays at most {MAX_DEPTH} deep"
            self.send(conn, error_frame("bad_frame", message))
            return False
        ref = frame.get("ref")
        if ref is not None and _bounded(ref) is None:
            message = f"ref must be a string of at most {MAX_REF_CHARS} characters or a number"
            self.send(conn, error_frame("invalid_field", message, field="ref"))
            return False
        if conn.allow():
            return True
        if conn.strikes >= self.settings.flood_close_after:
            conn.close("flood")
        elif conn.strikes == 1 or conn.strikes % 10 == 0:  # do not flood back
            error = error_frame("rate_limited", "slow down; frame not processed", ref)
            self.send(conn, error, ephemeral=True)
        return False

    async def _work(self, conn: Connection) -> None:
        try:
            while conn.inbox and not conn.closed:
                frames, conn.inbox = conn.inbox, None
                for frame in frames:
                    if conn.closed:
                        break
                    await self.dispatch(conn, frame)
        finally:
            conn.inbox = None
            conn.worker = None

    async def dispatch(self, conn: Connection, frame: Any) -> None:
        """Process one admitted frame and queue its reply."""
        if conn.closed:
            return
        ref = frame.get("ref")
        handler = self.handlers.get(frame["op"])
        op = frame["op"] if handler is not None else "unknown"
        stats = self.stats
        stats.frames_in[op] = stats.frames_in.get(op, 0) + 1
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
        if self.directory is not None:  # a watch it started is known everywhere first
            await self.directory.settled()
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

    def catch_up(
        self, conn: Connection, conversation_id: str, after_seq: int, pushed: tuple = ()
    ) -> None:
        """With addressed fan-out, read the conversation again shortly after a connection
        started following it, and send what came meanwhile and did not reach it: a process
        that had not yet heard that this one holds the conversation may have published a
        message only to the others. ``pushed``: seqs above ``after_seq`` already sent.
        Until the last read, the seqs delivered live to the connection are noted, so that
        nothing is sent twice; after it, live copies of what it read (still on the bus
        while it ran) are dropped (``conn.caught_up``). The connection's own sends stored
        but not yet acknowledged are left to their ack (``conn.sending``)."""
        if self.directory is None:
            return
        if conn.seen is None:
            conn.seen = {}
        conn.seen.setdefault(conversation_id, set()).update(pushed)
        loop = asyncio.get_running_loop()
        for n, delay in enumerate(CATCH_UP_DELAYS_S):
            last = n == len(CATCH_UP_DELAYS_S) - 1
            loop.call_later(
                delay,
                lambda last=last: self.kernel.spawn(
                    self._catch_up(conn, conversation_id, after_seq, last),
                    "kefu-gateway-catch-up",
                ),
            )

    async def _catch_up(
        self, conn: Connection, conversation_id: str, after_seq: int, last: bool
    ) -> None:
        seen = conn.seen.get(conversation_id) if conn.seen is not None else None
        try:
            if seen is None or conn.closed or conversation_id not in conn.watching:
                return
            page = await self.kernel.storage.list_messages(
                conn.principal.site_id, conversation_id, after_seq=after_seq, limit=REPLAY_CATCH_UP
            )
            sending = conn.sending or ()
            for message in page:
                if (conversation_id, message.cid) in sending:
                    continue  # this connection's own send, stored: its ack is on the way
                if message.seq not in seen:
                    seen.add(message.seq)
                    conn.push(orjson.dumps(message_frame(message)))
            upto = after_seq  # the end of the run read without a gap
            for message in page:
                if message.seq != upto + 1:
                    break
                upto = message.seq
            if last and upto > after_seq:  # live copies of what was read may be on the bus
                if conn.caught_up is None:
                    conn.caught_up = {}
                conn.caught_up[conversation_id] = (after_seq, upto)
        finally:
            if last and conn.seen is not None:
                conn.seen.pop(conversation_id, None)
                if not conn.seen:
                    conn.seen = None

    # -- authorisation ---------------------------------------------------------------
    async def conversation_for(
        self, conn: Connection, conversation_id: str, action: str, *, fresh: bool = False
    ) -> Conversation:
        """The conversation, if the connection's principal may ``action`` it.

        Sends, typing and receipts read the cache of :meth:`conversation` (kept fresh
        by invalidations in every process); ``fresh`` reads storage.
        """
        site_id = conn.principal.site_id
        if fresh:
            self._conversations.pop((site_id, conversation_id), None)
        conversation = await self.conversation(site_id, conversation_id)
        if conversation is None:
            raise GatewayError("conversation_not_found", "no such conversation in your site")
        if not await self.kernel.hooks.permits(conn.principal, action, conversation):
            raise GatewayError("forbidden", f"you may not {action} this conversation")
        return conversation

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
