"""In-memory storage (``[storage] backend = "memory"``): for tests and demos; forgets on exit."""

from __future__ import annotations

from kefu.hooks import hookimpl


class MemoryStorage:
    name = "memory"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass


@hookimpl(trylast=True)
def kefu_storage_backends():
    return {"memory": lambda kernel: MemoryStorage()}
