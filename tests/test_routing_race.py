"""Concurrency over the real gateway: two workers (kernels with their own routing engines and
locks) share one storage and one bus; many agents and many visitors arrive at once on both,
agents pick by hand while passes run, resolutions free slots on both sides. The routing
passes of the two workers and the picks race on every conversation.

What must hold: no conversation is ever given to two agents (one ``conversation.assigned``
and one ``assignment`` frame per conversation, one ``agent_joined`` per visitor), no agent
ever holds more than its capacity (checked on every frame an agent receives and in storage),
and no slot stays idle while a conversation waits.

On the memory backend every storage call yields a random few hundred microseconds, so that
passes of the two workers interleave between each read and write as separate processes do;
on PostgreSQL each worker has its own connection pool and the database decides.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections import Counter

import pytest

from kefu.core.web_app import create_app
from kefu.plugins.routing import service_of
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, make_kernel
from tests.conftest import service_unavailable
from tests.routing_support import ROUTING, Events, Shared, add_agent, console, visitor

AGENTS, VISITORS, SEED = 14, 44, 7
POSTGRES_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
JITTERED = ("get_conversation", "update_conversation", "list_conversations", "get_agent")


class Jitter:
    """The memory backend, yielding to other tasks a random moment around the calls routing
    makes, so that concurrent claims really interleave."""

    def __init__(self, storage, rng: random.Random) -> None:
        self._storage, self._rng = storage, rng

    def __getattr__(self, name):
        target = getattr(self._storage, name)
        if name not in JITTERED:
            return target

        async def call(*args, **kwargs):
            await asyncio.sleep(self._rng.random() * 0.0005)
            result = await target(*args, **kwargs)
            await asyncio.sleep(0)
            return result

        return call


@pytest.fixture(params=["memory", "postgres"])
async def storage_maker(request):
    if request.param == "memory":
        shared = Jitter(MemoryStorage(), random.Random(SEED))
        yield lambda: shared
        return
    try:
        import asyncpg
    except ImportError:
        service_unavailable("asyncpg (pip install 'kefu[postgres]')")
    from kefu.plugins.storage_sql import SqlStorage

    schema = f"kefu_race_{secrets.token_hex(5)}"
    try:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        service_unavailable(f"PostgreSQL ({exc})")
    url = POSTGRES_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield lambda: SqlStorage(url, schema=schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


class Watch:
    """Every agent's and visitor's frames, checked as they arrive."""

    def __init__(self, capacity: dict[str, int]) -> None:
        self.capacity = capacity
        self.holding: dict[str, set[str]] = {agent: set() for agent in capacity}
        self.offered: Counter = Counter()
        self.joined: Counter = Counter()
        self.violations: list[str] = []

    def assignment(self, agent_id: str, conversation_id: str) -> None:
        self.offered[conversation_id] += 1
        held = self.holding[agent_id]
        held.add(conversation_id)
        if len(held) > self.capacity[agent_id]:
            self.violations.append(f"{agent_id} holds {len(held)} > {self.capacity[agent_id]}")

    def released(self, agent_id: str, conversation_id: str) -> None:
        self.holding[agent_id].discard(conversation_id)


async def drain_frames(peer, on_frame, stop: asyncio.Event) -> None:
    """Feed ``on_frame`` what the peer buffered, then every frame until ``stop``."""
    for frame in peer.frames:
        on_frame(frame)
    peer.frames.clear()
    while not stop.is_set():
        try:
            async with asyncio.timeout(0.05):
                msg = await peer.ws.receive()
        except TimeoutError:
            continue
        if msg.type.name not in ("TEXT", "BINARY"):
            return
        on_frame(msg.json())


async def settle(clients) -> None:
    """Until no pass is pending in either worker and the bus delivered what they sent."""
    for _ in range(3):
        for client in clients:
            await service_of(app_kernel(client.app)).settle()
        await asyncio.sleep(0.05)


async def test_many_agents_and_visitors_at_once_on_two_workers(
    storage_maker, aiohttp_client, tmp_path
):  # storage_maker first: its schema is dropped only after both servers stopped
    shared = Shared(storage_maker)
    rng = random.Random(SEED)
    events = [Events(), Events()]

    async def worker(index: int):
        kernel = make_kernel(
            tmp_path,
            ROUTING.replace("sweep_interval_s = 0", "sweep_interval_s = 0.2"),
            extra_plugins=(("shared", shared), ("events", events[index])),
            storage="shared",
            bus="shared",
        )
        return await aiohttp_client(create_app(kernel))

    one, two = await worker(0), await worker(1)
    clients = (one, two)
    kernel = app_kernel(one.app)
    site = await add_site(kernel)
    agents = [
        await add_agent(kernel, site.site.id, f"A{n}", capacity=rng.randint(1, 3))
        for n in range(AGENTS)
    ]
    watch = Watch({a.id: a.capacity for a in agents})
    desks = await asyncio.gather(*(console(clients[n % 2], a) for n, a in enumerate(agents)))
    stop = asyncio.Event()

    def on_agent_frame(agent_id):
        def seen(frame):
            if frame["op"] == "assignment":
                watch.assignment(agent_id, frame["conversation"]["id"])

        return seen

    readers = [
        asyncio.create_task(drain_frames(d.peer, on_agent_frame(d.agent.id), stop)) for d in desks
    ]

    async def pick_now_and_then(desk):
        for _ in range(4):
            await asyncio.sleep(rng.random() * 0.05)
            await desk.peer.send(op="pick")

    arrivals = [visitor(clients[n % 2], site) for n in range(VISITORS)]
    guests, *_ = await asyncio.gather(
        asyncio.gather(*arrivals), *(pick_now_and_then(d) for d in desks)
    )

    def on_guest_frame(frame):
        if frame["op"] == "agent_joined":
            watch.joined[frame["conversation_id"]] += 1

    readers += [asyncio.create_task(drain_frames(g.peer, on_guest_frame, stop)) for g in guests]
    await settle(clients)
    total = sum(a.capacity for a in agents)
    await check(kernel, site.site.id, agents, watch, expect_assigned=min(total, VISITORS))

    # resolutions on both workers free slots while both drain and agents pick again
    held = await kernel.storage.list_conversations(site.site.id, state="assigned", limit=500)
    resolving = held[: len(held) // 2]
    by_agent = {d.agent.id: d for d in desks}

    async def resolve(conversation):
        desk = by_agent[conversation.assignee_id]
        # released before asking: the slot may be given again before the answer arrives
        watch.released(conversation.assignee_id, conversation.id)
        resp = await desk_client(clients, desks, desk).post(
            f"/v1/conversations/{conversation.id}/resolve", headers=desk.auth()
        )
        assert resp.status == 200

    await asyncio.gather(
        *(resolve(c) for c in resolving), *(pick_now_and_then(d) for d in desks[::3])
    )
    await settle(clients)
    stop.set()
    await asyncio.gather(*readers)
    expected = min(total, VISITORS - len(resolving))
    await check(kernel, site.site.id, agents, watch, expect_assigned=expected)
    assert not watch.violations, watch.violations[:5]
    assert max(watch.offered.values()) == 1, "an assignment frame went out twice"
    assert max(watch.joined.values()) == 1, "a visitor was told of two agents"
    assigned = Counter(
        e.data["conversation_id"] for ev in events for e in ev.of("conversation.assigned")
    )
    assert max(assigned.values()) == 1, "a conversation was assigned twice"
    assert sum(assigned.values()) == len(resolving) + expected == len(watch.offered)


def desk_client(clients, desks, desk):
    return clients[desks.index(desk) % 2]


async def check(kernel, site_id, agents, watch, expect_assigned) -> None:
    """Storage agrees: nobody over capacity, every free slot taken while anyone waits."""
    storage = kernel.storage
    assigned = await storage.list_conversations(site_id, state="assigned", limit=500)
    queued = await storage.list_conversations(site_id, state="queued", limit=500)
    per_agent = Counter(c.assignee_id for c in assigned)
    for agent in agents:
        assert per_agent[agent.id] <= agent.capacity, (agent.name, per_agent[agent.id])
    assert len(assigned) == expect_assigned, (len(assigned), len(queued))
    if queued:
        assert all(per_agent[a.id] == a.capacity for a in agents), "a slot idles while some wait"
    assert {c.id for c in assigned} <= set(watch.offered)
