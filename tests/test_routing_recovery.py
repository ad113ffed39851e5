"""What routing does when connections, processes and time get in the way, over the real
gateway: an agent's console that reconnects is told of every conversation assigned to
it meanwhile; answer deadlines live in the records and in a heap, so that the sweep
reads nothing and another process releases what a vanished one assigned; a pass
reads only the records that changed; and an agent back while their grace period ends
is not set away."""

from __future__ import annotations

import asyncio
from collections import Counter

from kefu.core.domain import QUEUED, Conversation, new_id
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.routing import live, service_of
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, make_kernel, ws_peer
from tests.routing_support import (
    ROUTING,
    Events,
    Shared,
    add_agent,
    console,
    joined,
    routing_client,
    settle,
    site_of,
    visitor,
)

ASSIGNMENT_FIELDS = {"op", "reason", "conversation", "answer_within_s"}


async def test_a_reconnecting_console_is_told_of_what_was_assigned_meanwhile(
    aiohttp_client, tmp_path
):
    routing = ROUTING.replace("away_grace_s = 0.2", "away_grace_s = 30")
    client = await routing_client(aiohttp_client, tmp_path, routing)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=3))
    done, first = await visitor(client, site), await visitor(client, site)
    routed = [await ann.assignment(), await ann.assignment()]
    assert {f["reason"] for f in routed} == {"routed"}
    resp = await client.post(
        f"/v1/conversations/{done.conversation_id}/resolve", headers=ann.auth()
    )
    assert resp.status == 200  # resolved: not replayed
    await ann.peer.close()  # her connection drops; within the grace period she is online
    second = await visitor(client, site)
    assert await joined(second.peer, ann.agent)  # given to her while she had no connection
    await settle(client)

    back = await ws_peer(client, ann.token)
    replayed = [await back.expect("assignment", reason="replay") for _ in range(2)]
    assert [f["conversation"]["id"] for f in replayed] == [
        first.conversation_id,
        second.conversation_id,
    ]  # oldest first
    for frame in replayed:
        assert set(frame) == ASSIGNMENT_FIELDS and set(routed[0]) == ASSIGNMENT_FIELDS
        view = frame["conversation"]
        assert (view["state"], view["assignee_id"]) == ("assigned", ann.agent.id)
        assert frame["answer_within_s"] is None  # no answer timeout configured
    assert not [f for f in await back.quiet(0.2) if f["op"] == "assignment"]
    # the new connection watches them: the visitor's messages reach it
    await second.peer.send(op="send", conversation_id=second.conversation_id, cid="v1", text="hi?")
    await second.peer.expect("ack")
    assert (await back.expect("message"))["text"] == "hi?"

    ben = await console(client, await add_agent(kernel, site.site.id, "Ben"))
    assert not [f for f in await ben.peer.quiet(0.2) if f["op"] == "assignment"]


async def test_a_replayed_assignment_says_how_long_is_left_to_answer(aiohttp_client, tmp_path):
    routing = ROUTING.replace("answer_timeout_s = 0", "answer_timeout_s = 60")
    client = await routing_client(aiohttp_client, tmp_path, routing)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    guest = await visitor(client, site)
    assert (await ann.assignment())["answer_within_s"] == 60
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.meta["answer_by"] == stored.meta["assigned_at"] + 60  # any process may expire it
    assert stored.meta["assigned_by"] == service_of(kernel).origin
    tab = await ws_peer(client, ann.token)
    left = (await tab.expect("assignment", reason="replay"))["answer_within_s"]
    assert 0 < left <= 60
    await ann.peer.send(op="accept", conversation_id=guest.conversation_id)
    await ann.peer.expect("accept_ok")
    again = await ws_peer(client, ann.token)
    assert (await again.expect("assignment", reason="replay"))["answer_within_s"] is None


class Counting:
    """Counts the storage calls made through it (a proxy of the real backend)."""

    def __init__(self, storage) -> None:
        self._storage, self.calls = storage, Counter()

    def __getattr__(self, name):
        target = getattr(self._storage, name)
        if not callable(target) or name.startswith("_"):
            return target

        async def call(*args, **kwargs):
            self.calls[name, kwargs.get("state")] += 1
            return await target(*args, **kwargs)

        return call


def counted() -> Shared:
    """One counted memory storage and one bus for every kernel (several processes)."""
    storage = Counting(MemoryStorage())
    shared = Shared(lambda: storage)
    shared.storage = storage
    return shared


