"""Two workers sharing one bus and one storage (as worker processes share Redis and a
database): a visitor on one and agents on the other chat, because every delivery goes
through the bus and each worker fans it out to the connections it holds."""

from __future__ import annotations

from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.bus_memory import MemoryBus
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, login, make_kernel, visitor_session, ws_peer


class Shared:
    """Offers the same bus and storage instance to every kernel it is registered in."""

    def __init__(self) -> None:
        self.bus, self.storage = MemoryBus(), MemoryStorage()

    @hookimpl
    def kefu_bus_backends(self):
        return {"shared": lambda kernel: self.bus}

    @hookimpl
    def kefu_storage_backends(self):
        return {"shared": lambda kernel: self.storage}


async def test_chat_across_two_workers(aiohttp_client, tmp_path):
    shared = Shared()

    async def worker():  # one data dir, as workers of one install: the same secret
        kernel = make_kernel(
            tmp_path, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return await aiohttp_client(create_app(kernel))

    one, two = await worker(), await worker()
    site = await add_site(app_kernel(one.app))
    token = (await visitor_session(one, site.site.widget_key))["token"]
    tab_one, tab_two = await ws_peer(one, token), await ws_peer(two, token)
    agent = await ws_peer(two, await login(two, site.site.id, site.agent.email))
    await tab_one.send(op="start")
    conversation_id = (await tab_one.expect("started"))["conversation"]["id"]
    assert (await agent.expect("conversation"))["conversation"]["id"] == conversation_id
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")

    await tab_one.send(op="send", conversation_id=conversation_id, cid="v1", text="from one")
    assert (await tab_one.expect("ack"))["seq"] == 1
    assert (await agent.expect("message"))["text"] == "from one"
    assert (await tab_two.expect("message"))["text"] == "from one"  # the visitor's other tab
    await agent.send(op="send", conversation_id=conversation_id, cid="a1", text="from two")
    assert (await agent.expect("ack"))["seq"] == 2
    for tab in (tab_one, tab_two):
        assert (await tab.expect("message"))["seq"] == 2
    await agent.send(op="typing", conversation_id=conversation_id)
    assert (await tab_one.expect("typing"))["from"]["kind"] == "agent"
    assert await agent.quiet(0.05) == []  # its own frames do not come back through the bus
