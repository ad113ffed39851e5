"""The one store-and-deliver path and the gateway's inbound side (issue 11).

- every producer (here: a plugin delivering a bot message) goes through the pipeline,
  the durable store, the fan-out and ``message.stored``;
- frames are charged to the rate limit when they arrive, not when a slow store lets
  them be processed;
- the conversation cache is invalidated in every worker sharing the bus;
- ``frame_too_large`` echoes ``ref``; a ``ref`` too long to echo is refused;
- an agent's presence is not echoed to its own other connections.
"""

from __future__ import annotations

import asyncio

import orjson

from kefu.core.domain import Message
from kefu.core.types import Processor
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from tests.chat_support import app_kernel, login, make_kernel, open_chat, ws_peer
from tests.test_gateway_cluster import Shared


async def test_a_plugins_message_takes_the_same_path_as_a_clients(aiohttp_client, tmp_path):
    seen, events = [], []

    class Watcher:
        @hookimpl
        def kefu_pipeline_processors(self, kernel):
            async def tag(message, context):
                seen.append((message.cid, context["principal"].kind))
                message.meta["tagged"] = True
                return message

            return [Processor("test.tag", 10, tag)]

        @hookimpl
        def kefu_event(self, kernel, event):
            if event.type == "message.stored":
                events.append(event.data)

    kernel = make_kernel(tmp_path, extra_plugins=(("watcher", Watcher()),))
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    conversation = await kernel.delivery.conversation(chat.site.site.id, chat.conversation_id)
    message = Message(chat.site.site.id, chat.conversation_id, "bot-1", "bot", "shop", text="hi")
    stored, created = await kernel.delivery.deliver(conversation, message, transport="bot")
    assert created and stored.seq == 1
    assert seen == [("bot-1", "bot")]
    for peer in (chat.visitor, chat.agent):
        got = await peer.expect("message", cid="bot-1")
        assert got["sender"] == {"kind": "bot", "id": "shop"} and got["meta"] == {"tagged": True}
    assert [(e["cid"], e["transport"], e["sender_kind"]) for e in events] == [
        ("bot-1", "bot", "bot")
    ]
    again = Message(chat.site.site.id, chat.conversation_id, "bot-1", "bot", "shop", text="hi")
    stored_again, created_again = await kernel.delivery.deliver(conversation, again)
    assert (stored_again.seq, created_again) == (1, False)
    assert len(events) == 1  # stored once, announced once
    assert [f for f in await chat.agent.quiet(0.1) if f.get("op") == "message"] == []


async def test_frames_under_the_rate_are_not_refused_behind_a_slow_store(aiohttp_client, tmp_path):
    """A stalled store used to let frames pile up unread and then charge them all at once."""
    release = asyncio.Event()

    class Stall:
        @hookimpl
        def kefu_pipeline_processors(self, kernel):
            async def stall(message, context):
                if message.cid == "slow":
                    await release.wait()
                return message

            return [Processor("test.stall", 10, stall)]

    kernel = make_kernel(
        tmp_path, "[gateway]\nrate = 5.0\nburst = 5\n", extra_plugins=(("stall", Stall()),)
    )
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="slow", text="0")
    for i in range(10):  # 4 frames/s against 5 allowed, while the first one is stuck
        await asyncio.sleep(0.25)
        await chat.visitor.send(
            op="send", conversation_id=chat.conversation_id, cid=f"c{i}", text="x"
        )
    release.set()
    acks = [await chat.visitor.expect("ack", within=5.0) for _ in range(11)]
    assert [a["cid"] for a in acks] == ["slow"] + [f"c{i}" for i in range(10)]
    assert [a["seq"] for a in acks] == list(range(1, 12))
    assert [f for f in await chat.visitor.quiet(0.1) if f.get("op") == "error"] == []


async def test_a_change_in_one_worker_reaches_the_cache_of_the_other(aiohttp_client, tmp_path):
    shared = Shared()

    async def worker():
        kernel = make_kernel(
            tmp_path, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        return await aiohttp_client(create_app(kernel))

    one, two = await worker(), await worker()
    chat = await open_chat(one)
    tab = await ws_peer(two, chat.visitor_token)
    await tab.send(op="send", conversation_id=chat.conversation_id, cid="1", text="a")
    assert (await tab.expect("ack"))["seq"] == 1  # worker two has the record cached now
    site_id, delivery_two = chat.site.site.id, app_kernel(two.app).delivery
    assert delivery_two.cached(site_id, chat.conversation_id).id == chat.conversation_id
    assert delivery_two.cached(site_id, "no-such-conversation") is None  # no storage read
    admin = await login(one, chat.site.site.id, chat.site.admin.email)
    resp = await one.post(
        f"/v1/conversations/{chat.conversation_id}/resolve",
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert resp.status == 200, await resp.text()
    await tab.expect("resolved")
    stale = delivery_two.cached(site_id, chat.conversation_id)
    assert stale is None or stale.state == "resolved"  # forgotten (or read again) by now
    await tab.send(op="send", conversation_id=chat.conversation_id, cid="2", text="b")
    assert (await tab.expect("error"))["code"] == "conversation_resolved"
    assert app_kernel(two.app).config.section("gateway").conversation_cache_ttl >= 60


async def test_frame_too_large_echoes_ref_and_long_refs_are_refused(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_kernel(tmp_path)))
    chat = await open_chat(client)
    big = orjson.dumps({"op": "ping", "ref": "r-big", "pad": "x" * 70_000})
    await chat.visitor.ws.send_bytes(big)
    error = await chat.visitor.expect("error")
    assert (error["code"], error["ref"]) == ("frame_too_large", "r-big")
    await chat.visitor.send(op="ping", ref="y" * 129)
    error = await chat.visitor.expect("error")
    assert (error["code"], error["field"]) == ("invalid_field", "ref")
    assert "ref" not in error
    await chat.visitor.send(op="ping", ref="y" * 128)
    assert (await chat.visitor.expect("pong"))["ref"] == "y" * 128


async def test_presence_is_not_echoed_to_the_senders_other_connections(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_kernel(tmp_path)))
    chat = await open_chat(client)
    own_tab = await ws_peer(client, chat.agent_token)
    colleague = await ws_peer(client, await login(client, chat.site.site.id, chat.site.admin.email))
    await chat.agent.send(op="presence", status="away")
    await chat.agent.expect("presence_ok")
    assert (await colleague.expect("presence"))["status"] == "away"
    await own_tab.send(op="ping", ref="marker")  # everything before the pong has arrived
    await own_tab.expect("pong")
    assert [f for f in own_tab.frames if f.get("op") == "presence"] == []


