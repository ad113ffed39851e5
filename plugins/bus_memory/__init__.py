"""The in-process message bus (``[bus] backend = "memory"``), the single-process default.

It implements :class:`kefu.core.bus.Bus` inside one process: the kernels that
share one :class:`MemoryBus` object are one node (one ``node_id``).
What it does and how it matches the Redis bus is in docs/bus.md; both pass
``tests/bus_contract/``.

- ``publish`` queues; the queue is drained once per loop tick (``loop.call_soon``)
  and each subscriber gets its payloads in publish order (an async handler is
  awaited before that subscriber's next payload);
- a bounded history per topic serves ``subscribe(after=...)``; positions are the
  decimal sequence number of a payload in its topic;
- work queues keep consumer groups, pending entries with their consumer, delivery
  count and hand-out time, claim idle ones and dead-letter poison ones like Redis;
- :class:`MemoryState` (:class:`kefu.core.bus.LocalState`) is a dict with expiry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kefu.core.bus import (
    Handler,
    LocalState,
    OrderedDelivery,
    Unsubscribe,
    WorkHandler,
    WorkItem,
)
from kefu.hooks import hookimpl

MemoryState = LocalState  # (the name it had here)

log = logging.getLogger(__name__)

#: payloads kept per topic for ``subscribe(after=...)``
HISTORY = 4096


class _Subscription(OrderedDelivery):
    """One handler on one topic of this bus."""

    __slots__ = ()

    def __init__(self, bus: MemoryBus, topic: str, handler: Handler) -> None:
        super().__init__(topic, handler, bus._track)


class _Topic:
    __slots__ = ("delivered", "history", "seq", "subscriptions")

    def __init__(self, history: int) -> None:
        self.subscriptions: list[_Subscription] = []
        self.history: deque[tuple[int, bytes]] = deque(maxlen=history)
        self.seq = 0
        self.delivered: int | None = None  # the last seq handed to a subscriber


@dataclass(slots=True)
class _Pending:
    consumer: int
    since: float
    deliveries: int


@dataclass
class _Group:
    cursor: int = 0  # the last entry id handed out to this group
    pending: dict[int, _Pending] = field(default_factory=dict)
    consumers: list[_Consumer] = field(default_factory=list)


@dataclass
class _Queue:
    entries: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    next_id: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)


class _Consumer:
    """One consumer of a group: a task taking new entries, then claimable ones."""

    _ids = itertools.count(1)

    def __init__(
        self,
        bus: MemoryBus,
        queue: str,
        group: str,
        handler: WorkHandler,
        claim_idle: float,
        max_deliveries: int,
    ) -> None:
        self.bus, self.queue, self.group, self.handler = bus, queue, group, handler
        self.claim_idle, self.max_deliveries = claim_idle, max_deliveries
        self.id = next(self._ids)
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())
        self.bus._track(self.task)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        bus = self.bus
        while True:
            item = bus._next_entry(self) or bus._claim(self)
            if item is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self._claim_wait())
                except TimeoutError:
                    pass
                continue
            try:
                await self.handler(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("work queue %s consumer failed on entry %s", self.queue, item.id)

    def _claim_wait(self) -> float:
        group = self.bus._queues[self.queue].groups[self.group]
        if not group.pending:
            return max(self.claim_idle, 0.01)
        oldest = min(p.since for p in group.pending.values())
        return max(oldest + self.claim_idle - time.monotonic(), 0.005)


class MemoryBus:
    """The bus of one process: the kernels sharing this object are one node."""

    name = "memory"

    def __init__(self, *, history: int = HISTORY) -> None:
        self.node_id = f"memory-{uuid.uuid4().hex[:12]}"
        self.state = MemoryState()
        self._history = history
        self._topics: dict[str, _Topic] = {}
        self._outbox: list[tuple[str, bytes]] = []
        self._scheduled = False
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Future] = set()
        self._consumers: set[_Consumer] = set()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self._drain()
        for consumer in list(self._consumers):
            consumer.stop()
        self._consumers.clear()
        for topic in self._topics.values():
            for subscription in topic.subscriptions:
                subscription.active = False
            topic.subscriptions.clear()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _track(self, task: asyncio.Future) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _topic(self, topic: str) -> _Topic:
        entry = self._topics.get(topic)
        if entry is None:
            entry = self._topics[topic] = _Topic(self._history)
        return entry

    # -- publish / subscribe ----------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, node: str | None = None) -> None:
        if node is not None and node != self.node_id:
            return  # no such node on an in-process bus
        self._outbox.append((topic, payload))
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: delivered by the next flush()
            self._scheduled = True
            loop.call_soon(self._drain)

    async def flush(self) -> None:
        self._drain()

    def _drain(self) -> None:
        self._scheduled = False
        batch, self._outbox = self._outbox, []
        topics = self._topics
        for topic, payload in batch:
            entry = topics.get(topic)
            if entry is None:
                entry = self._topic(topic)
            entry.seq += 1
            entry.history.append((entry.seq, payload))
            if entry.subscriptions:
                entry.delivered = entry.seq
                for subscription in tuple(entry.subscriptions):
                    subscription.deliver(payload)

    def subscribe(self, topic: str, handler: Handler, *, after: str | None = None) -> Unsubscribe:
        entry = self._topic(topic)
        subscription = _Subscription(self, topic, handler)
        entry.subscriptions.append(subscription)
        if after is not None:
            start = _parse_position(after)
            missed = [payload for seq, payload in entry.history if seq > start]
            if missed:
                subscription.running = True  # live payloads queue behind the missed ones
                asyncio.get_running_loop().call_soon(_replay, subscription, missed)

        def unsubscribe() -> None:
            subscription.active = False
            if subscription in entry.subscriptions:
                entry.subscriptions.remove(subscription)

        return unsubscribe

    def position(self, topic: str) -> str | None:
        entry = self._topics.get(topic)
        if entry is None or entry.delivered is None:
            return None
        return str(entry.delivered)

    # -- work queues --------------------------------------------------------------------
    def _queue(self, queue: str) -> _Queue:
        entry = self._queues.get(queue)
        if entry is None:
            entry = self._queues[queue] = _Queue()
        return entry

    async def enqueue(self, queue: str, payload: bytes) -> str:
        entry = self._queue(queue)
        entry.next_id += 1
        entry.entries[entry.next_id] = bytes(payload)
        for group in entry.groups.values():
            for consumer in group.consumers:
                consumer.wake.set()
        return str(entry.next_id)

    def consume(
        self,
        queue: str,
        group: str,
        handler: WorkHandler,
        *,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
    ) -> Unsubscribe:
        state = self._queue(queue).groups.setdefault(group, _Group())
        consumer = _Consumer(self, queue, group, handler, claim_idle, max_deliveries)
        state.consumers.append(consumer)
        self._consumers.add(consumer)
        consumer.start()

        def unsubscribe() -> None:
            consumer.stop()
            self._consumers.discard(consumer)
            if consumer in state.consumers:
                state.consumers.remove(consumer)

        return unsubscribe

    def _next_entry(self, consumer: _Consumer) -> WorkItem | None:
        queue = self._queues[consumer.queue]
        group = queue.groups[consumer.group]
        for entry_id in queue.entries:  # ordered: skip what the group already had
            if entry_id > group.cursor:
                group.cursor = entry_id
                group.pending[entry_id] = _Pending(consumer.id, time.monotonic(), 1)
                return WorkItem(consumer.queue, str(entry_id), queue.entries[entry_id], 1)
        return None

    def _claim(self, consumer: _Consumer) -> WorkItem | None:
        queue = self._queues[consumer.queue]
        group = queue.groups[consumer.group]
        now = time.monotonic()
        for entry_id, pending in list(group.pending.items()):
            if now - pending.since < consumer.claim_idle:
                continue
            payload = queue.entries.get(entry_id)
            if payload is None:  # trimmed away
                del group.pending[entry_id]
                continue
            if pending.deliveries >= consumer.max_deliveries:
                del group.pending[entry_id]
                self._dead_letter(consumer.queue, payload)
                self._forget(queue, entry_id)
                continue
            pending.consumer, pending.since = consumer.id, now
            pending.deliveries += 1
            return WorkItem(consumer.queue, str(entry_id), payload, pending.deliveries)
        return None

    def _dead_letter(self, queue: str, payload: bytes) -> None:
        log.warning("work queue %s: an entry failed too often, moved to %s:dead", queue, queue)
        dead = self._queue(f"{queue}:dead")
        dead.next_id += 1
        dead.entries[dead.next_id] = payload
        for group in dead.groups.values():
            for consumer in group.consumers:
                consumer.wake.set()

    async def ack(self, queue: str, group: str, ids: Sequence[str]) -> None:
        entry = self._queues.get(queue)
        state = entry.groups.get(group) if entry else None
        if state is None:
            return
        for raw in ids:
            entry_id = int(raw)
            if state.pending.pop(entry_id, None) is not None:
                self._forget(entry, entry_id)

    @staticmethod
    def _forget(queue: _Queue, entry_id: int) -> None:
        """Drop an entry every group is done with."""
        for group in queue.groups.values():
            if group.cursor < entry_id or entry_id in group.pending:
                return
        queue.entries.pop(entry_id, None)


def _replay(subscription: _Subscription, missed: list[bytes]) -> None:
    live, subscription.queue = subscription.queue, deque()
    subscription.running = False
    subscription.deliver_many([*missed, *live])


def _parse_position(position: str) -> int:
    try:
        return int(position)
    except ValueError:
        return 0


@hookimpl(trylast=True)
def kefu_bus_backends():
    return {"memory": lambda kernel: MemoryBus()}
