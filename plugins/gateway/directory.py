"""Which worker processes hold the connections a frame is for: addressed fan-out.

With several processes on one bus, publishing every frame on one broadcast topic
makes every process decode every frame. Instead each process records, in the
bus's shared state, the fan-out keys it holds connections for:

- ``v:<site>:<visitor>``: a visitor's connections (all their tabs);
- ``c:<conversation>``: connections watching a conversation;
- ``a:<site>``: agent connections of a site;

and a frame is published to the nodes holding any of its keys (addressed
delivery, :meth:`kefu.core.bus.Bus.publish` with ``node``). A key held for the
first time here is added to the shared set before the operation that caused it
(a ``watch``, a new connection) is answered, and every process is told to drop
its cached copy of that key's nodes on :data:`CHANGED_TOPIC`. Memberships carry a
ttl and are renewed while held, so a process that died drops out by itself;
until then frames addressed to it are lost harmlessly. A frame stored between a
new holder's announcement and another process hearing of it may be published
without it: the gateway reads the conversation again shortly after a connection
starts following it (``Gateway.catch_up``) and sends what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

#: Broadcast topic: payload = a key whose set of nodes changed.
CHANGED_TOPIC = "kefu.gateway.where"
#: Seconds a membership lives unless renewed; renewed every third of it.
MEMBERSHIP_TTL = 60.0
#: Seconds a cached set of nodes is trusted without hearing of a change.
CACHE_TTL = 30.0
PREFIX = "kefu:where:"
#: Tasks writing this process's key changes to the shared state.
WRITERS = 8


class Directory:
    """This process's fan-out keys in the shared state, and a cache of everyone's."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.bus = kernel.bus
        self.node = self.bus.node_id
        self._held: set[str] = set()
        self._cache: dict[str, tuple[frozenset[str], float]] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._changes: asyncio.Queue[tuple[str, asyncio.Future | None]] = asyncio.Queue()
        self._unsubscribe: Any = None
        self._renewer: asyncio.Task | None = None
        self._writers: list[asyncio.Task] = []

    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe(CHANGED_TOPIC, self._on_changed)
        self._renewer = asyncio.ensure_future(self._renew())
        # a bounded number of writers: a ramp of thousands of connections must not open
        # thousands of Redis commands at once (the client's pool runs dry)
        self._writers = [asyncio.ensure_future(self._write()) for _ in range(WRITERS)]

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        tasks = {t for t in (self._renewer, *self._writers) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        state = self.bus.state
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):  # a bus that is down must not hold up a shutdown
                for key in list(self._held):
                    await state.set_remove(PREFIX + key, [self.node])
                    self.bus.publish(CHANGED_TOPIC, key.encode())
        self._held.clear()

    # -- this process's keys (called by the registry) -------------------------------
    def held(self, key: str) -> None:
        """The first local connection for ``key`` appeared."""
        self._held.add(key)
        done = self._pending[key] = asyncio.get_running_loop().create_future()
        self._changes.put_nowait((key, done))

    def released(self, key: str) -> None:
        """The last local connection for ``key`` went."""
        self._held.discard(key)
        self._changes.put_nowait((key, None))

    async def _write(self) -> None:
        """Apply queued changes to the shared state, one at a time per writer."""
        while True:
            key, done = await self._changes.get()
            try:
                if done is not None:
                    await self._announce(key)
                elif key not in self._held:  # not held again meanwhile
                    await self._withdraw(key)
            except Exception:
                log.warning("could not update fan-out key %s (the renewal retries)", key)
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    async def settled(self) -> None:
        """Return once every new key is in the shared state and its change announced
        (before answering a client)."""
        if not self._pending:
            return
        while self._pending:
            _, future = self._pending.popitem()
            with contextlib.suppress(Exception):
                await future
        with contextlib.suppress(Exception):
            await self.bus.flush()

    async def _announce(self, key: str) -> None:
        try:
            await self.bus.state.set_add(PREFIX + key, [self.node], ttl=MEMBERSHIP_TTL)
            self.bus.publish(CHANGED_TOPIC, key.encode())
        except Exception:
            log.warning("could not record fan-out key %s (retried by the renewal)", key)

    async def _withdraw(self, key: str) -> None:
        await self.bus.state.set_remove(PREFIX + key, [self.node])
        self.bus.publish(CHANGED_TOPIC, key.encode())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(MEMBERSHIP_TTL / 3)
            try:
                for key in list(self._held):
                    await self.bus.state.set_add(PREFIX + key, [self.node], ttl=MEMBERSHIP_TTL)
            except Exception:
                log.warning("renewing fan-out keys failed; retrying", exc_info=True)

    # -- everyone's keys -------------------------------------------------------------
    async def nodes(self, keys: Iterable[str]) -> set[str]:
        """The nodes holding a connection for any of ``keys`` (this one included)."""
        found: set[str] = set()
        now = time.monotonic()
        for key in keys:
            cached = self._cache.get(key)
            if cached is None or cached[1] < now:
                members = frozenset(await self.bus.state.set_members(PREFIX + key))
                if key in self._held:
                    members |= {self.node}
                self._cache[key] = cached = (members, now + CACHE_TTL)
            found |= cached[0]
        return found

    def _on_changed(self, topic: str, payload: bytes) -> None:
        self._cache.pop(payload.decode(), None)