def test_the_outbox_is_bounded_in_bytes_too():
    from kefu.core.types import Principal
    from kefu.plugins.gateway.connection import Connection

    conn = Connection(Principal("visitor", "v", "s"), "ws", outbox_frames=1024, outbox_bytes=1000)
    assert conn.push(b"t" * 300, ephemeral=True)
    assert conn.push(b"m" * 600)
    assert conn.push(b"n" * 300)  # makes room by shedding the ephemeral frame
    assert conn.shed == 1 and conn.room_bytes == 100
    assert conn.drain() == [b"m" * 600, b"n" * 300] and conn.room_bytes == 1000
    assert conn.push(b"x" * 900) and not conn.push(b"y" * 200)  # nothing to shed: closed
    assert conn.closed and conn.close_reason == "slow_consumer"


def test_an_idle_connection_holds_no_outbox_and_no_watch_set():
    """About 1 KiB of an idle connection's ~20 (docs/performance.md): nothing until used."""
    from kefu.core.types import Principal
    from kefu.plugins.gateway.connection import NOTHING_WATCHED, Connection
    from kefu.plugins.gateway.registry import Registry

    conn = Connection(Principal("agent", "a", "s"), "ws")
    assert conn._outbox is None and conn.watching is NOTHING_WATCHED and conn.queued == 0
    assert conn.push(b"one") and conn.push(b"two") and conn.queued == 2
    assert conn.drain(1) == [b"one"] and conn._outbox is not None
    assert conn.drain() == [b"two"] and conn._outbox is None and conn.drain() == []
    registry = Registry()
    registry.add(conn)
    registry.watch(conn, "c1")
    registry.watch(conn, "c2")
    assert conn.watching == {"c1", "c2"} and registry.watchers("c1") == {conn}
    registry.unwatch(conn, "c1")
    registry.unwatch(conn, "c2")
    assert conn.watching is NOTHING_WATCHED and not registry.watchers("c2")
    registry.watch(conn, "c3")
    registry.remove(conn)
    assert conn.watching is NOTHING_WATCHED and not registry.watchers("c3")


async def test_a_resume_stops_at_a_quarter_of_the_outbox_bytes(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[gateway]\noutbox_bytes = 65536\nmax_text_chars = 8000\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    for i in range(12):  # ~8 KB each: 96 KB, more than the outbox holds
        await chat.agent.send(
            op="send", conversation_id=chat.conversation_id, cid=f"big{i}", text="x" * 7900
        )
        await chat.agent.expect("ack", cid=f"big{i}")
    late = await ws_peer(client, chat.visitor_token)
    await late.send(op="resume", conversation_id=chat.conversation_id, after_seq=0)
    resumed = await late.expect("resumed")
    assert resumed["more"] is True and 0 < resumed["replayed"] < 12
    got = [f["seq"] for f in late.frames if f.get("op") == "message"]
    assert got == list(range(1, resumed["last_seq"] + 1))
    await late.send(
        op="resume", conversation_id=chat.conversation_id, after_seq=resumed["last_seq"]
    )
    second = await late.expect("resumed")
    assert second["last_seq"] > resumed["last_seq"]  # the next page follows; never closed


async def test_each_steps_wants_is_asked_once_and_sees_the_earlier_steps_change(
    aiohttp_client, tmp_path
):
    asked: list[tuple[str, str]] = []

    class Steps:
        @hookimpl
        def kefu_pipeline_processors(self, kernel):
            async def shout(message, context):
                message.text = message.text.upper()
                return message

            async def mark(message, context):
                message.meta["loud"] = True
                return message

            def wants_shout(message):
                asked.append(("shout", message.text))
                return message.text.startswith("hey")

            def wants_mark(message):
                asked.append(("mark", message.text))
                return message.text.isupper()

            return [
                Processor("test.shout", 10, shout, wants_shout),
                Processor("test.mark", 20, mark, wants_mark),
            ]

    kernel = make_kernel(tmp_path, extra_plugins=(("steps", Steps()),))
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    site_id = chat.site.site.id
    conversation = await kernel.delivery.conversation(site_id, chat.conversation_id)
    loud = Message(site_id, chat.conversation_id, "c-1", "bot", "shop", text="hey there")
    stored, _ = await kernel.delivery.deliver(conversation, loud, transport="bot")
    assert (stored.text, stored.meta) == ("HEY THERE", {"loud": True})
    assert asked == [("shout", "hey there"), ("mark", "HEY THERE")]  # once each, in turn
    asked.clear()
    quiet = Message(site_id, chat.conversation_id, "c-2", "bot", "shop", text="fine")
    stored, _ = await kernel.delivery.deliver(conversation, quiet, transport="bot")
    assert (stored.text, stored.meta) == ("fine", {})
    assert asked == [("shout", "fine"), ("mark", "fine")]
