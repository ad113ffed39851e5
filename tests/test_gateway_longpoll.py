"""The same chat over HTTP long-polling, mixed with WebSockets; sessions, limits, shedding."""

from __future__ import annotations

import asyncio

import pytest

from kefu.core.types import Principal
from kefu.core.web_app import create_app
from kefu.plugins.gateway.connection import Connection
from tests.chat_support import (
    add_site,
    app_kernel,
    connect,
    make_kernel,
    open_chat,
    poll_peer,
    visitor_session,
)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(make_kernel(tmp_path)))


async def _exchange(chat) -> None:
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="v", text="hi")
    assert (await chat.visitor.expect("ack"))["seq"] == 1
    assert (await chat.agent.expect("message"))["text"] == "hi"
    await chat.agent.send(op="typing", conversation_id=chat.conversation_id)
    assert (await chat.visitor.expect("typing"))["from"]["kind"] == "agent"
    await chat.agent.send(op="send", conversation_id=chat.conversation_id, cid="a", text="yo")
    assert (await chat.agent.expect("ack"))["seq"] == 2
    assert (await chat.visitor.expect("message"))["text"] == "yo"


@pytest.mark.parametrize(
    ("visitor_via", "agent_via"),
    [("longpoll", "longpoll"), ("longpoll", "ws"), ("ws", "longpoll")],
)
async def test_chat_over_long_poll_and_mixed(client, visitor_via, agent_via):
    await _exchange(await open_chat(client, visitor_via=visitor_via, agent_via=agent_via))


async def test_a_visitor_tab_on_each_transport_receives_everything(client):
    chat = await open_chat(client, visitor_via="ws", agent_via="ws")
    poll_tab = await poll_peer(client, chat.visitor_token)
    await chat.agent.send(op="send", conversation_id=chat.conversation_id, cid="x", text="both")
    assert (await chat.visitor.expect("message"))["cid"] == "x"
    assert (await poll_tab.expect("message"))["cid"] == "x"
    await poll_tab.send(op="send", conversation_id=chat.conversation_id, cid="y", text="from poll")
    assert (await poll_tab.expect("ack"))["seq"] == 2
    assert (await chat.visitor.expect("message"))["cid"] == "y"


async def test_open_takes_the_token_from_the_body_and_refuses_bad_ones(client):
    s = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, s.site.widget_key))["token"]
    resp = await client.post("/v1/poll/open", json={"token": token})
    assert resp.status == 200 and (await resp.json())["session"]
    for body in ({"token": token[:-3] + "AAA"}, {"token": 5}, {}):
        resp = await client.post("/v1/poll/open", json=body)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_token"


async def test_unknown_session_is_404(client):
    for method, path in (("GET", "recv"), ("POST", "send")):
        resp = await client.request(method, f"/v1/poll/{path}?session=nope")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "session_not_found"


async def test_recv_waits_at_most_the_timeout(client):
    chat = await open_chat(client, visitor_via="longpoll")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await chat.visitor.recv(0.2) == []
    assert 0.15 < loop.time() - started < 1.0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"op": "send", oops', "bad_json"),
        (b'{"op": "fly"}', "unknown_op"),
        (b'{"op": "send", "text": "x"}', "missing_field"),
        (b'{"op": "resume", "conversation_id": "c", "after_seq": "one"}', "invalid_field"),
        (b'[{"op": "ping"}, 7]', "bad_frame"),
    ],
)
async def test_bad_frames_get_error_frames_and_the_session_survives(client, body, code):
    chat = await open_chat(client, visitor_via="longpoll")
    await chat.visitor.send_raw(body)
    assert (await chat.visitor.expect("error"))["code"] == code
    await chat.visitor.send(op="ping", ref="alive")
    assert await chat.visitor.expect("pong", ref="alive")
    assert await chat.agent.quiet(0.05) == []


async def test_oversized_frames(client):
    chat = await open_chat(client, visitor_via="longpoll")
    big = b'{"op": "ping", "pad": "' + b"x" * (70 * 1024) + b'"}'
    await chat.visitor.send_raw(big)  # one frame over the limit: error frame, session stays
    assert (await chat.visitor.expect("error"))["code"] == "frame_too_large"
    await chat.visitor.send_raw(b"[" + b",".join([b'{"op": "ping"}', big]) + b"]")
    assert (await chat.visitor.expect("pong")) and (await chat.visitor.expect("error"))
    # found by the frame fuzzer: a batch over the limit holding a frame nested deeper than
    # orjson writes (it reads up to 1,024 levels, writes 254) was a 500
    deep = b'{"op": "ping", "x": ' + b"[" * 500 + b"1" + b"]" * 500 + b"}"
    await chat.visitor.send_raw(b"[" + b",".join([b'{"op": "ping"}', deep, big]) + b"]")
    assert await chat.visitor.expect("pong")
    # the deep frame is refused for its depth (hole 7), the big one for its size: no 500
    codes = {(await chat.visitor.expect("error"))["code"] for _ in range(2)}
    assert codes == {"bad_frame", "frame_too_large"}, codes
    resp = await client.post(
        f"/v1/poll/send?session={chat.visitor.session}", data=b"x" * (600 * 1024)
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "frame_too_large"


async def test_other_site_and_other_visitor_conversations_are_refused(client):
    chat = await open_chat(client, visitor_via="longpoll", agent_via="longpoll")
    other = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=other.conversation_id, cid="x", text="x")
    assert (await chat.visitor.expect("error"))["code"] == "conversation_not_found"
    intruder = await poll_peer(
        client, (await visitor_session(client, chat.site.site.widget_key))["token"]
    )
    await intruder.send(op="resume", conversation_id=chat.conversation_id)
    assert (await intruder.expect("error"))["code"] == "forbidden"
    assert await chat.agent.quiet(0.05) == [] and await other.agent.quiet(0.05) == []


