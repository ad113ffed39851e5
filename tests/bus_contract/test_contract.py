"""What every bus promises (core/bus.py), checked on every backend of ``conftest.MAKERS``.

"Two nodes" are two bus instances (two processes on Redis); on the memory bus they
are one object, so what needs two processes is checked as far as one can show it.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kefu.core.bus import Bus, SharedState, WorkItem
from tests.bus_contract.conftest import Backend, eventually


class Inbox:
    """A subscriber that records what it got."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append(payload)


async def settle(*buses: Bus) -> None:
    """Everything published so far was handed over, and readers had a moment."""
    for bus in buses:
        await bus.flush()
    await asyncio.sleep(0.05)


async def test_implements_the_protocols(backend: Backend):
    bus = await backend.node()
    assert isinstance(bus, Bus) and isinstance(bus.state, SharedState)
    assert bus.node_id and isinstance(bus.name, str)
    if backend.distinct_nodes:
        other = await backend.node()
        assert other.node_id != bus.node_id


async def test_broadcast_reaches_every_node_once(backend: Backend):
    a, b = await backend.node(), await backend.node()
    on_a, on_b = Inbox(), Inbox()
    a.subscribe("room", on_a)
    b.subscribe("room", on_b)
    a.publish("room", b"hello")
    b.publish("other", b"not for room")
    await eventually(lambda: on_a.got and on_b.got, what="both subscribers")
    await settle(a, b)
    assert on_a.got == [b"hello"] and on_b.got == [b"hello"]


async def test_addressed_delivery_reaches_only_the_named_node(backend: Backend):
    a, b = await backend.node(), await backend.node()
    on_a, on_b = Inbox(), Inbox()
    a.subscribe("conn", on_a)
    b.subscribe("conn", on_b)
    if backend.distinct_nodes:
        a.publish("conn", b"to b", node=b.node_id)
        b.publish("conn", b"to a", node=a.node_id)
        a.publish("conn", b"to a itself", node=a.node_id)
        await eventually(lambda: len(on_a.got) == 2 and len(on_b.got) == 1)
        await settle(a, b)
        assert on_b.got == [b"to b"]
        assert sorted(on_a.got) == [b"to a", b"to a itself"]
    else:  # one in-process node: addressed to it arrives, to any other node nowhere
        a.publish("conn", b"elsewhere", node="no-such-node")
        a.publish("conn", b"here", node=a.node_id)
        await eventually(lambda: on_a.got)
        await settle(a)
        assert on_a.got == [b"here"] and on_b.got == [b"here"]


async def test_unsubscribe_stops_delivery(backend: Backend):
    a = await backend.node()
    inbox = Inbox()
    stop = a.subscribe("t", inbox)
    a.publish("t", b"1")
    await eventually(lambda: inbox.got)
    stop()
    stop()  # twice is harmless
    a.publish("t", b"2")
    await settle(a)
    assert inbox.got == [b"1"]


async def test_order_per_publisher_with_sync_and_async_handlers(backend: Backend):
    a, b, c = await backend.node(), await backend.node(), await backend.node()
    fast, slow_got = Inbox(), []

    async def slow(topic: str, payload: bytes) -> None:  # awaited before the next payload
        await asyncio.sleep(random.random() / 2000)
        slow_got.append(payload)

    c.subscribe("seq", fast)
    c.subscribe("seq", slow)
    for n in range(300):
        a.publish("seq", b"a%d" % n)
        b.publish("seq", b"b%d" % n)
        if n % 37 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: len(slow_got) == 600 and len(fast.got) == 600, within=20)
    for got in (fast.got, slow_got):
        for who in (b"a", b"b"):
            mine = [int(p[1:]) for p in got if p[:1] == who]
            assert mine == list(range(300))


async def test_publishes_of_one_tick_go_as_one_batch(backend: Backend):
    a = await backend.node()
    inbox = Inbox()
    a.subscribe("burst", inbox)
    await settle(a)
    round_trips: list[int] = []
    if backend.kind.startswith("redis"):  # wrap the one place a batch goes to Redis
        send = a._execute

        async def counting(batch):
            round_trips.append(len(batch))
            return await send(batch)

        a._execute = counting
    for n in range(100):
        a.publish("burst", b"%d" % n)
    assert inbox.got == []  # publish never delivers inline
    if backend.kind == "memory":
        await asyncio.sleep(0)  # one loop tick
        assert len(inbox.got) == 100
    await eventually(lambda: len(inbox.got) == 100)
    assert inbox.got == [b"%d" % n for n in range(100)]
    if backend.kind.startswith("redis"):
        assert round_trips == [100], "100 publishes of one tick must be one round trip"


