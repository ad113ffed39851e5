"""One client connection as the gateway sees it, whatever carries it.

A transport creates it (through :meth:`Gateway.open`), feeds it the client's
frames (:meth:`Gateway.receive`) and writes out what :meth:`Connection.take`
returns. The outbox is bounded in frames and in bytes: past ``shed_at`` frames new ephemeral frames
are shed; when it is full an ephemeral frame already queued makes room, and
when none is left the connection is closed as a slow consumer (the client
reconnects and resumes from its last ``seq``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable

from kefu.core.types import Principal

#: What an idle connection watches and holds queued: one shared empty value each, so
#: that 15,000 idle connections do not hold 15,000 empty sets and deques (216 and 760
#: bytes apiece: about 1 KiB of the ~20 KiB a connection costs).
NOTHING_WATCHED: frozenset[str] = frozenset()


class Connection:
    """Principal, transport, bounded outbox and rate limiter of one client connection."""

    __slots__ = (
        "_burst",
        "_byte_limit",
        "_bytes",
        "_limit",
        "_outbox",
        "_rate",
        "_shed_at",
        "_stamp",
        "_tokens",
        "_waiter",
        "caught_up",
        "close_reason",
        "closed",
        "credential",
        "id",
        "inbox",
        "last_typing",
        "on_push",
        "opened_at",
        "principal",
        "remote",
        "replaying",
        "seen",
        "sending",
        "shed",
        "strikes",
        "transport",
        "watching",
        "worker",
    )

    def __init__(
        self,
        principal: Principal,
        transport: str,
        *,
        outbox_frames: int = 1024,
        outbox_bytes: int = 1024 * 1024,
        shed_ephemeral_at: float = 0.5,
        rate: float = 20.0,
        burst: int = 40,
        remote: str | None = None,
        credential: str | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.principal = principal
        #: what it authenticated with, to check again when the identity changes
        self.credential = credential
        self.transport = transport
        self.remote = remote
        self.opened_at = time.time()
        # a set once it watches something (Registry.watch), NOTHING_WATCHED again when done
        self.watching: set[str] | frozenset[str] = NOTHING_WATCHED
        self.replaying: dict[str, list[tuple[int, bytes]]] | None = None
        #: seqs delivered per conversation while a catch-up read is pending (else None)
        self.seen: dict[str, set[int]] | None = None
        #: per conversation, ``(after, upto)`` of the last catch-up read: every seq in
        #: ``after < seq <= upto`` reached the connection, a live copy arriving later is a
        #: second one (it was in flight while the read ran)
        self.caught_up: dict[str, tuple[int, int]] | None = None
        #: ``(conversation, cid)`` of this connection's sends stored or being stored and
        #: not acknowledged yet (with addressed fan-out only): a catch-up read that finds
        #: one leaves it to the ack
        self.sending: set[tuple[str, str]] | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.strikes = 0
        self.shed = 0  # ephemeral frames dropped so far
        self.last_typing: tuple[str, bool, float] | None = None
        self._outbox: deque[tuple[bytes, bool]] | None = None  # made by the first push
        #: frames admitted (rate-checked at arrival) and waiting for :attr:`worker`
        #: (a list made when frames arrive: an idle connection holds none)
        self.inbox: list[dict] | None = None
        self.worker: asyncio.Future | None = None
        self._limit = outbox_frames
        self._byte_limit, self._bytes = outbox_bytes, 0
        self._shed_at = max(1, int(outbox_frames * shed_ephemeral_at))
        self._waiter: asyncio.Future | None = None
        #: a transport that writes without a task of its own is told here of every frame
        #: queued and of the close (it coalesces: one write per loop tick)
        self.on_push: Callable[[], None] | None = None
        self._rate, self._burst = rate, burst
        self._tokens, self._stamp = float(burst), time.monotonic()

    def __repr__(self) -> str:
        p = self.principal
        return f"<Connection {self.id} {self.transport} {p.kind}:{p.id}@{p.site_id}>"

    # -- outbox -----------------------------------------------------------------
    def push(self, frame: bytes, ephemeral: bool = False) -> bool:
        """Queue a serialised frame; False when it was shed or the connection is closed."""
        if self.closed:
            return False
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        queued = len(outbox)
        if ephemeral and queued >= self._shed_at:
            self.shed += 1
            return False
        if queued >= self._limit and not self._drop_one_ephemeral():
            self.close("slow_consumer")
            return False
        size = len(frame)
        while self._bytes + size > self._byte_limit:
            if not self._drop_one_ephemeral():
                self.close("slow_consumer")
                return False
        self._bytes += size
        outbox.append((frame, ephemeral))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.on_push is not None:
            self.on_push()
        return True

    def _drop_one_ephemeral(self) -> bool:
        outbox = self._outbox or ()
        for index, (frame, ephemeral) in enumerate(outbox):
            if ephemeral:
                del outbox[index]
                self._bytes -= len(frame)
                self.shed += 1
                return True
        return False

    @property
    def queued(self) -> int:
        return len(self._outbox) if self._outbox is not None else 0

    @property
    def room(self) -> int:
        """Frames that can still be queued before the slow-consumer policy acts."""
        return self._limit - self.queued

    @property
    def room_bytes(self) -> int:
        """Bytes that can still be queued before the slow-consumer policy acts."""
        return self._byte_limit - self._bytes

    async def wait(self) -> None:
        """Return once a frame is queued or the connection is closed."""
        if not self._outbox and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def drain(self, max_frames: int = 256) -> list[bytes]:
        """Remove and return up to ``max_frames`` queued frames, oldest first."""
        if self.closed:
            return []
        outbox = self._outbox
        if not outbox:
            return []
        count = min(max_frames, len(outbox))
        frames = [outbox.popleft()[0] for _ in range(count)]
        self._bytes -= sum(map(len, frames))
        if not outbox:
            self._outbox = None  # an idle connection holds no deque
        return frames

    async def take(self, max_frames: int = 256) -> list[bytes]:
        """Wait for frames and remove up to ``max_frames``; ``[]`` once closed.

        Cancelling the wait (a long-poll timeout) loses nothing: frames stay
        queued until the next call.
        """
        await self.wait()
        return self.drain(max_frames)

    def close(self, reason: str) -> None:
        """Mark closed (idempotent) and wake the transport's writer; queued frames are dropped."""
        if self.closed:
            return
        self.closed, self.close_reason = True, reason
        self._outbox = None
        self._bytes = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_push is not None:
            self.on_push()

    # -- rate limit ---------------------------------------------------------------
    def allow(self) -> bool:
        """Token bucket: True when a frame may be processed now."""
        stamp = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (stamp - self._stamp) * self._rate)
        self._stamp = stamp
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False
