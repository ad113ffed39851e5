"""The everyday agent tools over the real gateway: private notes (never to the visitor),
tags, canned replies with /shortcuts and placeholders, the welcome message, the
leave-a-message form when nobody can answer, and the rating asked at resolve."""

from __future__ import annotations

import asyncio

import orjson

from kefu.core.domain import new_id
from tests.chat_support import app_kernel, visitor_session, ws_peer
from tests.routing_support import (
    add_agent,
    console,
    joined,
    routing_client,
    settle,
    site_of,
    visitor,
)


async def chat(client, capacity=5):
    """A site, an agent holding a new visitor's conversation."""
    kernel = app_kernel(client.app)
    site = await site_of(client)
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=capacity))
    guest = await visitor(client, site)
    await desk.assignment()
    await guest.peer.expect("agent_joined")
    return site, desk, guest


async def test_private_notes_reach_agents_never_the_visitor(world):
    client, events = world
    site, desk, guest = await chat(client)
    kernel = app_kernel(client.app)
    idle = await console(client, await add_agent(kernel, site.site.id, "Ida"), online=False)
    watcher = await console(client, await add_agent(kernel, site.site.id, "Wes"), online=False)
    await watcher.peer.send(op="watch", conversation_id=guest.conversation_id)
    await watcher.peer.expect("watching")
    await desk.peer.send(op="note", conversation_id=guest.conversation_id, text="refund 12 EUR")
    written = (await desk.peer.expect("note_ok"))["note"]
    assert (written["text"], written["agent_id"]) == ("refund 12 EUR", desk.agent.id)
    assert (await watcher.peer.expect("note"))["note"]["id"] == written["id"]
    url = f"/v1/conversations/{guest.conversation_id}"
    resp = await client.post(f"{url}/notes", json={"text": "second"}, headers=desk.auth())
    assert resp.status == 201
    resp = await client.get(f"{url}/notes", headers=idle.auth())
    assert [n["text"] for n in (await resp.json())["notes"]] == ["refund 12 EUR", "second"]
    assert not [f for f in await idle.peer.quiet(0.1) if f["op"] == "note"]  # not watching

    frames = await guest.peer.quiet(0.1)
    assert not [f for f in frames if "refund" in str(f) or f["op"] == "note"]
    resp = await client.get(f"{url}/notes", headers=guest.auth())
    assert resp.status == 403
    resp = await client.get(url, headers=guest.auth())
    seen = await resp.json()
    assert "notes" not in seen["meta"] and "refund" not in str(seen)
    await guest.peer.send(op="note", conversation_id=guest.conversation_id, text="hack")
    assert (await guest.peer.expect("error"))["code"] == "forbidden"
    resp = await client.post(f"{url}/notes", json={"text": ""}, headers=desk.auth())
    assert resp.status == 400
    assert len(events.of("conversation.note_added")) == 2


async def test_tags_are_normalised_bounded_and_for_agents(world):
    client, events = world
    site, desk, guest = await chat(client)
    await desk.peer.send(op="tag", conversation_id=guest.conversation_id, add=["Refund", "vip"])
    assert (await desk.peer.expect("tag_ok"))["tags"] == ["refund", "vip"]
    url = f"/v1/conversations/{guest.conversation_id}/tags"
    resp = await client.patch(url, json={"remove": ["VIP"], "add": ["late"]}, headers=desk.auth())
    assert (await resp.json())["tags"] == ["refund", "late"]
    many = [f"t{n}" for n in range(19)]
    resp = await client.patch(url, json={"add": many}, headers=desk.auth())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "too_many_tags"
    resp = await client.patch(url, json={"add": ["x"]}, headers=guest.auth())
    assert resp.status == 403
    await desk.peer.send(op="tag", conversation_id=guest.conversation_id, add="refund")
    assert (await desk.peer.expect("error"))["field"] == "add"
    stored = await app_kernel(client.app).storage.get_conversation(
        site.site.id, guest.conversation_id
    )
    assert stored.tags == ["refund", "late"]
    resp = await client.get(f"/v1/conversations/{guest.conversation_id}", headers=guest.auth())
    assert (await resp.json())["tags"] == []  # internal labels are not the visitor's
    assert events.of("conversation.tagged")[-1].data["tags"] == ["refund", "late"]