async def worker(aiohttp_client, tmp_path, shared, routing, events=None):
    plugins = (("shared", shared),) + ((("events", events),) if events else ())
    kernel = make_kernel(tmp_path, routing, plugins, storage="shared", bus="shared")
    return await aiohttp_client(create_app(kernel))


async def test_deadlines_are_a_heap_the_sweep_reads_nothing_and_only_due_ones_expire(
    aiohttp_client, tmp_path
):
    shared = counted()
    routing = ROUTING.replace("sweep_interval_s = 0", "sweep_interval_s = 0.05").replace(
        "answer_timeout_s = 0", "answer_timeout_s = 1.0"
    )  # the early ones are due 0.3 s after the quiet window ends, the late one 0.5 s later
    client = await worker(aiohttp_client, tmp_path, shared, routing)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=50))
    early = [await visitor(client, site) for _ in range(3)]
    for _ in early:
        await ann.assignment()
    await asyncio.sleep(0.5)
    late = await visitor(client, site)
    await ann.assignment()
    await settle(client)
    shared.storage.calls.clear()
    await asyncio.sleep(0.2)  # four sweeps, nothing due yet
    assert not shared.storage.calls, shared.storage.calls
    for guest in early:  # the first three expire, each read once, not the fourth
        left = await guest.peer.expect("agent_left", within=3)
        assert left["reason"] == "timeout"
    await settle(client)
    assert shared.storage.calls["list_conversations", "assigned"] == 0
    stored = await kernel.storage.get_conversation(site.site.id, late.conversation_id)
    assert stored.assignee_id == ann.agent.id


async def test_another_process_releases_what_a_vanished_one_assigned(aiohttp_client, tmp_path):
    shared, events = counted(), Events()
    routing = ROUTING.replace("answer_timeout_s = 0", "answer_timeout_s = 0.3")
    one = await worker(aiohttp_client, tmp_path, shared, routing)
    two = await worker(aiohttp_client, tmp_path, shared, routing, events)
    kernel_one, kernel_two = app_kernel(one.app), app_kernel(two.app)
    site = await add_site(kernel_one)
    ann = await console(one, await add_agent(kernel_one, site.site.id, "Ann", capacity=1))
    guest = await visitor(one, site)
    await ann.assignment()
    await service_of(kernel_two).settle()  # the second heard of it over the bus
    await service_of(kernel_one).stop()  # the first goes away before the deadline
    ben = await console(two, await add_agent(kernel_two, site.site.id, "Ben", capacity=1))
    assert await joined(guest.peer, ben.agent, within=6)  # after the deadline and the grace
    released = events.of("conversation.reassigned")
    assert [e.data["agent_id"] for e in released] == [ann.agent.id]
    stored = await kernel_two.storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.meta["declined_by"] == [ann.agent.id] and stored.assignee_id == ben.agent.id


async def test_a_pass_reads_only_the_records_that_changed(aiohttp_client, tmp_path):
    shared = counted()
    client = await worker(aiohttp_client, tmp_path, shared, ROUTING)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    site_id = site.site.id
    ann = await console(client, await add_agent(kernel, site_id, "Ann", capacity=2))
    for n in range(300):
        conversation = await kernel.storage.create_conversation(
            Conversation(new_id(), site_id, f"v{n}", state=QUEUED)
        )
        await kernel.emit("conversation.queued", site_id, conversation_id=conversation.id)
    await settle(client)
    held = [await ann.assignment(), await ann.assignment()]
    service = service_of(kernel)
    assert len(service.engine.queue(site_id)) == 298

    shared.storage.calls.clear()  # one more arrives while Ann is full
    conversation = await kernel.storage.create_conversation(
        Conversation(new_id(), site_id, "late", state=QUEUED)
    )
    await kernel.emit("conversation.queued", site_id, conversation_id=conversation.id)
    await settle(client)
    calls = shared.storage.calls
    assert calls["list_conversations", "queued"] == calls["list_conversations", "assigned"] == 0
    assert calls["get_conversation", None] == 1
    assert len(service.engine.queue(site_id)) == 299

    shared.storage.calls.clear()  # a resolution frees a slot: one claim, no scan
    await ann.peer.send(op="resolve", conversation_id=held[0]["conversation"]["id"])
    await ann.peer.expect("resolve_ok")
    offer = await ann.assignment()
    await settle(client)
    assert calls["list_conversations", "queued"] == 0
    assert calls["update_conversation", None] == 2  # the resolution, the claim
    assert len(service.engine.queue(site_id)) == 298
    first_waiting = service.engine.queue(site_id).ordered()[0]
    assert offer["conversation"]["id"] != first_waiting.id