async def test_position_and_resume_after_a_gap(backend: Backend):
    a, b = await backend.node(), await backend.node()
    inbox = Inbox()
    assert a.position("feed") is None  # nothing delivered yet
    stop = a.subscribe("feed", inbox)
    for n in range(1, 4):
        b.publish("feed", b"%d" % n)
    await eventually(lambda: len(inbox.got) == 3)
    position = a.position("feed")
    assert position is not None
    stop()
    for n in range(4, 7):  # missed while unsubscribed
        b.publish("feed", b"%d" % n)
    await settle(a, b)
    assert a.position("feed") == position  # nothing delivered meanwhile

    resumed = Inbox()
    a.subscribe("feed", resumed, after=position)
    b.publish("feed", b"7")
    await eventually(lambda: len(resumed.got) >= 4)
    await settle(a, b)
    assert resumed.got == [b"4", b"5", b"6", b"7"]
    assert inbox.got == [b"1", b"2", b"3"]

    fresh = Inbox()  # without ``after``: from now on only
    a.subscribe("feed", fresh)
    b.publish("feed", b"8")
    await eventually(lambda: fresh.got)
    await settle(a, b)
    assert fresh.got == [b"8"] and resumed.got[-1] == b"8"


async def test_resume_covers_payloads_addressed_to_the_node(backend: Backend):
    a, b = await backend.node(), await backend.node()
    inbox = Inbox()
    stop = a.subscribe("mixed", inbox)
    b.publish("mixed", b"0")
    await eventually(lambda: inbox.got)
    position = a.position("mixed")
    stop()
    b.publish("mixed", b"1")
    b.publish("mixed", b"2", node=a.node_id)
    b.publish("other", b"x", node=a.node_id)
    b.publish("mixed", b"3")
    await settle(a, b)
    resumed = Inbox()
    a.subscribe("mixed", resumed, after=position)
    await eventually(lambda: len(resumed.got) == 3)
    await settle(a, b)
    assert sorted(resumed.got) == [b"1", b"2", b"3"]  # across two streams: no order promised


async def test_a_failing_handler_does_not_stop_delivery(backend: Backend):
    a = await backend.node()
    inbox = Inbox()

    def broken(topic, payload):
        raise RuntimeError("boom")

    async def broken_async(topic, payload):
        raise RuntimeError("boom")

    a.subscribe("t", broken)
    a.subscribe("t", broken_async)
    a.subscribe("t", inbox)
    a.publish("t", b"1")
    a.publish("t", b"2")
    await eventually(lambda: len(inbox.got) == 2)


# -- work queues ------------------------------------------------------------------------------


class Worker:
    """A consumer that records what it got and acknowledges it (or not)."""

    def __init__(self, bus: Bus, group: str = "g", *, ack: bool = True, fail: bool = False):
        self.bus, self.group, self.ack, self.fail = bus, group, ack, fail
        self.items: list[WorkItem] = []

    async def __call__(self, item: WorkItem) -> None:
        self.items.append(item)
        if self.fail:
            raise RuntimeError("poison")
        if self.ack:
            await self.bus.ack(item.queue, self.group, [item.id])

    @property
    def payloads(self) -> list[bytes]:
        return [item.payload for item in self.items]


async def test_each_entry_goes_to_exactly_one_consumer_of_a_group(backend: Backend):
    a, b = await backend.node(), await backend.node()
    one, two = Worker(a), Worker(b)
    a.consume("jobs", "g", one, claim_idle=5)
    b.consume("jobs", "g", two, claim_idle=5)
    ids = await asyncio.gather(*(a.enqueue("jobs", b"%d" % n) for n in range(200)))
    assert len(set(ids)) == 200 and all(isinstance(i, str) for i in ids)
    await eventually(lambda: len(one.items) + len(two.items) >= 200, within=10)
    await asyncio.sleep(0.2)
    got = one.payloads + two.payloads
    assert sorted(got) == sorted(b"%d" % n for n in range(200))  # none twice, none lost
    assert all(item.deliveries == 1 for item in one.items + two.items)