async def test_concurrent_edits_of_one_conversation_lose_nothing(aiohttp_client, tmp_path):
    client = await routing_client(aiohttp_client, tmp_path, storage="sql")  # real awaits
    _, desk, guest = await chat(client)
    url = f"/v1/conversations/{guest.conversation_id}/tags"

    async def add(tag):
        resp = await client.patch(url, json={"add": [tag]}, headers=desk.auth())
        assert resp.status == 200

    async def note(n):
        resp = await client.post(
            f"/v1/conversations/{guest.conversation_id}/notes",
            json={"text": f"n{n}"},
            headers=desk.auth(),
        )
        assert resp.status == 201

    await asyncio.gather(*(add(f"t{n}") for n in range(10)), *(note(n) for n in range(10)))
    resp = await client.get(f"/v1/conversations/{guest.conversation_id}", headers=desk.auth())
    stored = await resp.json()
    assert sorted(stored["tags"]) == sorted(f"t{n}" for n in range(10))
    assert sorted(n["text"] for n in stored["meta"]["notes"]) == sorted(f"n{n}" for n in range(10))


async def test_canned_replies_expand_shortcuts_with_placeholders(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    admin = await console(client, site.admin, online=False)
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    other = await console(client, await add_agent(kernel, site.site.id, "Otto"), online=False)
    session = await visitor_session(client, site.site.widget_key)
    visitor_record = await kernel.storage.get_visitor(site.site.id, session["visitor_id"])
    visitor_record.name = "Vera"
    await kernel.storage.upsert_visitor(visitor_record)
    peer = await ws_peer(client, session["token"])
    await peer.send(op="start")
    conversation_id = (await peer.expect("started"))["conversation"]["id"]
    await desk.assignment()

    url = "/v1/canned_replies"
    body = {
        "shortcut": "hi",
        "text": "Hello {visitor.name|there}, {agent.name} here.",
        "scope": "site",
    }
    resp = await client.post(url, json=body, headers=desk.auth())
    assert resp.status == 403  # site replies are the admins'
    resp = await client.post(url, json=body, headers=admin.auth())
    assert resp.status == 201
    assert (await client.post(url, json=body, headers=admin.auth())).status == 409
    mine = {"shortcut": "bye", "text": "Bye {visitor.email|friend}! {order.id}"}
    resp = await client.post(url, json=mine, headers=desk.auth())
    own_id = (await resp.json())["id"]
    resp = await client.get(url, headers=other.auth())
    assert [r["shortcut"] for r in (await resp.json())["replies"]] == ["hi"]  # not Ann's own

    await desk.peer.send(op="send", conversation_id=conversation_id, cid="c1", text="/hi")
    await desk.peer.expect("ack")
    got = await peer.expect("message")
    assert got["text"] == "Hello Vera, Ann here." and got["meta"]["canned"] == "hi"
    await desk.peer.send(op="send", conversation_id=conversation_id, cid="c2", text=" /bye ")
    assert (await peer.expect("message"))["text"] == "Bye friend! {order.id}"
    await desk.peer.send(op="send", conversation_id=conversation_id, cid="c3", text="/nope")
    assert (await peer.expect("message"))["text"] == "/nope"  # no such reply: sent as typed
    await peer.send(op="send", conversation_id=conversation_id, cid="v1", text="/hi")
    assert (await desk.peer.expect("message"))["text"] == "/hi"  # visitors' text is theirs

    resp = await client.patch(f"{url}/{own_id}", json={"text": "Ciao"}, headers=other.auth())
    assert resp.status == 404  # someone else's own reply does not exist for you
    resp = await client.patch(f"{url}/{own_id}", json={"text": "Ciao"}, headers=desk.auth())
    assert (await resp.json())["text"] == "Ciao"
    assert (await client.delete(f"{url}/{own_id}", headers=desk.auth())).status == 204
    site_record = await kernel.storage.get_site(site.site.id)  # the web admin's format
    site_record.settings["canned_replies"].append({"shortcut": "ty", "text": "Thanks!"})
    await kernel.storage.update_site(site_record)
    resp = await client.get(url, headers=desk.auth())
    assert [(r["shortcut"], r["scope"]) for r in (await resp.json())["replies"]] == [
        ("hi", "site"),
        ("ty", "site"),
    ]
    created = [e.data["shortcut"] for e in events.of("canned_reply.created")]
    assert created == ["hi", "bye"]


async def test_welcome_message_follows_the_started_reply(world):
    client, events = world
    site = await site_of(client)
    admin = await console(client, site.admin, online=False)
    text = "Hi {visitor.name|there}, welcome to {site.name}!"
    resp = await client.put("/v1/welcome_message", json={"text": text}, headers=admin.auth())
    assert (await resp.json()) == {"text": text, "text_zh": "", "source": "site"}
    agent = await console(client, site.agent, online=False)
    resp = await client.put("/v1/welcome_message", json={"text": ""}, headers=agent.auth())
    assert resp.status == 403
    session = await visitor_session(client, site.site.widget_key)
    peer = await ws_peer(client, session["token"])
    await peer.send(op="start")
    first = orjson.loads((await peer.ws.receive()).data)  # the very next frame
    assert first["op"] == "started"  # always before the welcome message
    welcome = await peer.expect("message")
    assert welcome["text"] == f"Hi there, welcome to {site.site.name}!"
    assert (welcome["sender"]["kind"], welcome["seq"]) == ("system", 1)
    assert welcome["conversation_id"] == first["conversation"]["id"]
    resp = await client.get("/v1/welcome_message", headers=agent.auth())
    assert (await resp.json())["source"] == "site"
    assert [e.data["text"] for e in events.of("site.welcome_message_changed")] == [text]


async def test_leave_a_message_when_nobody_can_answer(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    guest = await visitor(client, site)
    assert (await guest.peer.expect("queue"))["reason"] == "no_agents"
    await guest.peer.send(
        op="leave_message", name="Vera", email="vera@example.com", text="Call me back", cid="f1"
    )
    left = await guest.peer.expect("leave_message_ok")
    assert (left["conversation_id"], left["created"]) == (guest.conversation_id, False)
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    record = await kernel.storage.get_visitor(site.site.id, stored.visitor_id)
    assert (record.name, record.email) == ("Vera", "vera@example.com")
    await guest.peer.send(op="leave_message", email="not-an-email", text="x")
    assert (await guest.peer.expect("error"))["field"] == "email"

    session = await visitor_session(client, site.site.widget_key)  # no chat open: a new one
    resp = await client.post(
        "/v1/offline_messages",
        json={"email": "max@example.com", "text": "Price list?"},
        headers={"Authorization": f"Bearer {session['token']}"},
    )
    assert resp.status == 201 and (await resp.json())["created"] is True
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann"), online=False)
    resp = await client.get("/v1/offline_messages", headers=desk.auth())
    listed = (await resp.json())["messages"]
    assert [(m["email"], m["text"]) for m in listed] == [
        ("max@example.com", "Price list?"),
        ("vera@example.com", "Call me back"),
    ]
    resp = await client.post(
        "/v1/offline_messages", json={"email": "a@b", "text": "x"}, headers=desk.auth()
    )
    assert resp.status == 403
    await desk.online()  # someone can answer now: both wait no more
    assert await joined(guest.peer, desk.agent)
    await settle(client)
    assert len(events.of("offline_message.created")) == 2
    held = await kernel.storage.list_conversations(site.site.id, assignee_id=desk.agent.id)
    assert len(held) == 2


async def test_rating_is_asked_at_resolve_and_given_once(world):
    client, events = world
    _, desk, guest = await chat(client)
    await guest.peer.send(op="rate", conversation_id=guest.conversation_id, score=5)
    assert (await guest.peer.expect("error"))["code"] == "not_resolved"
    await desk.peer.send(op="resolve", conversation_id=guest.conversation_id)
    await desk.peer.expect("resolve_ok")
    asked = await guest.peer.expect("csat_request")
    assert (asked["conversation_id"], asked["scale"]) == (guest.conversation_id, 5)
    url = f"/v1/conversations/{guest.conversation_id}/rating"
    resp = await client.post(url, json={"score": 4}, headers=desk.auth())
    assert resp.status == 403  # the visitor rates
    for bad in (0, 6, "5", 4.5):
        resp = await client.post(url, json={"score": bad}, headers=guest.auth())
        assert resp.status == 400, bad
    await guest.peer.send(op="rate", conversation_id=guest.conversation_id, score=4, comment="ok")
    rated = await guest.peer.expect("rate_ok")
    assert (rated["rating"]["score"], rated["rating"]["comment"]) == (4, "ok")
    resp = await client.post(url, json={"score": 5}, headers=guest.auth())
    assert (await resp.json())["error"]["code"] == "already_rated"
    event = events.of("conversation.rated")[0].data
    assert (event["agent_id"], event["score"], event["rating"]) == (desk.agent.id, 0.75, 4)
    resp = await client.get(f"/v1/conversations/{guest.conversation_id}", headers=guest.auth())
    assert (await resp.json())["meta"]["rating"]["score"] == 4  # the widget reads it back
    await guest.peer.send(op="rate", conversation_id=new_id(), score=3)
    assert (await guest.peer.expect("error"))["code"] == "conversation_not_found"


def test_placeholders_of_an_anonymous_visitor_leave_no_stray_space():
    from kefu.plugins.agent_tools.placeholders import render

    unknown = {"visitor.name": None, "agent.name": "Mei"}
    assert render("Hi {visitor.name}, {agent.name} here.", unknown) == "Hi, Mei here."
    assert render("Hi {visitor.name|there}!", unknown) == "Hi there!"
    assert render("您好 {visitor.name}，我是{agent.name}", unknown) == "您好，我是Mei"  # noqa: RUF001
    assert render("Hi {visitor.name}!", {"visitor.name": "Ann"}) == "Hi Ann!"


async def test_welcome_message_in_the_visitors_language(world):
    """Issue 14: one welcome for both languages; a Chinese visitor (the widget's ``language``
    attribute) gets ``text_zh``, the others ``text``."""
    client, _events = world
    site = await site_of(client)
    admin = await console(client, site.admin, online=False)
    body = {"text": "Welcome to {site.name}!", "text_zh": "欢迎光临 {site.name}"}
    resp = await client.put("/v1/welcome_message", json=body, headers=admin.auth())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["text_zh"] == "欢迎光临 {site.name}"
    for language, expected in (("zh-CN", f"欢迎光临 {site.site.name}"), ("en", None)):
        resp = await client.post(
            "/v1/visitors/session",
            json={"widget_key": site.site.widget_key, "attributes": {"language": language}},
        )
        peer = await ws_peer(client, (await resp.json())["token"])
        await peer.send(op="start")
        welcome = await peer.expect("message")
        assert welcome["text"] == (expected or f"Welcome to {site.site.name}!")
        await peer.close()
    # without a Chinese text Chinese visitors get the one text
    resp = await client.put("/v1/welcome_message", json={"text": "Hi!"}, headers=admin.auth())
    assert (await resp.json())["text_zh"] == ""
