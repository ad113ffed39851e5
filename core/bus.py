"""The message bus and shared-state interfaces: in-process by default, Redis across processes.

A bus plugin registers a factory through ``kefu_bus_backends``; ``[bus] backend``
chooses one. The in-process ``memory`` bus and the ``redis`` bus implement the same
interface and pass the same contract suite (``tests/bus_contract/``), so the
single-process code paths are the multi-process ones.

Three kinds of delivery:

- **broadcast** (:meth:`Bus.publish` without ``node``): every process that
  subscribed to the topic gets the payload once;
- **addressed** (:meth:`Bus.publish` with ``node``): only the process whose
  :attr:`Bus.node_id` is ``node`` gets it (fan-out to the nodes that hold the
  recipients' connections, instead of one topic every process decodes);
- **work queue** (:meth:`Bus.enqueue` / :meth:`Bus.consume`): each entry goes to
  one consumer of a group, which acknowledges it explicitly; an entry left
  unacknowledged is claimed by another consumer, and one that failed too often
  goes to the dead-letter queue ``<queue>:dead``.

Publishing never waits: what is published during one loop tick is sent as one
batch (one pipeline flush on Redis). The bus is not the durable store: a payload
may be lost when the bus restarts, and every user of it must be covered by
something durable (messages by the client's resume from storage).

:class:`SharedState` is the small key-value store that state needed by more than
one process lives in (presence, long-poll sessions, leases, throttles), with
expiry and the compare-and-set primitives two processes need to decide once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

#: Seconds a :class:`WorkerBoard` waits for the bus while stopping.
STOP_TIMEOUT_S = 2.0

#: ``handler(topic, payload)``, called on the event loop for each payload. Keep it
#: short and non-blocking; an async handler is awaited before the next payload.
Handler = Callable[[str, bytes], Awaitable[None] | None]

#: Returned by every subscription: call it to stop.
Unsubscribe = Callable[[], None]


class OrderedDelivery:
    """One handler on one topic, for bus implementations: payloads go to the handler in
    the order given, and an async handler is awaited before that handler's next payload
    (later payloads queue meanwhile). A raising handler is logged, never fatal.
    ``track(task)`` keeps a reference to the task that awaits an async handler."""

    __slots__ = ("active", "handler", "queue", "running", "topic", "track")

    def __init__(
        self, topic: str, handler: Handler, track: Callable[[asyncio.Future], None]
    ) -> None:
        self.topic, self.handler, self.track = topic, handler, track
        self.queue: deque[bytes] = deque()
        self.running = False
        self.active = True

    def deliver(self, payload: bytes) -> None:
        if self.running or self.queue:
            self.queue.append(payload)
        else:
            self._call(payload)

    def deliver_many(self, payloads: Iterable[bytes]) -> None:
        self.queue.extend(payloads)
        while self.queue and self.active and not self.running:
            self._call(self.queue.popleft())

    def _call(self, payload: bytes) -> None:
        try:
            result = self.handler(self.topic, payload)
        except Exception:
            log.exception("bus subscriber failed on topic %s", self.topic)
            return
        if result is not None and inspect.isawaitable(result):
            self.running = True
            self.track(asyncio.ensure_future(self._finish(result)))

    async def _finish(self, pending: Any) -> None:
        try:
            while pending is not None:
                try:
                    await pending
                except Exception:
                    log.exception("bus subscriber failed on topic %s", self.topic)
                pending = None
                while self.queue and self.active and pending is None:
                    try:
                        result = self.handler(self.topic, self.queue.popleft())
                    except Exception:
                        log.exception("bus subscriber failed on topic %s", self.topic)
                        continue
                    if result is not None and inspect.isawaitable(result):
                        pending = result
        finally:
            self.running = False


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One work-queue entry handed to a consumer."""

    queue: str
    id: str
    payload: bytes
    #: 1 the first time it is handed out, more when it was claimed after a consumer died
    deliveries: int = 1


