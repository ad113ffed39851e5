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

from kefu.core.web_app import create_app
from kefu.plugins.routing import service_of
from kefu.plugins.routing.service import lease_key
from kefu.plugins.routing.settings import RoutingSettings
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, make_kernel
from tests.routing_support import ROUTING, Shared

SPIN_LIMIT = 200  # lease calls before the guard breaks a spin (the test then fails)


def test_the_lease_is_on_by_default():
    assert RoutingSettings().lease_ttl_s == 10.0


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
