"""The in-process message bus (``[bus] backend = "memory"``), the single-process default."""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Callable

from kefu.core.bus import Handler
from kefu.hooks import hookimpl

log = logging.getLogger(__name__)


class MemoryBus:
    """Delivers to subscribers in this process, synchronously in publish order."""

    name = "memory"

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Handler]] = defaultdict(list)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self._subscribers.clear()

    async def publish(self, topic: str, payload: bytes) -> None:
        for handler in tuple(self._subscribers.get(topic, ())):
            try:
                result = handler(topic, payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("bus subscriber failed on topic %s", topic)

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        self._subscribers[topic].append(handler)

        def unsubscribe() -> None:
            handlers = self._subscribers.get(topic, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe


@hookimpl(trylast=True)
def kefu_bus_backends():
    return {"memory": lambda kernel: MemoryBus()}