#: ``handler(item)``: process, then ``await bus.ack(item.queue, group, [item.id])``.
#: An entry whose handler raises stays pending and is handed out again later.
WorkHandler = Callable[[WorkItem], Awaitable[None]]


@runtime_checkable
class SharedState(Protocol):
    """Keys shared by every process of an install (strings; values are bytes).

    ``ttl`` is in seconds; a key with a ttl disappears that long after it was
    last written. Every method is atomic on its own.
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        """Write ``value``; with ``only_if_absent`` only when the key does not exist.
        True when written."""

    async def delete(self, key: str) -> bool:
        """True when the key existed."""

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add to an integer key (missing: 0) and return the new value. ``ttl`` is set
        when the key is created, not extended by later increments (a fixed window)."""

    async def lease(self, key: str, owner: str, ttl: float) -> bool:
        """Take the lease ``key`` for ``owner``, or renew it if ``owner`` holds it.
        False while another owner holds it."""

    async def release(self, key: str, owner: str) -> bool:
        """Give the lease back if ``owner`` holds it; True when it did."""

    async def set_add(self, key: str, members: Iterable[str], *, ttl: float | None = None) -> None:
        """Add members to the set ``key`` (ttl refreshed for the whole set)."""

    async def set_remove(self, key: str, members: Iterable[str]) -> None: ...

    async def set_members(self, key: str) -> set[str]: ...


class LocalState:
    """:class:`SharedState` of one process, in a dict, with lazy expiry: the memory bus's
    state, and the fallback of a plugin running without a bus."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}  # key -> bytes | set[str]
        self._expiry: dict[str, float] = {}
        self._writes = 0

    def _live(self, key: str) -> Any:
        deadline = self._expiry.get(key)
        if deadline is not None and deadline <= time.monotonic():
            self._data.pop(key, None)
            del self._expiry[key]
            return None
        return self._data.get(key)

    def _expire(self, key: str, ttl: float | None) -> None:
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = time.monotonic() + ttl
        self._writes += 1
        if self._writes % 1024 == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, deadline in self._expiry.items() if deadline <= now]:
            self._data.pop(key, None)
            del self._expiry[key]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if isinstance(value, set):
            raise TypeError(f"{key!r} holds a set")
        return value

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and self._live(key) is not None:
            return False
        self._data[key] = bytes(value)
        self._expire(key, ttl)
        return True

    async def delete(self, key: str) -> bool:
        existed = self._live(key) is not None
        self._data.pop(key, None)
        self._expiry.pop(key, None)
        return existed

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        value = self._live(key)
        number = int(value) + amount if value is not None else amount
        self._data[key] = str(number).encode()
        if ttl is not None and key not in self._expiry:  # PEXPIRE NX: the window is fixed
            self._expire(key, ttl)
        return number

    async def lease(self, key: str, owner: str, ttl: float) -> bool:
        holder = self._live(key)
        if holder is not None and holder != owner.encode():
            return False
        self._data[key] = owner.encode()
        self._expire(key, ttl)
        return True

    async def release(self, key: str, owner: str) -> bool:
        if self._live(key) != owner.encode():
            return False
        del self._data[key]
        self._expiry.pop(key, None)
        return True

    async def set_add(self, key: str, members: Iterable[str], *, ttl: float | None = None) -> None:
        members = list(members)
        current = self._live(key)
        if not members and current is None:
            return
        if current is None:
            current = self._data[key] = set()
            self._expiry.pop(key, None)
        current.update(members)
        if ttl is not None:
            self._expire(key, ttl)

    async def set_remove(self, key: str, members: Iterable[str]) -> None:
        current = self._live(key)
        if current is None:
            return
        current.difference_update(members)
        if not current:  # as in Redis, an empty set does not exist
            del self._data[key]
            self._expiry.pop(key, None)

    async def set_members(self, key: str) -> set[str]:
        current = self._live(key)
        return set(current) if current else set()


@runtime_checkable
class Bus(Protocol):
    """What every bus backend offers. One instance per process (per kernel)."""

    name: str
    #: this process's address on the bus: unique among the processes sharing it
    node_id: str
    #: keys shared by every process on this bus
    state: SharedState

    async def open(self) -> None:
        """Connect. Called once at start-up, before any other method."""

    async def close(self) -> None:
        """Send what is still queued, stop every subscription and consumer, disconnect."""

    def publish(self, topic: str, payload: bytes, *, node: str | None = None) -> None:
        """Queue ``payload`` for the subscribers of ``topic``: in every process, or with
        ``node`` only in that process. Never blocks; sent at the end of the loop tick
        together with everything else published in it, in publish order."""

    async def flush(self) -> None:
        """Return once everything published so far was handed to the bus."""

    def subscribe(self, topic: str, handler: Handler, *, after: str | None = None) -> Unsubscribe:
        """Call ``handler(topic, payload)`` for each payload published to ``topic`` from
        now on (broadcast, and addressed to this node). ``after`` (a position returned
        by :meth:`position`) first delivers what was published after it, as far as the
        bus still holds it."""

    def position(self, topic: str) -> str | None:
        """The position of the last payload of ``topic`` delivered in this process
        (None before the first one): hand it to :meth:`subscribe` to resume from there."""

    async def enqueue(self, queue: str, payload: bytes) -> str:
        """Add an entry to a work queue; returns its id once the bus holds it."""

    def consume(
        self,
        queue: str,
        group: str,
        handler: WorkHandler,
        *,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
    ) -> Unsubscribe:
        """Become one consumer of ``group`` on ``queue``: each entry goes to one consumer
        of the group. Entries unacknowledged for ``claim_idle`` seconds are handed to a
        live consumer again; after ``max_deliveries`` they move to ``<queue>:dead``."""

    async def ack(self, queue: str, group: str, ids: Sequence[str]) -> None:
        """Acknowledge entries handed to this group's consumers: they are done."""


