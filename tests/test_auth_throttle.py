"""Login throttling held in the bus's shared state (issue 12; holes 5 of issue 13): the
count is the same on every worker, and guessing one account from many addresses or many
accounts from one address is limited too."""

from __future__ import annotations

from kefu.core.web_app import create_app
from kefu.plugins.auth.throttle import ACCOUNT_FACTOR, ADDRESS_FACTOR, LoginThrottle
from kefu.plugins.bus_memory import MemoryBus
from tests.chat_support import add_site, app_kernel, make_kernel
from tests.test_gateway_cluster import Shared


async def test_failures_on_one_worker_count_on_the_other(aiohttp_client, tmp_path):
    shared = Shared()

    async def worker():
        kernel = make_kernel(
            tmp_path, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return await aiohttp_client(create_app(kernel))

    one, two = await worker(), await worker()
    s = await add_site(app_kernel(one.app))
    wrong = {"site_id": s.site.id, "email": s.agent.email, "password": "guess"}
    statuses = []
    for i in range(6):  # alternating workers, as a load balancer would
        statuses.append((await (one if i % 2 else two).post("/v1/auth/login", json=wrong)).status)
    assert statuses == [401] * 5 + [429]
    assert (await one.post("/v1/auth/login", json=wrong)).status == 429


async def test_one_account_from_many_addresses_and_many_accounts_from_one():
    bus = MemoryBus()
    await bus.open()
    throttle = LoginThrottle(bus.state, max_failures=2, window=60.0)
    # one account, a new address each time: the per-address key never fills
    for i in range(2 * ACCOUNT_FACTOR):
        assert await throttle.retry_after(f"10.0.0.{i}", "s", "a@x") == 0
        await throttle.failed(f"10.0.0.{i}", "s", "a@x")
    # past the account's limit: back-off (issue 13, hole 5), one evaluated attempt per
    # delay whatever the address, not a lockout
    assert await throttle.retry_after("10.0.9.9", "s", "a@x") == 0
    assert await throttle.retry_after("10.0.9.8", "s", "a@x") == 1.0
    assert await throttle.retry_after("10.0.9.9", "s", "b@x") == 0  # other accounts fine
    # one address, a new account each time (spraying)
    for i in range(2 * ADDRESS_FACTOR):
        await throttle.failed("10.1.0.1", "s", f"user{i}@x")
    assert await throttle.retry_after("10.1.0.1", "s", "fresh@x") == 0
    assert await throttle.retry_after("10.1.0.1", "s", "fresh2@x") > 0
    assert await throttle.retry_after("10.1.0.2", "s", "fresh3@x") == 0
    await bus.close()
