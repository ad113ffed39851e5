"""Catch-up reads with addressed fan-out (``Gateway.catch_up``) never send a message twice.

A connection that starts following a conversation has it read again shortly after, for
what a process with a stale directory published only to others. Two ways that read used
to send a second copy (the two-node long-poll test saw duplicates in about 2 runs of 10):

- a live copy still on the bus while the last read ran arrived after it (the noted seqs
  were forgotten with the read);
- the connection's own send, stored but not yet acknowledged, was found by the read and
  sent back to it, then acknowledged too.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from kefu.core.domain import Message
from kefu.core.web_app import create_app
from kefu.plugins.gateway import service as gateway_service
from kefu.plugins.gateway.frames import message_frame
from tests.chat_support import add_site, app_kernel, login, make_kernel, visitor_session, ws_peer

ADDRESSED = '[gateway]\nfanout = "addressed"\n'
READS = (0.05, 0.15)  # the catch-up delays, shortened


@pytest.fixture
async def chat(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setattr(gateway_service, "CATCH_UP_DELAYS_S", READS)
    client = await aiohttp_client(create_app(make_kernel(tmp_path, ADDRESSED)))
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    visitor = await ws_peer(client, (await visitor_session(client, site.site.widget_key))["token"])
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    agent = await ws_peer(client, await login(client, site.site.id, site.agent.email))
    return kernel, site, visitor, agent, conversation_id


def messages(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames if f.get("op") == "message"]


async def test_a_live_copy_arriving_after_the_last_read_is_dropped(chat):
    kernel, site, visitor, agent, conversation_id = chat
    gateway = kernel.existing_plugin_state("gateway")
    assert gateway.directory is not None
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")
    # stored by another process whose directory did not know of this agent yet: no copy
    # was published here; the catch-up reads it
    stored, _ = await kernel.storage.append_message(
        Message(site.site.id, conversation_id, "v-other", "visitor", "someone", text="hi")
    )
    assert (await agent.expect("message", within=2))["seq"] == stored.seq
    await asyncio.sleep(READS[-1])  # the last read is over
    # ... and the copy that process published to this one after all arrives now
    conversation = await kernel.storage.get_conversation(site.site.id, conversation_id)
    frame = orjson.dumps(message_frame(stored))
    await gateway.fan_conversation(conversation, frame, "message", seq=stored.seq)
    assert messages(await agent.quiet(0.2)) == []
    # a later message still comes live, once
    await visitor.send(op="send", conversation_id=conversation_id, cid="v2", text="more")
    await visitor.expect("ack")
    assert messages(await agent.quiet(0.2)) == [stored.seq + 1]
    # unwatching forgets the read; a conversation followed again is read again
    await agent.send(op="unwatch", conversation_id=conversation_id)
    await agent.expect("unwatched")
    assert not (agent_conn(gateway).caught_up or {}).get(conversation_id)


async def test_its_own_send_read_before_its_ack_comes_back_once(chat):
    kernel, _site, visitor, agent, conversation_id = chat
    storage = kernel.storage
    append = storage.append_message

    async def slow_answer(message):  # stored at once, confirmed after both reads ran
        result = await append(message)
        await asyncio.sleep(READS[-1] + 0.1)
        return result

    storage.append_message = slow_answer
    try:
        await agent.send(op="watch", conversation_id=conversation_id)
        await agent.expect("watching")
        await agent.send(op="send", conversation_id=conversation_id, cid="a1", text="hello")
        ack = await agent.expect("ack", within=3)
    finally:
        storage.append_message = append
    frames = await agent.quiet(0.2)
    assert messages(agent.frames + frames) == [], frames  # the ack only, not a copy too
    assert (await visitor.expect("message", within=2))["seq"] == ack["seq"]


def agent_conn(gateway):
    (conn,) = [c for c in gateway.registry if c.principal.kind == "agent"]
    return conn