async def test_entries_queued_before_the_first_consumer_are_delivered(backend: Backend):
    a = await backend.node()
    await a.enqueue("early", b"first")
    worker = Worker(a)
    a.consume("early", "g", worker)
    await eventually(lambda: worker.items)
    assert worker.payloads == [b"first"] and worker.items[0].queue == "early"


async def test_every_group_gets_every_entry(backend: Backend):
    a = await backend.node()
    audit, billing = Worker(a, "audit"), Worker(a, "billing")
    a.consume("events", "audit", audit)
    a.consume("events", "billing", billing)
    for n in range(5):
        await a.enqueue("events", b"%d" % n)
    await eventually(lambda: len(audit.items) == 5 and len(billing.items) == 5)


async def test_acknowledged_entries_are_not_handed_out_again(backend: Backend):
    a = await backend.node()
    acked, lazy = Worker(a, "acked"), Worker(a, "lazy", ack=False)
    a.consume("q", "acked", acked, claim_idle=0.2)
    a.consume("q", "lazy", lazy, claim_idle=0.2, max_deliveries=10)
    await a.enqueue("q", b"x")
    await eventually(lambda: acked.items and lazy.items)
    await asyncio.sleep(0.8)
    assert [i.deliveries for i in acked.items] == [1]
    # the group that never acknowledges gets it again, counted, by its live consumer
    assert len(lazy.items) >= 2 and [i.deliveries for i in lazy.items][:2] == [1, 2]
    assert {i.id for i in lazy.items} == {acked.items[0].id}


async def test_an_entry_of_a_consumer_that_died_is_claimed_after_claim_idle(backend: Backend):
    a, b = await backend.node(), await backend.node()
    dying = Worker(a, ack=False)
    stop = a.consume("tasks", "g", dying, claim_idle=0.3)
    await a.enqueue("tasks", b"orphan")
    await eventually(lambda: dying.items)
    stop()  # stopped without acknowledging: as a process killed mid-entry
    started = time.monotonic()
    survivor = Worker(b)
    b.consume("tasks", "g", survivor, claim_idle=0.3)
    await eventually(lambda: survivor.items, within=5)
    assert time.monotonic() - started >= 0.2
    assert survivor.payloads == [b"orphan"]
    assert survivor.items[0].id == dying.items[0].id and survivor.items[0].deliveries == 2
    await asyncio.sleep(0.5)
    assert len(survivor.items) == 1  # acknowledged: done


async def test_an_entry_failing_max_deliveries_times_goes_to_the_dead_letter_queue(
    backend: Backend,
):
    a, b = await backend.node(), await backend.node()
    poisoned = Worker(a, fail=True)
    a.consume("mail", "g", poisoned, claim_idle=0.1, max_deliveries=3)
    healthy = Worker(a, "other")
    a.consume("mail", "other", healthy)  # another group is not affected
    await a.enqueue("mail", b"poison")
    dead = Worker(b, "dlq")
    b.consume("mail:dead", "dlq", dead)
    await eventually(lambda: dead.items, within=10, what="the dead letter")
    assert dead.payloads == [b"poison"] and dead.items[0].queue == "mail:dead"
    assert [i.deliveries for i in poisoned.items] == [1, 2, 3]
    await asyncio.sleep(0.4)
    assert len(poisoned.items) == 3 and len(dead.items) == 1
    assert healthy.payloads == [b"poison"]


async def test_a_raising_handler_leaves_the_entry_pending_for_later(backend: Backend):
    a = await backend.node()
    attempts: list[int] = []

    async def flaky(item: WorkItem) -> None:
        attempts.append(item.deliveries)
        if item.deliveries == 1:
            raise RuntimeError("transient")
        await a.ack(item.queue, "g", [item.id])

    a.consume("retry", "g", flaky, claim_idle=0.15)
    await a.enqueue("retry", b"x")
    await eventually(lambda: len(attempts) >= 2)
    await asyncio.sleep(0.4)
    assert attempts == [1, 2]


# -- shared state -------------------------------------------------------------------------------