async def test_flood_over_long_poll(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[gateway]\nburst = 5\nrate = 5\nflood_close_after = 20\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client, visitor_via="longpoll")
    await chat.visitor.send_raw(b"[" + b",".join([b'{"op": "ping"}'] * 10) + b"]")
    assert (await chat.visitor.expect("error"))["code"] == "rate_limited"
    await chat.visitor.send_raw(b"[" + b",".join([b'{"op": "ping"}'] * 30) + b"]")
    with pytest.raises(ConnectionError):
        await chat.visitor.quiet(0.1)
    assert chat.visitor.closed_with == "flood"
    await _exchange_still_works(chat)


async def _exchange_still_works(chat) -> None:
    await chat.agent.send(op="ping", ref="ok")
    assert (await chat.agent.expect("pong"))["ref"] == "ok"


async def test_slow_consumer_is_dropped_after_its_ephemeral_frames(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[gateway]\noutbox_frames = 16\nrate = 1000\nburst = 1000\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client, visitor_via="longpoll")  # the visitor stops polling now
    conversation = chat.conversation_id
    for i in range(20):
        await chat.agent.send(op="send", conversation_id=conversation, cid=f"m{i}", text=str(i))
        await chat.agent.expect("ack")
        if i % 5 == 0:
            await chat.agent.send(op="typing", conversation_id=conversation, state=bool(i % 2))
    with pytest.raises(ConnectionError):
        await chat.visitor.recv(0.1)
    assert chat.visitor.closed_with == "slow_consumer"
    # the client recovers: a new session and a resume bring back every message, in order
    back = await connect(client, chat.visitor_token, "longpoll")
    seqs, last, rounds = [], 0, 0
    while True:  # what a client does: resume from the last seq until nothing more
        await back.send(op="resume", conversation_id=conversation, after_seq=last)
        resumed = await back.expect("resumed")
        seqs += [f["seq"] for f in back.frames if f["op"] == "message"]
        back.frames.clear()
        last, rounds = resumed["last_seq"], rounds + 1
        if not resumed["more"]:
            break
    assert seqs == list(range(1, 21)) and rounds == 2  # the outbox bounds each replay


async def test_idle_sessions_expire(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, "[transport_longpoll]\nidle_timeout = 0.2\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client, visitor_via="longpoll")
    await asyncio.sleep(0.5)
    with pytest.raises(ConnectionError):
        await chat.visitor.recv(0.1)
    assert chat.visitor.closed_with == "session_not_found"


def test_outbox_sheds_ephemerals_before_dropping_the_connection():
    conn = Connection(
        Principal("visitor", "v", "s"), "test", outbox_frames=4, shed_ephemeral_at=0.5
    )
    assert conn.push(b"m1") and conn.push(b"e1", ephemeral=True)
    assert not conn.push(b"e2", ephemeral=True)  # past half full: new ephemerals are shed
    assert conn.push(b"m2") and conn.push(b"m3")
    assert conn.push(b"m4")  # full: the queued ephemeral makes room
    assert conn.drain() == [b"m1", b"m2", b"m3", b"m4"] and conn.shed == 2
    for i in range(4):
        conn.push(b"%d" % i)
    assert not conn.push(b"overflow") and conn.closed and conn.close_reason == "slow_consumer"


async def test_body_rules_documented_for_clients(client):
    chat = await open_chat(client, visitor_via="longpoll")
    await chat.visitor.send_raw(b"[" + b",".join([b'{"op": "ping"}'] * 65) + b"]")
    assert (await chat.visitor.expect("error"))["code"] == "frame_too_large"
    assert await chat.visitor.quiet(0.1) == []  # refused whole: not one pong
    await chat.visitor.send(op="ping", ref="r" * 129)
    error = await chat.visitor.expect("error")
    assert (error["code"], error["field"]) == ("invalid_field", "ref") and "ref" not in error
    await chat.visitor.send(op="ping", ref="r" * 128)
    assert await chat.visitor.expect("pong", ref="r" * 128)
    for timeout in ("nan", "inf", "soon"):
        resp = await client.get(f"/v1/poll/recv?session={chat.visitor.session}&timeout={timeout}")
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_field"


async def test_a_session_closed_by_the_client(client):
    chat = await open_chat(client, visitor_via="longpoll")
    waiting = asyncio.ensure_future(chat.visitor.recv(10.0))
    poll = app_kernel(client.app).existing_plugin_state("transport_longpoll")
    for _ in range(500):  # until the recv is parked
        if poll.sessions[chat.visitor.session].polling:
            break
        await asyncio.sleep(0.01)
    await chat.visitor.close()
    with pytest.raises(ConnectionError, match="recv: 410 client_closed"):
        await waiting
    with pytest.raises(ConnectionError, match="recv: 404 session_not_found"):
        await chat.visitor.recv(0.1)
    assert (await client.post("/v1/poll/close?session=nope")).status == 200
