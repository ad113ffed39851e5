"""What the degradation levels do to the clients (issue 16; docs/degradation.md):

- level 1 stretches the intervals clients are told (``hello``/``pong`` ``heartbeat_s``, the
  long-poll ``recv_timeout``, the server's WebSocket pings) and serves smaller history
  pages, and the normal values come back when the level drops;
- level 2 switches the bot's enrichments off through ``kefu_degradation_features`` (the
  "did this help?" question after an article answer, the console's article suggestions,
  the classifier's embedding pass);
- the never-shed list (send, ack, storage, delivery to the agent and back) holds at every
  level, 0 to 3.

Real sockets (aiohttp's test server), real WebSocket and long-poll clients; every check
waits for a marker frame (``pong``, ``ack``, the message), never for silence.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import WSMsgType
from chat_support import (
    WsPeer,
    add_site,
    app_kernel,
    login,
    open_chat,
    poll_peer,
    visitor_session,
)
from test_degradation import client_for, config

from kefu.core.domain import BOT as BOT_STATE
from kefu.plugins.bot_intents import enrichments
from kefu.plugins.bot_intents import service_of as bot_of
from tests.routing_support import ROUTING, routing_client, site_of, visitor
from tests.test_bot_example import shop_config
from tests.test_bot_faq import SHOP
from tests.test_bot_flows import Actions
from tests.test_knowledge_base import ARTICLES, BOT


async def hello_of(client, token: str) -> tuple[WsPeer, dict]:
    peer = WsPeer(await client.ws_connect(f"/v1/ws?token={token}"))
    return peer, await peer.expect("hello")


async def ping(peer, ref: str) -> dict:
    await peer.send(op="ping", ref=ref)
    return await peer.expect("pong", ref=ref)


async def history(client, token: str, conversation_id: str, **query) -> dict:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    resp = await client.get(
        f"/v1/conversations/{conversation_id}/messages?{params}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def recv_answer(client, session: str, wait: float = 5) -> dict:
    """One long-poll recv (at once when a frame, a ping's pong, is waiting)."""
    resp = await client.get(f"/v1/poll/recv?session={session}&timeout={wait}")
    assert resp.status == 200
    return await resp.json()


async def test_level_1_stretches_intervals_and_shrinks_history_pages_then_restores(
    aiohttp_client, tmp_path
):
    client = await client_for(aiohttp_client, tmp_path, config())
    kernel = app_kernel(client.app)
    chat = await open_chat(client)
    cid = chat.conversation_id
    for i in range(25):  # a history of 25 messages
        await chat.visitor.send(op="send", conversation_id=cid, cid=f"h{i}", text=f"m{i}")
        await chat.visitor.expect("ack", cid=f"h{i}")
    wheel = kernel.existing_plugin_state("transport_ws.heartbeats")

    # level 0: the normal values
    assert (await ping(chat.visitor, "p0"))["heartbeat_s"] == 20.0
    peer, hello = await hello_of(client, chat.visitor_token)
    assert hello["heartbeat_s"] == 20.0
    await peer.close()
    poll = await poll_peer(client, chat.visitor_token)
    await poll.send(op="ping", ref="lp0")
    body = await recv_answer(client, poll.session)
    assert body["recv_timeout"] == 25.0
    assert [f["op"] for f in body["frames"]] == ["pong"]
    page = await history(client, chat.agent_token, cid, limit=50)
    assert (len(page["messages"]), page["has_more"], page["limit"]) == (25, False, 50)
    assert wheel.interval(30.0) == 30.0

    # level 1: every client is told the stretched values
    await kernel.pressure.override(1, 60, by="test")
    shed = set(kernel.pressure.shed)
    assert {"heartbeat", "ws_pings", "longpoll_interval", "history_pages"} <= shed
    assert (await ping(chat.visitor, "p1"))["heartbeat_s"] == 60.0
    assert (await ping(chat.agent, "a1"))["heartbeat_s"] == 60.0
    peer, hello = await hello_of(client, chat.visitor_token)
    assert hello["heartbeat_s"] == 60.0
    await peer.close()
    await poll.send(op="ping", ref="lp1")
    body = await recv_answer(client, poll.session)
    assert body["recv_timeout"] == 50.0 and body["frames"][0]["heartbeat_s"] == 60.0
    resp = await client.post(
        "/v1/poll/open", headers={"Authorization": f"Bearer {chat.visitor_token}"}
    )
    assert (await resp.json())["recv_timeout"] == 50.0
    assert wheel.interval(30.0) == 90.0  # the server's own WebSocket pings
    # history: pages of 20, has_more, and the next page has the rest
    page = await history(client, chat.agent_token, cid, limit=50)
    assert (len(page["messages"]), page["has_more"], page["limit"]) == (20, True, 20)
    assert page["messages"][0]["cid"] == "h5" and page["messages"][-1]["cid"] == "h24"
    older = await history(client, chat.agent_token, cid, limit=50, before_seq=6)
    assert [m["cid"] for m in older["messages"]] == [f"h{i}" for i in range(5)]
    assert older["has_more"] is False
    small = await history(client, chat.agent_token, cid, limit=5)  # a smaller ask stays
    assert (len(small["messages"]), small["limit"]) == (5, 5)
    # the chat itself is untouched
    await chat.visitor.send(op="send", conversation_id=cid, cid="during", text="still here")
    await chat.visitor.expect("ack", cid="during")
    await chat.agent.expect("message", cid="during")

    # back to 0: the normal values again, told the same way
    await kernel.pressure.override(None, 1)
    assert kernel.pressure.level == 0 and kernel.pressure.shed == []
    assert (await ping(chat.visitor, "p2"))["heartbeat_s"] == 20.0
    await poll.send(op="ping", ref="lp2")
    assert (await recv_answer(client, poll.session))["recv_timeout"] == 25.0
    page = await history(client, chat.agent_token, cid, limit=50)
    assert (len(page["messages"]), page["has_more"], page["limit"]) == (26, False, 50)
    assert wheel.interval(30.0) == 30.0
    await poll.close()


async def test_the_stretched_intervals_are_the_ones_the_server_keeps(aiohttp_client, tmp_path):
    """Not only told: the server's pings of an idle WebSocket come ``heartbeat_shed`` apart
    and an empty long-poll ``recv`` waits ``recv_timeout_shed`` at level 1 (short settings;
    lower bounds, which a loaded machine cannot make pass early)."""
    short = (
        "[transport_ws]\nheartbeat = 1.0\nheartbeat_shed = 4.0\n"
        "[transport_longpoll]\nrecv_timeout = 0.5\nrecv_timeout_shed = 2.0\n"
    )
    client = await client_for(aiohttp_client, tmp_path, config() + short)
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    token = (await visitor_session(client, site.site.widget_key))["token"]
    ws = await client.ws_connect(f"/v1/ws?token={token}", autoping=False)
    assert orjson.loads((await ws.receive()).data)["op"] == "hello"

    async def next_ping(within: float) -> float:
        """Wait for the server's next protocol ping, answer it, return when it came."""
        async with asyncio.timeout(within):
            while True:
                msg = await ws.receive()
                assert msg.type in (WSMsgType.PING, WSMsgType.TEXT), msg
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                    return time.monotonic()

    # level 0: pinged about every second (the wheel has one-second slots)
    first = await next_ping(10)
    second = await next_ping(10)
    assert second - first < 3.5, second - first
    poll = await poll_peer(client, token)
    started = time.monotonic()
    body = await recv_answer(client, poll.session, wait=10)
    assert body == {"frames": [], "recv_timeout": 0.5}
    assert time.monotonic() - started < 1.9

    # level 1: four seconds apart, and the empty recv waits two seconds
    await kernel.pressure.override(1, 60, by="test")
    await next_ping(10)  # one placed before the change may still come at the old interval
    first = await next_ping(15)
    second = await next_ping(15)
    assert second - first >= 3.5, second - first
    started = time.monotonic()
    body = await recv_answer(client, poll.session, wait=10)
    assert body == {"frames": [], "recv_timeout": 2.0}
    assert time.monotonic() - started >= 1.9

    # back to 0: the short waits again
    await kernel.pressure.override(None, 1)
    await next_ping(15)  # the one placed at the stretched interval
    first = await next_ping(10)
    second = await next_ping(10)
    assert second - first < 3.5, second - first
    started = time.monotonic()
    body = await recv_answer(client, poll.session, wait=10)
    assert body["recv_timeout"] == 0.5 and time.monotonic() - started < 1.9
    await ws.close()
    await poll.close()


@pytest.mark.parametrize("transport", ["ws", "longpoll"])
async def test_the_never_shed_list_holds_at_every_level(aiohttp_client, tmp_path, transport):
    """Sending, acks, storage and delivery to agents (and back) at levels 0, 1, 2, 3."""
    client = await client_for(aiohttp_client, tmp_path, config())
    kernel = app_kernel(client.app)
    chat = await open_chat(client, visitor_via=transport)
    cid, site_id = chat.conversation_id, chat.site.site.id
    sent: list[str] = []
    for level in (0, 1, 2, 3, 2, 1, 0):
        await kernel.pressure.override(level, 60, by="test")
        assert kernel.pressure.level == level
        v, a = f"v{len(sent)}-{level}", f"a{len(sent)}-{level}"
        await chat.visitor.send(op="send", conversation_id=cid, cid=v, text=f"at {level}")
        ack = await chat.visitor.expect("ack", cid=v, within=5)
        got = await chat.agent.expect("message", cid=v, within=5)
        assert got["seq"] == ack["seq"]
        await chat.agent.send(op="send", conversation_id=cid, cid=a, text=f"ok {level}")
        await chat.agent.expect("ack", cid=a, within=5)
        back = await chat.visitor.expect("message", cid=a, within=5)
        assert back["text"] == f"ok {level}"
        sent += [v, a]
    stored = await kernel.storage.list_messages(site_id, cid)
    assert [m.cid for m in stored] == sent  # each stored once, in order
    await kernel.pressure.override(None, 1)


def shop_with_degradation(flow_file) -> str:
    return (
        shop_config(flow_file)
        + '\n[plugins]\nenable = ["kefu.plugins.degradation"]\n'
        + config().split("\n", 2)[2]  # its [degradation] sections, without [plugins]
    )


async def test_level_2_switches_the_bot_enrichments_off_through_the_hook(aiohttp_client, tmp_path):
    flow_file = tmp_path / "flows" / "shop.yaml"
    flow_file.parent.mkdir()
    flow_file.write_bytes(SHOP.read_bytes())
    client = await routing_client(
        aiohttp_client,
        tmp_path,
        ROUTING,
        extra=shop_with_degradation(flow_file),
        extra_plugins=(("shop_actions", Actions()),),
    )
    kernel = app_kernel(client.app)
    assert kernel.pressure.snapshot()["enabled"] is True
    site = await site_of(client)
    sid = site.site.id
    for article in ARTICLES:
        data = {k: article[k] for k in ("title", "body", "lang")}
        await kernel.storage.put_record(sid, "kb.article", article["id"], data)
    bot = bot_of(kernel)
    flow = bot.registry.for_site(sid)
    classifier = flow.classifier
    calls: list[str] = []
    if classifier is not None and classifier.encoder is not None:
        encoder = classifier.encoder

        class Counting:
            def encode_one(self, text):
                calls.append(text)
                return encoder.encode_one(text)

            def __getattr__(self, name):
                return getattr(encoder, name)

        classifier.encoder = Counting()

    async def ask(cid: str, question: str) -> list[dict]:
        guest = await visitor(client, site)
        await guest.peer.expect("message", sender=BOT)  # the greeting
        await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=cid,
                              text=question)  # fmt: skip
        await guest.peer.expect("ack", cid=cid)
        answer = await guest.peer.expect("message", within=10, sender=BOT)
        # the marker that the turn is over: the bot's answer to a ping after it
        await guest.peer.send(op="ping", ref=cid)
        await guest.peer.expect("pong", ref=cid)
        more = [
            f for f in await guest.peer.quiet(0.5) if f.get("op") == "message"
        ]  # frames already sent with the answer (the question comes right after it)
        return [answer, *more], guest

    admin = {"Authorization": f"Bearer {await login(client, sid, site.admin.email)}"}

    async def suggestions() -> dict:
        resp = await client.get("/v1/kb/search?q=warranty&limit=3", headers=admin)
        assert resp.status == 200
        return await resp.json()

    found = await suggestions()
    assert found["shed"] is False and found["hits"][0]["article_id"] == "warranty-en"

    # level 0: the article's passage, then "Did this help?" with Yes/No
    frames, guest = await ask("q0", "how long is the warranty")
    assert '"Warranty and repairs"' in frames[0]["text"]
    assert [f["text"] for f in frames[1:]] == ["Did this help?"]
    assert frames[1]["meta"]["choices"] == ["Yes", "No"]
    stored = await kernel.storage.get_conversation(sid, guest.conversation_id)
    assert "kb_asked" in stored.meta
    used_at_0 = len(calls)

    # level 2: the features are shed (by the hook, no import between plugins)
    await kernel.pressure.override(2, 60, by="test")
    assert {"bot_kb_feedback", "kb_suggestions", "bot_embeddings"} <= set(kernel.pressure.shed)
    assert await suggestions() == {"hits": [], "min_score": found["min_score"], "shed": True}
    state = enrichments(kernel)
    assert state.kb_feedback is False and state.embeddings is False
    frames, guest = await ask("q2", "how long is the warranty ")  # not the cached text
    assert '"Warranty and repairs"' in frames[0]["text"]  # the answer itself stays
    assert frames[1:] == []  # nothing asked
    stored = await kernel.storage.get_conversation(sid, guest.conversation_id)
    assert "kb_asked" not in stored.meta and stored.state == BOT_STATE
    assert bot.counts["knowledge_unasked"] == 1
    if classifier is not None and classifier.encoder is not None:
        assert used_at_0 >= 1  # the embedding pass ran at level 0 ...
        assert len(calls) == used_at_0  # ... and not at level 2

    # back to 0: asked again
    await kernel.pressure.override(None, 1)
    assert state.kb_feedback is True and state.embeddings is True
    assert (await suggestions())["hits"][0]["article_id"] == "warranty-en"
    frames, _ = await ask("q3", "how long is the warranty  ")
    assert [f["text"] for f in frames[1:]] == ["Did this help?"]
    if classifier is not None and classifier.encoder is not None:
        assert len(calls) > used_at_0


def test_the_classifier_without_its_embedding_pass_scores_n_grams_only():
    """``dense = False`` (bot_embeddings shed): no encoder call, nothing cached."""
    from kefu.plugins.bot_intents.classifier import TrainingOptions, train_classifier

    texts = ["where is my order", "track my parcel", "refund please", "i want my money back"]
    intents = ["order", "order", "refund", "refund"]
    clf = train_classifier(texts * 3, intents * 3, TrainingOptions(embedding_model="none"))
    assert clf.encoder is None
    calls = []

    class Fake:
        def encode_one(self, text):
            calls.append(text)
            import numpy as np

            return np.zeros(4, dtype=np.float32)

    clf.encoder = Fake()
    clf._dense_t = __import__("numpy").zeros((4, len(clf.labels)), dtype="float32")
    clf.dense = False
    shed = clf.predict("where is my parcel")
    assert calls == [] and shed.best == "order"
    clf.dense = True
    full = clf.predict("where is my parcel")  # not served from the cache: computed now
    assert calls == ["where is my parcel"] and full.best == "order"
    assert orjson.dumps(shed.ranking) == orjson.dumps(full.ranking)  # zero dense block
