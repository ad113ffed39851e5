"""Two kernels, each with its own Redis bus (two nodes on the local Redis), sharing one
storage: what the gateway, the metrics and the status page do across nodes (issue 12).

- a frame is published only to the nodes that hold its recipients (addressed fan-out):
  a chat on node one is never handed to node two;
- a visitor on one node and its agent on the other chat both ways;
- ``/metrics`` on either node answers both nodes' series, labelled by worker;
- the admin status page adds up both nodes' connections.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiohttp.test_utils import TestServer, unused_port
from prometheus_client.parser import text_string_to_metric_families

from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.storage_memory import MemoryStorage
from tests.chat_support import add_site, app_kernel, login, make_kernel, visitor_session, ws_peer
from tests.conftest import service_unavailable
from tests.test_web import signed_in

REDIS_URL = "redis://127.0.0.1:6379/0"


class SharedStorage:
    def __init__(self) -> None:
        self.storage = MemoryStorage()

    @hookimpl
    def kefu_storage_backends(self):
        return {"shared": lambda kernel: self.storage}


@pytest.fixture
async def nodes(aiohttp_client, tmp_path):
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        await admin.ping()
    except Exception as exc:
        await admin.aclose()
        service_unavailable(f"Redis at {REDIS_URL} ({exc})")
    prefix = f"kefu-test:{secrets.token_hex(4)}:"
    shared = SharedStorage()
    extra = (
        f'[bus_redis]\nurl = "{REDIS_URL}"\n'
        f'prefix = "{prefix}"\nblock_ms = 200\n[metrics]\ncluster_interval_s = 0.5\n'
        "[web]\ncluster_interval_s = 0.2\n"
    )
    clients = []
    for _ in range(2):  # one data dir: the same secret, as nodes sharing a secret
        kernel = make_kernel(
            tmp_path, extra, extra_plugins=(("shared", shared),), storage="shared", bus="redis"
        )
        port = unused_port()
        kernel.listen = ("127.0.0.1", port)  # as `kefu run` sets it: names the worker
        clients.append(await aiohttp_client(TestServer(create_app(kernel), port=port)))
    yield clients
    keys = [k async for k in admin.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


def envelopes_seen(client) -> int:
    return app_kernel(client.app).existing_plugin_state("gateway").stats.envelopes_in


async def until(check, within: float = 5.0) -> None:
    """Poll ``check`` until true: other nodes' figures arrive on their own schedule."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (no event to wait for across processes)
            await asyncio.sleep(0.05)


async def test_frames_go_only_to_the_nodes_holding_their_recipients(nodes):
    one, two = nodes
    kernel = app_kernel(one.app)
    assert kernel.bus.node_id != app_kernel(two.app).bus.node_id
    site = await add_site(kernel)
    token = (await visitor_session(one, site.site.widget_key))["token"]
    visitor = await ws_peer(one, token)
    agent_here = await ws_peer(one, await login(one, site.site.id, site.agent.email))
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    await agent_here.send(op="watch", conversation_id=conversation_id)
    await agent_here.expect("watching")
    before = envelopes_seen(two)
    for i in range(20):
        await visitor.send(op="send", conversation_id=conversation_id, cid=f"h{i}", text="hi")
        await visitor.expect("ack", cid=f"h{i}")
        assert (await agent_here.expect("message", cid=f"h{i}"))["seq"] == i + 1
    await visitor.send(op="ping", ref="m")
    await visitor.expect("pong")
    assert envelopes_seen(two) == before  # nobody there: node two decoded none of them

    # now an agent on node two watches: from then on node two gets the conversation's frames
    agent_there = await ws_peer(two, await login(two, site.site.id, site.admin.email))
    await agent_there.send(op="watch", conversation_id=conversation_id)
    await agent_there.expect("watching")
    await visitor.send(op="send", conversation_id=conversation_id, cid="x", text="both?")
    await visitor.expect("ack", cid="x")
    assert (await agent_there.expect("message", cid="x"))["seq"] == 21
    await agent_there.send(op="send", conversation_id=conversation_id, cid="y", text="yes")
    assert (await agent_there.expect("ack", cid="y"))["seq"] == 22
    assert (await visitor.expect("message", cid="y"))["sender"]["kind"] == "agent"
    assert (await agent_here.expect("message", cid="y"))["seq"] == 22


async def test_metrics_and_status_page_cover_both_nodes(nodes):
    one, two = nodes
    kernel = app_kernel(one.app)
    site = await add_site(kernel)
    for client in (one, two, two):
        token = (await visitor_session(client, site.site.widget_key))["token"]
        await ws_peer(client, token)
    headers = await signed_in(one, site, site.admin.email)  # the page's session cookie

    async def status_sees_all() -> bool:
        resp = await one.get("/admin/status.json", headers=headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return body["connections"]["visitors"] == 3 and body["connections"]["workers"] == 2

    await until(status_sees_all)

    names = {app_kernel(c.app).worker_name for c in (one, two)}
    assert len(names) == 2

    async def metrics_cover_both() -> bool:
        text = await (await two.get("/metrics")).text()
        return all(f'worker="{name}"' in text for name in names)

    await until(metrics_cover_both)
    text = await (await two.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # a valid exposition
    frames = families["kefu_gateway_envelopes_in"]
    assert {s.labels["worker"] for s in frames.samples} == names  # one family, both workers