class HeldAgentRead(MemoryStorage):
    """The memory backend that, once armed, holds the next read of an agent record until
    released (a busy database answering late)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.reading, self.release = asyncio.Event(), asyncio.Event()

    async def get_agent(self, site_id, agent_id):
        if self.armed:
            self.armed = False
            self.reading.set()
            await self.release.wait()
        return await super().get_agent(site_id, agent_id)


class HeldBackend:
    def __init__(self) -> None:
        self.storage = HeldAgentRead()

    @hookimpl
    def kefu_storage_backends(self):
        return {"held": lambda kernel: self.storage}


async def test_an_agent_back_while_the_grace_period_ends_is_not_set_away(aiohttp_client, tmp_path):
    backend = HeldBackend()
    client = await routing_client(
        aiohttp_client, tmp_path, storage="held", extra_plugins=(("held", backend),)
    )
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    storage = backend.storage
    storage.armed = True
    await ann.peer.close()
    await asyncio.wait_for(storage.reading.wait(), 3)  # the grace period is over: reading
    back = await ws_peer(client, ann.token)  # she is back before the read returns
    storage.release.set()
    status = None
    for _ in range(20):  # whatever was in flight settles: she is online, and stays so
        await asyncio.sleep(0.05)
        status = (await kernel.storage.get_agent(site.site.id, ann.agent.id)).status
    assert status == "online"
    await back.close()


async def test_a_rebuild_reads_every_page_of_a_long_line(monkeypatch):
    monkeypatch.setattr(live, "SCAN_LIMIT", 7)
    storage = MemoryStorage()
    for n in range(40):  # times in groups of five equal ones, across page boundaries
        conversation = Conversation(f"c{n:02d}", "s", f"v{n}", state=QUEUED)
        conversation.updated_at = 1000.0 + n // 5
        await storage.create_conversation(conversation)
    found = await live.StorageSource(storage).every("s", QUEUED)
    assert sorted(c.id for c in found) == [f"c{n:02d}" for n in range(40)]


async def test_an_agent_online_when_the_process_died_who_never_comes_back_is_set_away(
    aiohttp_client, tmp_path
):
    """``kill -9`` leaves agents ``online`` in storage with nobody holding a connection of
    theirs: the next process gives each the grace period a closed connection gets, so one
    whose console never returns is set away and is not given the next visitor."""
    storage = MemoryStorage()
    first = await worker(aiohttp_client, tmp_path, Shared(lambda: storage), ROUTING)
    site = await site_of(first)
    ann = await add_agent(app_kernel(first.app), site.site.id, "Ann")
    ann.status = "online"  # she was online when the process died
    await storage.update_agent(ann)
    await first.close()  # (no connection of hers: nothing of the first process tells)
    # the restarted process: the same storage, a bus (and its shared state) of its own
    second = await worker(aiohttp_client, tmp_path, Shared(lambda: storage), ROUTING)
    for _ in range(60):  # the grace period (0.2 s) runs from the start
        if (await storage.get_agent(site.site.id, ann.id)).status == "away":
            break
        await asyncio.sleep(0.05)
    assert (await storage.get_agent(site.site.id, ann.id)).status == "away"
    guest = await visitor(second, site)
    await settle(second)
    stored = await storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.state == QUEUED and stored.assignee_id is None


async def test_an_agent_back_within_the_grace_period_after_a_restart_stays_online(
    aiohttp_client, tmp_path
):
    storage = MemoryStorage()
    first = await worker(aiohttp_client, tmp_path, Shared(lambda: storage), ROUTING)
    site = await site_of(first)
    ann = await add_agent(app_kernel(first.app), site.site.id, "Ann")
    ann.status = "online"
    await storage.update_agent(ann)
    await first.close()
    routing = ROUTING.replace("away_grace_s = 0.2", "away_grace_s = 0.5")
    second = await worker(aiohttp_client, tmp_path, Shared(lambda: storage), routing)
    back = await console(second, ann, online=False)  # her console reconnects in time
    guest = await visitor(second, site)
    assert await joined(guest.peer, ann)
    await asyncio.sleep(0.8)  # past the grace period: she is still online
    assert (await storage.get_agent(site.site.id, ann.id)).status == "online"
    await back.peer.close()
