"""The routing lease (``[routing] lease_ttl_s``, on by default): one process passes a site,
the others only refresh their indexes, and a follower never spins.

The stall this guards against: a follower's pass refreshed through ``sync()``, which hands
the work to another pass when the site's lock is taken (by a pick); from inside a pass that
"other pass" was the same one, run again at once, and on the memory bus (whose lease never
suspends) it never yielded to the loop: the pick holding the lock could not finish, and
the two-worker race test timed out or took minutes of CPU.
"""

from __future__ import annotations

import asyncio
import time

from kefu.core.domain import ASSIGNED, Conversation, Visitor, new_id
from kefu.core.web_app import create_app
from kefu.plugins.routing import service_of
from kefu.plugins.routing.service import lease_key
from kefu.plugins.routing.settings import RoutingSettings
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, make_kernel
from tests.routing_support import ROUTING, Shared, add_agent, console

SPIN_LIMIT = 200  # lease calls before the guard breaks a spin (the test then fails)


def test_the_lease_is_on_by_default():
    assert RoutingSettings().lease_ttl_s == 3.0


async def test_a_follower_waits_for_a_pick_instead_of_spinning(aiohttp_client, tmp_path):
    storage = MemoryStorage()
    shared = Shared(lambda: storage)

    async def worker():
        kernel = make_kernel(
            tmp_path, ROUTING, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return app_kernel((await aiohttp_client(create_app(kernel))).app)

    one, two = await worker(), await worker()
    site_id = (await add_site(one)).site.id
    holder, follower = service_of(one), service_of(two)
    await holder.settle()
    await follower.settle()
    state = shared.bus.state
    assert await state.lease(lease_key(site_id), holder.origin, ttl=30)

    calls = 0
    lease = state.lease

    async def counted(key, owner, ttl):
        nonlocal calls
        if owner == follower.origin:
            calls += 1
            if calls > SPIN_LIMIT:  # break the spin, or the loop never comes back here
                raise RuntimeError("spinning")
        return await lease(key, owner, ttl)

    state.lease = counted
    try:
        async with follower.engine.lock(site_id):  # a pick in progress on the follower
            follower.changed(site_id, "some-conversation", tell=False)
            follower.kick(site_id)
            await asyncio.sleep(0.2)
            assert calls <= 2, f"the follower's pass asked for the lease {calls} times"
        async with asyncio.timeout(5):
            await follower.settle()  # the pass refreshed once the lock was free
        assert calls <= 2, calls
        assert not follower.upkeep.site(site_id).conversations  # read, not left pending
        assert await state.get(lease_key(site_id)) == holder.origin.encode()
    finally:
        state.lease = lease


async def test_a_follower_reminds_the_holder_of_a_conversation_it_never_heard_of(
    aiohttp_client, tmp_path
):
    """The news of a queued conversation reached a follower only (lost on the bus for the
    holder): the follower's sweep tells the holder again, and the holder assigns it, long
    before its next rebuild."""
    storage = MemoryStorage()
    shared = Shared(lambda: storage)
    routing = ROUTING.replace("sweep_interval_s = 0", "sweep_interval_s = 0.1")

    async def worker():
        kernel = make_kernel(
            tmp_path, routing, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return await aiohttp_client(create_app(kernel))

    one, two = await worker(), await worker()
    kernel = app_kernel(one.app)
    holder, follower = service_of(kernel), service_of(app_kernel(two.app))
    site_id = (await add_site(kernel)).site.id
    assert await shared.bus.state.lease(lease_key(site_id), holder.origin, ttl=30)
    agent = await add_agent(kernel, site_id, "Ann", capacity=2)
    await console(one, agent)  # online on the holder's process
    await holder.settle()
    visitor = await storage.upsert_visitor(Visitor(new_id(), site_id))
    waiting = await storage.create_conversation(
        Conversation(new_id(), site_id, visitor.id, meta={"queued_at": time.time() - 10})
    )
    follower.changed(site_id, waiting.id, tell=False)  # the holder's copy of the news lost
    follower.kick(site_id)
    async with asyncio.timeout(5):
        while (await storage.get_conversation(site_id, waiting.id)).state != ASSIGNED:  # noqa: ASYNC110 (storage has no event for it)
            await asyncio.sleep(0.05)
    assigned = await storage.get_conversation(site_id, waiting.id)
    assert assigned.assignee_id == agent.id
    assert assigned.meta["assigned_by"] == holder.origin


async def test_a_busy_lease_is_renewed_and_a_dead_holder_replaced_within_the_ttl(
    aiohttp_client, tmp_path
):
    """With no passes (no sweep, no news), the holder keeps a busy site's lease by renewing
    it every third of the TTL; once it stops renewing (its process died: nothing given
    back), a follower with conversations waiting takes the lease within about 4/3 of the
    TTL instead of waiting for a sweep. tests/test_routing_takeover.py times it on real
    processes."""
    storage = MemoryStorage()
    shared = Shared(lambda: storage)
    ttl = 0.3
    routing = ROUTING + f"lease_ttl_s = {ttl}\n"

    async def worker():
        kernel = make_kernel(
            tmp_path, routing, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return app_kernel((await aiohttp_client(create_app(kernel))).app)

    one, two = await worker(), await worker()
    site_id = (await add_site(one)).site.id
    holder, follower = service_of(one), service_of(two)
    await holder.settle()
    await follower.settle()
    state = shared.bus.state
    await state.release(lease_key(site_id), holder.origin)  # whoever the start-up pass made
    await state.release(lease_key(site_id), follower.origin)
    visitor = await storage.upsert_visitor(Visitor(new_id(), site_id))
    waiting = await storage.create_conversation(
        Conversation(new_id(), site_id, visitor.id, meta={"queued_at": time.time()})
    )  # nobody online: it stays queued, the site busy
    holder.changed(site_id, waiting.id, tell=False)
    holder.kick(site_id)
    await holder.settle()
    assert await state.get(lease_key(site_id)) == holder.origin.encode()
    await asyncio.sleep(4 * ttl)  # no pass meanwhile: the keeper renewed it
    assert await state.get(lease_key(site_id)) == holder.origin.encode()
    assert holder.owned_sites() == {site_id}

    holder._keeper.cancel()  # the holder dies: no renewal, nothing given back
    died = time.monotonic()
    follower.changed(site_id, waiting.id, tell=False)
    follower.kick(site_id)
    async with asyncio.timeout(5):
        while await state.get(lease_key(site_id)) != follower.origin.encode():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    taken = time.monotonic() - died
    assert taken <= ttl + ttl / 3 + 0.3, taken
    assert follower.owned_sites() == {site_id}
