"""Search, conversation filters and saved views over HTTP (issue 14), memory backend."""

from __future__ import annotations

import pytest

from kefu.core.domain import Message, Visitor, new_id
from tests.chat_support import app_kernel, start_client
from tests.rest_support import add_conversation, build_world


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


async def say(kernel, conv, text: str, at: float) -> None:
    await kernel.storage.append_message(
        Message(
            conv.site_id, conv.id, new_id(), "visitor", conv.visitor_id, text=text, created_at=at
        )
    )


async def test_search_finds_messages_and_contacts_agents_only(client, world):
    kernel = app_kernel(client.app)
    site_id = world.site.site.id
    vera, victor = world.visitors
    a = await add_conversation(kernel, site_id, vera.id, at=100)
    b = await add_conversation(kernel, site_id, victor.id, at=200, state="resolved")
    await say(kernel, a, "My parcel 8812 never arrived, it was a " + "long story " * 20, 101)
    await say(kernel, b, "包裹 8812 到了吗", 201)
    await kernel.storage.upsert_visitor(
        Visitor(new_id(), site_id, name="Parcel Fan", email="fan@example.com")
    )
    resp = await client.get("/v1/search", params={"q": "8812"}, headers=world.agent())
    assert resp.status == 200
    body = await resp.json()
    assert [
        (h["message"]["conversation_id"], h["conversation_state"]) for h in body["messages"]
    ] == [
        (b.id, "resolved"),
        (a.id, "queued"),
    ]
    assert body["messages"][1]["snippet"].startswith("My parcel 8812")
    assert body["messages"][1]["snippet"].endswith("…")
    resp = await client.get("/v1/search", params={"q": "parcel"}, headers=world.agent())
    body = await resp.json()
    assert [v["name"] for v in body["contacts"]] == ["Parcel Fan"]
    assert len(body["messages"]) == 1
    resp = await client.get("/v1/search", params={"q": ""}, headers=world.agent())
    assert resp.status == 400
    # a visitor cannot search the site
    session = await client.post(
        "/v1/visitors/session", json={"widget_key": world.site.site.widget_key}
    )
    token = (await session.json())["token"]
    resp = await client.get(
        "/v1/search", params={"q": "8812"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 403


async def test_filters_combine_and_text_narrows(client, world):
    kernel = app_kernel(client.app)
    storage = kernel.storage
    site_id = world.site.site.id
    agent_id = world.site.agent.id
    vera, victor = world.visitors
    mine = await add_conversation(
        kernel, site_id, vera.id, at=100, state="assigned", assignee_id=agent_id
    )
    other = await add_conversation(kernel, site_id, victor.id, at=300)
    mine.tags, mine.department = ["vip"], "sales"
    assert await storage.update_conversation(mine)
    await say(kernel, other, "refund please", 301)

    async def ids(**params):
        resp = await client.get("/v1/search/conversations", params=params, headers=world.agent())
        assert resp.status == 200, await resp.text()
        return [c["id"] for c in (await resp.json())["conversations"]]

    assert await ids() == [other.id, mine.id]
    assert await ids(assignee="me") == [mine.id]
    assert await ids(assignee="none") == [other.id]
    assert await ids(state="open") == [other.id, mine.id]
    assert await ids(state="resolved") == []
    assert await ids(tag="vip", department="sales") == [mine.id]
    assert await ids(since="200") == [other.id]
    assert await ids(until="200") == [mine.id]
    assert await ids(q="refund") == [other.id]
    assert await ids(q="vera") == [mine.id]  # the contact's name
    assert await ids(q="nothing-like-this") == []
    resp = await client.get(
        "/v1/search/conversations", params={"state": "bogus"}, headers=world.agent()
    )
    assert resp.status == 400


async def test_saved_views_shared_in_the_site_with_versions(client, world):
    view = {"name": "My VIP", "filter": {"tag": "vip", "assignee": "me"}, "version": 0}
    resp = await client.put("/v1/views/vip", json=view, headers=world.agent())
    assert resp.status == 200, await resp.text()
    made = await resp.json()
    assert (made["version"], made["created_by"]) == (1, world.site.agent.id)
    resp = await client.put("/v1/views/vip", json=view, headers=world.admin())
    assert resp.status == 409  # version 0 = create only
    resp = await client.put(
        "/v1/views/vip", json={**view, "name": "VIP", "version": 1}, headers=world.admin()
    )
    assert (await resp.json())["created_by"] == world.site.agent.id
    listed = await (await client.get("/v1/views", headers=world.admin())).json()
    assert [(v["id"], v["name"], v["filter"]) for v in listed["views"]] == [
        ("vip", "VIP", {"tag": "vip", "assignee": "me"})
    ]
    resp = await client.put(
        "/v1/views/bad", json={"name": "x", "filter": {"nope": 1}}, headers=world.agent()
    )
    assert resp.status == 400
    assert (await client.delete("/v1/views/vip", headers=world.agent())).status == 204
    assert (await client.delete("/v1/views/vip", headers=world.agent())).status == 404
