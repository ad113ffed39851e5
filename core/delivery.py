"""The store-and-deliver interface and the transport-facing gateway interface.

The gateway plugin implements both and the kernel exposes them as declared
attributes: :attr:`kefu.core.kernel.Kernel.delivery` for every plugin that
produces or fans out messages (bot, greetings, offline messages, system
notices, REST, routing notices), :attr:`kefu.core.kernel.Kernel.gateway` for
transports (WebSocket, long-poll, gRPC). Both are None while no gateway runs.

Every message, whoever produces it, goes through :meth:`Delivery.deliver`:
pipeline, durable store, publish (batched, after the store), ``message.stored``.
Nothing stores or publishes messages on its own (docs/protocol.md section 4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from kefu.core.domain import Conversation, Message
from kefu.core.types import Principal


@runtime_checkable
class ClientConnection(Protocol):
    """One client connection as a transport drives it."""

    id: str
    principal: Principal
    transport: str
    remote: str | None
    closed: bool
    close_reason: str | None
    #: frames waiting in the outbox (the slowest consumers have the most)
    queued: int

    def push(self, frame: bytes, ephemeral: bool = False) -> bool:
        """Queue a serialised frame for the client; False when shed or closed."""

    async def wait(self) -> None:
        """Return once a frame is queued or the connection is closed."""

    def drain(self, max_frames: int = 256) -> list[bytes]:
        """Remove and return queued frames, oldest first."""

    async def take(self, max_frames: int = 256) -> list[bytes]:
        """Wait for frames, then :meth:`drain`; ``[]`` once closed."""

    def close(self, reason: str) -> None:
        """Mark closed (idempotent); the transport's writer wakes up and ends."""


@runtime_checkable
class Delivery(Protocol):
    """The one store-and-deliver path, and fan-out of frames to a conversation's people."""

    async def deliver(
        self,
        conversation: Conversation,
        message: Message,
        *,
        origin: ClientConnection | None = None,
        transport: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Message, bool]:
        """Run the pipeline, store durably, publish, emit ``message.stored``.

        Returns ``(stored, created)``; ``created`` is False for a re-sent ``cid``
        (the stored copy is returned and nothing is published again). ``origin``
        is the sender's connection (not echoed to it); ``extra`` is added to the
        ``message.stored`` event's data. A processor's refusal raises
        :class:`kefu.core.errors.ApiError` with code ``rejected``; a storage
        failure raises :class:`kefu.core.storage.StorageError`.
        """

    async def conversation(self, site_id: str, conversation_id: str) -> Conversation | None:
        """The conversation record, from the cache the sends use (kept fresh by
        :meth:`forget` in every process). Treat it as read-only."""

    def cached(self, site_id: str, conversation_id: str) -> Conversation | None:
        """The record :meth:`conversation` would return without reading storage, or None
        when the cache holds none (then ask :meth:`conversation`). Synchronous, so an event
        listener can skip the conversations it has no business with without a task."""

    def forget(self, site_id: str | None, conversation_id: str) -> None:
        """A conversation changed (state, assignee, meta): drop it from the caches of
        every process."""

    async def publish_conversation(
        self,
        conversation: Conversation,
        frame: dict[str, Any],
        *,
        origin: ClientConnection | None = None,
        seq: int = 0,
        ephemeral: bool = False,
    ) -> None:
        """Deliver a frame to the visitor's connections and every watcher, in every process."""

    async def publish_visitor(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """Deliver to the conversation's visitor only (every tab), not to watching agents."""

    async def publish_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        agent_ids: list[str] | None = None,
        watchers_of: str | None = None,
        watch: str | None = None,
    ) -> None:
        """Deliver to agent connections of a site: only those of ``agent_ids`` when given,
        only those watching ``watchers_of`` when given (never the visitor); each
        connection reached starts watching ``watch`` when given."""

    async def publish_site_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        origin: ClientConnection | None = None,
        ephemeral: bool = False,
    ) -> None:
        """Deliver to every agent connection of a site, in every process."""

    def connections(self, site_id: str | None = None) -> Iterable[ClientConnection]:
        """Connections open in this process (of one site when given): status pages."""

    def agent_connections(self, site_id: str) -> set[ClientConnection]:
        """Agent connections of a site open in this process."""


@runtime_checkable
class Gateway(Protocol):
    """What a transport adapter needs: authenticate, open, feed frames, close."""

    settings: Any

    async def authenticate(self, request: Any, token: str | None) -> Principal | None:
        """The visitor or agent a token names, or None (refuse with ``invalid_token``)."""

    async def open(
        self,
        principal: Principal,
        transport: str,
        remote: str | None = None,
        credential: str | None = None,
    ) -> ClientConnection:
        """Register a connection and queue its ``hello`` frame. ``credential`` (the token it
        authenticated with) is checked again when the identity changes
        (:mod:`kefu.core.identity`); a connection opened without one is not re-checked."""

    async def receive(
        self, conn: ClientConnection, data: str | bytes, *, batch: bool = False
    ) -> None:
        """Handle one raw client frame (with ``batch``, also a JSON array of frames)."""

    def feed(self, conn: ClientConnection, data: str | bytes) -> None:
        """Queue one raw client frame for the connection's worker without waiting (what
        :meth:`receive` does for a single frame): for a transport that parses frames in a
        callback, not a coroutine."""

    async def close(self, conn: ClientConnection, reason: str) -> None:
        """Unregister the connection (idempotent)."""

    async def close_all(self, reason: str) -> None:
        """Close every connection of this process (clients reconnect and resume)."""


#: ``spawn(coro, name)``: run a coroutine as a background task the kernel keeps a
#: reference to, logs when it fails, and cancels at shutdown.
Spawn = Callable[[Awaitable[Any], str], None]