async def test_state_get_set_delete_and_ttl(backend: Backend):
    s = (await backend.node()).state
    assert await s.get("k") is None
    assert await s.set("k", b"v") is True
    assert await s.get("k") == b"v"
    assert await s.set("k", b"w", only_if_absent=True) is False
    assert await s.get("k") == b"v"
    assert await s.set("k", b"w") is True and await s.get("k") == b"w"
    assert await s.delete("k") is True and await s.delete("k") is False
    assert await s.set("fresh", b"1", only_if_absent=True) is True
    await s.set("short", b"x", ttl=0.15)
    assert await s.get("short") == b"x"
    await asyncio.sleep(0.3)
    assert await s.get("short") is None
    assert await s.set("short", b"again", only_if_absent=True) is True  # expired = absent
    await s.set("short", b"forever")  # a write without ttl keeps it
    await asyncio.sleep(0.2)
    assert await s.get("short") == b"forever"


async def test_state_is_shared_between_nodes(backend: Backend):
    a, b = await backend.node(), await backend.node()
    await a.state.set("session:1", b"owner-a", ttl=5)
    assert await b.state.get("session:1") == b"owner-a"
    assert await b.state.set("session:1", b"owner-b", only_if_absent=True) is False


async def test_lease_is_exclusive_renewable_and_released(backend: Backend):
    a, b = await backend.node(), await backend.node()
    assert await a.state.lease("site:1:router", "A", 0.4) is True
    assert await b.state.lease("site:1:router", "B", 0.4) is False
    await asyncio.sleep(0.25)
    assert await a.state.lease("site:1:router", "A", 0.4) is True  # renewed
    await asyncio.sleep(0.25)  # past the first ttl, within the renewed one
    assert await b.state.lease("site:1:router", "B", 0.4) is False
    assert await b.state.release("site:1:router", "B") is False  # not B's
    assert await a.state.release("site:1:router", "A") is True
    assert await a.state.release("site:1:router", "A") is False
    assert await b.state.lease("site:1:router", "B", 0.2) is True
    await asyncio.sleep(0.35)  # B stopped renewing: the lease runs out
    assert await a.state.lease("site:1:router", "A", 1) is True


async def test_lease_taken_once_under_contention(backend: Backend):
    nodes = [await backend.node() for _ in range(3)]
    wins = await asyncio.gather(
        *(n.state.lease("turn:c1", f"owner{i}", 2) for i, n in enumerate(nodes * 4))
    )
    assert sum(wins) == 1


async def test_incr_counts_in_a_fixed_window(backend: Backend):
    a, b = await backend.node(), await backend.node()
    assert await a.state.incr("login:ip") == 1
    assert await b.state.incr("login:ip", 5) == 6
    assert await a.state.get("login:ip") == b"6"
    assert await a.state.incr("window", ttl=0.3) == 1
    await asyncio.sleep(0.2)
    assert await b.state.incr("window", ttl=0.3) == 2  # not extended by this increment
    await asyncio.sleep(0.2)
    assert await a.state.get("window") is None  # expired 0.3 s after it was created
    assert await a.state.incr("window", ttl=0.3) == 1
    counts = await asyncio.gather(*(n.state.incr("race") for n in (a, b) * 10))
    assert sorted(counts) == list(range(1, 21))


async def test_sets_with_ttl(backend: Backend):
    a, b = await backend.node(), await backend.node()
    assert await a.state.set_members("agents") == set()
    await a.state.set_add("agents", ["c1", "c2"])
    await b.state.set_add("agents", ["c3"])
    assert await b.state.set_members("agents") == {"c1", "c2", "c3"}
    await a.state.set_remove("agents", ["c1", "missing"])
    assert await a.state.set_members("agents") == {"c2", "c3"}
    await a.state.set_remove("agents", ["c2", "c3"])
    assert await a.state.set_members("agents") == set()
    await a.state.set_add("conns", ["x"], ttl=0.2)
    await asyncio.sleep(0.12)
    await b.state.set_add("conns", ["y"], ttl=0.2)  # refreshes the whole set's ttl
    await asyncio.sleep(0.12)
    assert await a.state.set_members("conns") == {"x", "y"}
    await asyncio.sleep(0.2)
    assert await a.state.set_members("conns") == set()


async def test_close_sends_what_is_queued_and_stops(backend: Backend):
    if not backend.distinct_nodes:
        pytest.skip("one in-process node: closing it leaves no receiver")
    a, b = await backend.node(), await backend.node()
    inbox = Inbox()
    b.subscribe("last", inbox)
    await settle(a, b)
    a.publish("last", b"before close")
    await asyncio.wait_for(a.close(), 5)
    await eventually(lambda: inbox.got == [b"before close"])
