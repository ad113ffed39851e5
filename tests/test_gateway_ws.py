"""Live chat over real WebSockets: delivery, tabs, resume, idempotency and every bad input."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import WSMsgType

from kefu.core.domain import RESOLVED
from kefu.core.types import PipelineReject, Processor
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.auth import tokens
from tests.chat_support import (
    add_site,
    app_kernel,
    login,
    make_kernel,
    open_chat,
    visitor_session,
    ws_peer,
)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(make_kernel(tmp_path)))


@pytest.fixture
async def bystander(client):
    """A chat in another site that must notice nothing of what the test does."""
    chat = await open_chat(client)
    yield chat
    assert await chat.visitor.quiet(0.05) == []
    assert await chat.agent.quiet(0.05) == []
    await chat.visitor.send(op="ping", ref="still-there")
    assert (await chat.visitor.expect("pong"))["ref"] == "still-there"
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="b1", text="ok?")
    seq = (await chat.visitor.expect("ack"))["seq"]
    assert (await chat.agent.expect("message", cid="b1"))["seq"] == seq


async def test_visitor_and_agent_chat(client, bystander):
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="v1", text="hi")
    ack = await chat.visitor.expect("ack")
    assert ack == {"op": "ack", "cid": "v1", "seq": 1, "conversation_id": chat.conversation_id}
    got = await chat.agent.expect("message")
    assert got["seq"] == 1 and got["text"] == "hi"
    assert got["sender"] == {"kind": "visitor", "id": ack and got["sender"]["id"]}
    await chat.agent.send(op="typing", conversation_id=chat.conversation_id)
    typing = await chat.visitor.expect("typing")
    assert typing["from"]["kind"] == "agent" and typing["state"] is True
    await chat.agent.send(
        op="send", conversation_id=chat.conversation_id, cid="a1", text="hello!", ref=7
    )
    assert (await chat.agent.expect("ack"))["seq"] == 2
    reply = await chat.visitor.expect("message")
    assert (reply["seq"], reply["text"], reply["sender"]["kind"]) == (2, "hello!", "agent")
    await chat.visitor.send(op="read", conversation_id=chat.conversation_id, seq=2)
    receipt = await chat.agent.expect("read")
    assert receipt["seq"] == 2 and receipt["by"]["kind"] == "visitor"
    assert await chat.visitor.quiet(0.05) == []  # no echo of its own message or receipt


async def test_every_tab_of_the_visitor_and_every_watching_agent_receives(client):
    chat = await open_chat(client)
    tab2 = await ws_peer(client, chat.visitor_token)
    second_agent = await ws_peer(
        client, await login(client, chat.site.site.id, chat.site.admin.email)
    )
    await second_agent.send(op="resume", conversation_id=chat.conversation_id, after_seq=0)
    await second_agent.expect("resumed")
    idle_agent = await ws_peer(client, chat.agent_token)  # connected, not watching
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="c1", text="one")
    await chat.visitor.expect("ack")
    for peer in (tab2, chat.agent, second_agent):
        assert (await peer.expect("message"))["cid"] == "c1"
    await chat.agent.send(op="send", conversation_id=chat.conversation_id, cid="c2", text="two")
    for peer in (chat.visitor, tab2, second_agent):
        assert (await peer.expect("message"))["cid"] == "c2"
    assert await idle_agent.quiet(0.1) == []
    assert await chat.visitor.quiet(0.05) == []


async def test_agents_hear_of_new_conversations_in_their_site_only(client):
    kernel = app_kernel(client.app)
    a, b = await add_site(kernel), await add_site(kernel)
    agent_a = await ws_peer(client, await login(client, a.site.id, a.agent.email))
    agent_b = await ws_peer(client, await login(client, b.site.id, b.agent.email))
    visitor = await ws_peer(client, (await visitor_session(client, a.site.widget_key))["token"])
    await visitor.send(op="start", ref="s")
    started = await visitor.expect("started", ref="s")
    assert started["created"] is True and started["conversation"]["site_id"] == a.site.id
    notice = await agent_a.expect("conversation")
    assert notice["conversation"]["id"] == started["conversation"]["id"]
    assert await agent_b.quiet(0.1) == []
    await visitor.send(op="start")
    again = await visitor.expect("started")  # the open conversation, not a new one
    assert again["created"] is False and again["conversation"]["id"] == notice["conversation"]["id"]


async def test_offline_side_gets_everything_on_resume(client):
    chat = await open_chat(client)
    await chat.agent.close()
    for i in range(3):
        await chat.visitor.send(
            op="send", conversation_id=chat.conversation_id, cid=f"m{i}", text=f"{i}"
        )
        await chat.visitor.expect("ack")
    await chat.visitor.close()
    agent = await ws_peer(client, chat.agent_token)
    await agent.send(op="resume", conversation_id=chat.conversation_id, after_seq=1)
    replay = [await agent.expect("message") for _ in range(2)]
    assert [m["seq"] for m in replay] == [2, 3]
    resumed = await agent.expect("resumed")
    assert (resumed["replayed"], resumed["last_seq"], resumed["more"]) == (2, 3, False)
    await agent.send(op="send", conversation_id=chat.conversation_id, cid="late", text="back")
    await agent.expect("ack")
    # the visitor comes back (same token), finds its conversation and what it missed
    session = await visitor_session(client, chat.site.site.widget_key, token=chat.visitor_token)
    visitor = await ws_peer(client, session["token"])
    await visitor.send(op="start")
    started = await visitor.expect("started")
    assert started["conversation"]["id"] == chat.conversation_id
    assert started["conversation"]["last_seq"] == 4
    await visitor.send(op="resume", conversation_id=chat.conversation_id, after_seq=3)
    assert (await visitor.expect("message"))["cid"] == "late"
    assert (await visitor.expect("resumed"))["last_seq"] == 4


async def test_resume_is_paged_by_replay_max(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_kernel(tmp_path, "[gateway]\nreplay_max = 2\n")))
    chat = await open_chat(client)
    for i in range(3):
        await chat.visitor.send(
            op="send", conversation_id=chat.conversation_id, cid=f"p{i}", text="x"
        )
        await chat.visitor.expect("ack")
    await chat.visitor.send(op="resume", conversation_id=chat.conversation_id)
    first = await chat.visitor.expect("resumed")
    assert (first["replayed"], first["last_seq"], first["more"]) == (2, 2, True)
    await chat.visitor.send(op="resume", conversation_id=chat.conversation_id, after_seq=2)
    second = await chat.visitor.expect("resumed")
    assert (second["replayed"], second["last_seq"], second["more"]) == (1, 3, False)


async def test_resent_cid_is_stored_once_and_acked_with_the_same_seq(client):
    chat = await open_chat(client)
    frame = dict(op="send", conversation_id=chat.conversation_id, cid="same", text="once")
    await chat.visitor.send(**frame)
    first = await chat.visitor.expect("ack")
    await chat.visitor.send(**frame)
    second = await chat.visitor.expect("ack")
    assert second["seq"] == first["seq"] and second["duplicate"] is True
    assert (await chat.agent.expect("message"))["cid"] == "same"
    assert await chat.agent.quiet(0.1) == []  # not re-broadcast
    stored = await app_kernel(client.app).storage.list_messages(
        chat.site.site.id, chat.conversation_id
    )
    assert [m.cid for m in stored] == ["same"]


async def test_events_report_stored_messages_and_started_conversations(aiohttp_client, tmp_path):
    seen = []

    class Listener:
        @hookimpl
        def kefu_event(self, kernel, event):
            seen.append(event)

    kernel = make_kernel(tmp_path, extra_plugins=(("listener", Listener()),))
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="e", text="x")
    await chat.visitor.expect("ack")
    await asyncio.sleep(0.01)
    by_type = {e.type: e for e in seen}
    assert by_type["conversation.started"].data["conversation_id"] == chat.conversation_id
    stored = by_type["message.stored"]
    assert stored.site_id == chat.site.site.id and stored.data["seq"] == 1
    assert stored.data["transport"] == "ws" and 0 <= stored.data["ack_ms"] < 1000


async def test_pipeline_rejection_stores_nothing(aiohttp_client, tmp_path):
    class Guard:
        @hookimpl
        def kefu_pipeline_processors(self, kernel):
            async def refuse(message, context):
                if "spam" in message.text:
                    raise PipelineReject("spam", "no spam please")
                message.meta["checked"] = True
                return message

            return [Processor("test.guard", 10, refuse)]

    client = await aiohttp_client(
        create_app(make_kernel(tmp_path, extra_plugins=(("g", Guard()),)))
    )
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="x", text="spam!")
    error = await chat.visitor.expect("error")
    assert (error["code"], error["reason"], error["cid"]) == ("rejected", "spam", "x")
    assert await chat.agent.quiet(0.1) == []
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="y", text="fine")
    assert (await chat.visitor.expect("ack"))["seq"] == 1
    assert (await chat.agent.expect("message"))["meta"] == {"checked": True}


async def test_a_processor_sees_only_the_messages_it_wants(aiohttp_client, tmp_path):
    seen = []

    class Picky:
        @hookimpl
        def kefu_pipeline_processors(self, kernel):
            async def tag(message, context):
                seen.append((context["principal"].kind, message.cid))
                message.meta["tagged"] = True
                return message

            def wants(message):
                return message.text.startswith("#")

            async def after(message, context):  # sees what the first step made of it
                seen.append(("after", message.cid))
                return message

            return [
                Processor("test.tag", 10, tag, wants=wants),
                Processor("test.after", 20, after, wants=lambda m: m.meta.get("tagged", False)),
            ]

    client = await aiohttp_client(
        create_app(make_kernel(tmp_path, extra_plugins=(("p", Picky()),)))
    )
    chat = await open_chat(client)
    for cid, text in (("a", "plain"), ("b", "#tagged"), ("c", "plain again")):
        await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid=cid, text=text)
        assert (await chat.visitor.expect("ack"))["cid"] == cid
    metas = [(await chat.agent.expect("message"))["meta"] for _ in range(3)]
    assert metas == [{}, {"tagged": True}, {}]
    assert seen == [("visitor", "b"), ("after", "b")]


async def test_agents_share_presence_within_their_site(client):
    chat = await open_chat(client)
    other = await ws_peer(client, await login(client, chat.site.site.id, chat.site.admin.email))
    await chat.agent.send(op="presence", status="away")
    assert (await chat.agent.expect("presence_ok"))["status"] == "away"
    assert (await other.expect("presence"))["status"] == "away"
    await chat.visitor.send(op="presence", status="online")
    assert (await chat.visitor.expect("error"))["code"] == "forbidden"


# -- bad input: each gets its documented error; the connection survives where it should ----


async def _survives(peer) -> None:
    await peer.send(op="ping", ref="alive")
    assert (await peer.expect("pong"))["ref"] == "alive"


async def test_malformed_json(client, bystander):
    chat = await open_chat(client)
    await chat.visitor.ws.send_str('{"op": "send", oops')
    assert (await chat.visitor.expect("error"))["code"] == "bad_json"
    await _survives(chat.visitor)


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', '{"no_op": 1}', '{"op": 5}'])
async def test_not_a_frame(client, bystander, raw):
    chat = await open_chat(client)
    await chat.visitor.ws.send_str(raw)
    assert (await chat.visitor.expect("error"))["code"] == "bad_frame"
    await _survives(chat.visitor)


async def test_unknown_op(client, bystander):
    chat = await open_chat(client)
    await chat.visitor.send(op="teleport", ref="t")
    error = await chat.visitor.expect("error")
    assert (error["code"], error["ref"]) == ("unknown_op", "t")
    await _survives(chat.visitor)


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"op": "send", "text": "no ids"}, "missing_field", "conversation_id"),
        ({"op": "send", "conversation_id": "C", "text": "x"}, "missing_field", "cid"),
        ({"op": "send", "conversation_id": "C", "cid": 5, "text": "x"}, "invalid_field", "cid"),
        ({"op": "send", "conversation_id": "C", "cid": "a", "text": 5}, "invalid_field", "text"),
        (
            {"op": "send", "conversation_id": "C", "cid": "a", "type": "video"},
            "invalid_field",
            "type",
        ),
        (
            {"op": "send", "conversation_id": "C", "cid": "a", "type": "image"},
            "missing_field",
            "attachment",
        ),
        ({"op": "resume", "conversation_id": "C", "after_seq": "x"}, "invalid_field", "after_seq"),
        ({"op": "resume", "conversation_id": "C", "after_seq": -1}, "invalid_field", "after_seq"),
        ({"op": "read", "conversation_id": "C"}, "missing_field", "seq"),
        ({"op": "typing", "conversation_id": "C", "state": "yes"}, "invalid_field", "state"),
    ],
)
async def test_missing_or_wrong_typed_fields(client, bystander, frame, code, field):
    chat = await open_chat(client)
    frame = {k: chat.conversation_id if v == "C" else v for k, v in frame.items()}
    await chat.visitor.send(**frame)
    error = await chat.visitor.expect("error")
    assert (error["code"], error["field"]) == (code, field)
    await _survives(chat.visitor)
    assert await chat.agent.quiet(0.05) == []


async def test_frame_over_the_limit_is_refused_and_the_connection_stays(client, bystander):
    chat = await open_chat(client)
    big = "x" * (70 * 1024)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="big", text=big)
    assert (await chat.visitor.expect("error"))["code"] == "frame_too_large"
    await _survives(chat.visitor)
    assert await chat.agent.quiet(0.05) == []


async def test_frame_over_the_socket_cap_closes_only_that_connection(client, bystander):
    chat = await open_chat(client)
    await chat.visitor.ws.send_str("x" * (200 * 1024))
    msg = await chat.visitor.ws.receive()
    assert msg.type == WSMsgType.CLOSE and msg.data == 1009
    await _survives(chat.agent)


async def test_text_longer_than_allowed(client):
    chat = await open_chat(client)
    await chat.visitor.send(
        op="send", conversation_id=chat.conversation_id, cid="l", text="x" * 9000
    )
    error = await chat.visitor.expect("error")
    assert (error["code"], error["field"]) == ("invalid_field", "text")


@pytest.mark.parametrize("kind", ["garbage", "expired", "other_install", "missing"])
async def test_invalid_or_expired_token_is_refused(client, bystander, kind):
    site = bystander.site.site.id
    token = {
        "garbage": "v1.abc.def",
        "expired": tokens.issue(
            tokens.kernel_secret(app_kernel(client.app)),
            kind="visitor",
            site_id=site,
            subject="v",
            ttl=10,
            now=0,
        )[0],
        "other_install": tokens.issue(b"x" * 48, kind="visitor", site_id=site, subject="v", ttl=60)[
            0
        ],
        "missing": "",
    }[kind]
    ws = await client.ws_connect(f"/v1/ws?token={token}")
    frame = orjson.loads((await ws.receive()).data)
    assert (frame["op"], frame["code"], frame["fatal"]) == ("error", "invalid_token", True)
    closing = await ws.receive()
    assert closing.type == WSMsgType.CLOSE and closing.data == 4401


async def test_another_sites_conversation_is_not_found(client, bystander):
    chat = await open_chat(client)
    for peer in (chat.visitor, chat.agent):
        await peer.send(op="send", conversation_id=bystander.conversation_id, cid="x", text="hi")
        assert (await peer.expect("error"))["code"] == "conversation_not_found"
        await peer.send(op="resume", conversation_id=bystander.conversation_id)
        assert (await peer.expect("error"))["code"] == "conversation_not_found"
        await _survives(peer)


async def test_visitor_cannot_address_another_visitors_conversation(client, bystander):
    chat = await open_chat(client)
    intruder = await ws_peer(
        client, (await visitor_session(client, chat.site.site.widget_key))["token"]
    )
    for frame in (
        {"op": "send", "cid": "x", "text": "hi"},
        {"op": "resume", "after_seq": 0},
        {"op": "watch"},
        {"op": "typing"},
        {"op": "read", "seq": 1},
    ):
        await intruder.send(conversation_id=chat.conversation_id, **frame)
        assert (await intruder.expect("error"))["code"] == "forbidden", frame
    await _survives(intruder)
    assert await chat.visitor.quiet(0.05) == []
    assert await chat.agent.quiet(0.05) == []


async def test_agents_do_not_start_conversations(client):
    chat = await open_chat(client)
    await chat.agent.send(op="start")
    assert (await chat.agent.expect("error"))["code"] == "forbidden"


async def test_resolved_conversation_refuses_messages(client):
    chat = await open_chat(client)
    kernel = app_kernel(client.app)
    conversation = await kernel.storage.get_conversation(chat.site.site.id, chat.conversation_id)
    conversation.state = RESOLVED
    assert await kernel.storage.update_conversation(conversation)
    # whoever resolves announces it; the gateway drops its cached copy on the event
    await kernel.emit("conversation.resolved", chat.site.site.id, conversation_id=conversation.id)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="r", text="hi")
    assert (await chat.visitor.expect("error"))["code"] == "conversation_resolved"
    await chat.visitor.send(op="start")
    started = await chat.visitor.expect("started")
    assert started["created"] is True and started["conversation"]["id"] != chat.conversation_id


async def test_flood_is_rate_limited_and_the_connection_survives(client, bystander):
    chat = await open_chat(client)
    for i in range(80):
        await chat.visitor.send(op="ping", ref=i)
    assert (await chat.visitor.expect("error"))["code"] == "rate_limited"
    pongs = [f for f in await chat.visitor.quiet(0.2) if f["op"] == "pong"]
    assert 35 <= len(pongs) + 1 <= 60  # the burst (and a little refill), not all 80
    await asyncio.sleep(0.2)
    await _survives(chat.visitor)


async def test_sustained_flood_closes_the_connection(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[gateway]\nburst = 5\nrate = 5\nflood_close_after = 30\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    for i in range(60):
        if chat.visitor.ws.closed:
            break
        await chat.visitor.send(op="ping", ref=i)
    frames = []
    while True:
        msg = await chat.visitor.ws.receive()
        if msg.type != WSMsgType.TEXT:
            break
        frames.append(orjson.loads(msg.data))
    assert msg.type == WSMsgType.CLOSE and msg.data == 4429
    assert frames[-1]["code"] == "flood" and frames[-1]["fatal"] is True
    await _survives(chat.agent)


async def test_changes_without_an_event_show_after_the_cache_ttl(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[gateway]\nconversation_cache_ttl = 0.2\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="1", text="a")
    await chat.visitor.expect("ack")
    conversation = await kernel.storage.get_conversation(chat.site.site.id, chat.conversation_id)
    conversation.state = RESOLVED
    assert await kernel.storage.update_conversation(conversation)  # e.g. by another process
    await asyncio.sleep(0.25)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="2", text="b")
    assert (await chat.visitor.expect("error"))["code"] == "conversation_resolved"
