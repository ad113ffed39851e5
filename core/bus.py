"""The message bus interface: in-process by default, Redis Streams across processes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

Handler = Callable[[str, bytes], Awaitable[None] | None]


@runtime_checkable
class Bus(Protocol):
    name: str

    async def open(self) -> None:
        """Connect. Called once at start-up."""

    async def close(self) -> None:
        """Stop delivering and disconnect. Called once at shutdown."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` to every subscriber of ``topic`` in every process."""

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(topic, payload)`` for each message; returns an unsubscribe function."""