class WorkerBoard:
    """Each worker's latest value of one kind (its metrics, its status figures) in the bus's
    shared state, and everyone else's.

    Every ``interval`` seconds ``produce()`` is written under this worker's name
    (:attr:`kefu.core.kernel.Kernel.worker_name`) with a ttl of three intervals, so a
    worker that died drops out by itself. Use it only when the bus is shared by several
    processes; with the in-process bus there is nobody else to read.
    """

    def __init__(
        self, kernel: Any, kind: str, produce: Callable[[], bytes], interval: float
    ) -> None:
        self.kernel, self.produce, self.interval = kernel, produce, interval
        self.name: str = kernel.worker_name
        self._prefix = f"kefu:{kind}:"
        self._members = f"kefu:{kind}:workers"
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._publish())

    async def stop(self) -> None:
        """Stop publishing and withdraw this worker's value (each step bounded in time: a
        bus that is down must not hold up a shutdown)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.kernel.bus.state.delete(self._prefix + self.name)

    async def _publish(self) -> None:
        state = self.kernel.bus.state
        while True:
            try:
                ttl = 3 * self.interval
                await state.set(self._prefix + self.name, self.produce(), ttl=ttl)
                await state.set_add(self._members, [self.name], ttl=ttl)
            except Exception:
                log.warning("could not publish %s; retrying", self._prefix, exc_info=True)
            await asyncio.sleep(self.interval)

    async def others(self) -> dict[str, bytes]:
        """The other live workers' latest values, by worker name."""
        state, found = self.kernel.bus.state, {}
        for name in sorted(await state.set_members(self._members)):
            if name == self.name:
                continue
            value = await state.get(self._prefix + name)
            if value is None:  # gone: its ttl ran out
                await state.set_remove(self._members, [name])
            else:
                found[name] = value
        return found
