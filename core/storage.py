"""The storage interface every backend plugin implements.

The kernel itself only opens and closes the backend; the domain methods are
added by the features that need them and checked by the shared contract test
suite (``tests/storage_contract``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class StorageBackend(Protocol):
    name: str

    async def open(self) -> None:
        """Connect, create tables or indexes. Called once at start-up."""

    async def close(self) -> None:
        """Flush pending writes and disconnect. Called once at shutdown."""

    async def ping(self) -> None:
        """Raise when the backend cannot serve (used by ``/readyz``)."""
