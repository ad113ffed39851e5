"""Two contacts merged into one over HTTP (issue 14, plugins/rest_api/merge.py): the
conversations move, the kept contact's profile wins, the other goes, both open is a 409, an
audit record and an event stay, and a verified user's link follows. SQLite storage."""

from __future__ import annotations

import pytest

from kefu.core.domain import RESOLVED, Message, Visitor, new_id
from kefu.core.web_app import create_app
from tests.chat_support import app_kernel, make_kernel
from tests.rest_support import add_conversation, bearer, build_world
from tests.routing_support import Events
from tests.test_visitor_identity import identify, rotate


@pytest.fixture
def events():
    return Events()


@pytest.fixture
async def client(aiohttp_client, tmp_path, events):
    kernel = make_kernel(tmp_path, storage="sql", extra_plugins=(("events", events),))
    return await aiohttp_client(create_app(kernel))


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


async def contact(kernel, site_id: str, **kw) -> Visitor:
    return await kernel.storage.upsert_visitor(Visitor(new_id(), site_id, **kw))


async def merge(client, world, kept_id: str, merged_id: str, headers=None):
    return await client.post(
        f"/v1/visitors/{kept_id}/merge", json={"merge_id": merged_id},
        headers=headers or world.agent(),
    )  # fmt: skip


async def test_merge_moves_conversations_and_the_kept_profile_wins(client, world, events):
    kernel = app_kernel(client.app)
    site_id = world.site.site.id
    kept = await contact(kernel, site_id, name="Ann Lee", attributes={"plan": "gold"},
                         last_seen_at=100.0)  # fmt: skip
    other = await contact(kernel, site_id, name="ann", email="ann@example.test", page="/cart",
                          attributes={"plan": "free", "phone": "+86 10 1234"},
                          last_seen_at=200.0)  # fmt: skip
    old = await add_conversation(kernel, site_id, kept.id, state=RESOLVED, at=50, messages=1)
    a = await add_conversation(kernel, site_id, other.id, state=RESOLVED, at=60, messages=2)
    b = await add_conversation(kernel, site_id, other.id, at=70, messages=3)  # open: moves too
    resp = await merge(client, world, kept.id, other.id)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["merged_id"], body["conversations_moved"]) == (other.id, 2)
    profile = body["visitor"]
    assert (profile["id"], profile["name"], profile["email"], profile["page"]) == (
        kept.id, "Ann Lee", "ann@example.test", "/cart",
    )  # fmt: skip
    assert profile["attributes"] == {"plan": "gold", "phone": "+86 10 1234"}
    assert profile["last_seen_at"] == 200.0
    # the other contact is gone; every conversation and message is the kept one's now
    assert await kernel.storage.get_visitor(site_id, other.id) is None
    resp = await client.get(f"/v1/visitors/{other.id}", headers=world.agent())
    assert resp.status == 404
    resp = await client.get(
        "/v1/search/conversations", params={"visitor": kept.id}, headers=world.agent()
    )
    assert {c["id"] for c in (await resp.json())["conversations"]} == {old.id, a.id, b.id}
    resp = await client.get(
        "/v1/search/conversations", params={"visitor": other.id}, headers=world.agent()
    )
    assert (await resp.json())["conversations"] == []
    assert len(await kernel.storage.list_messages(site_id, b.id)) == 3
    assert (await kernel.storage.get_conversation(site_id, b.id)).visitor_id == kept.id
    (record,) = await kernel.storage.list_records(site_id, "audit.merge")
    assert record.data["visitor_id"] == kept.id and record.data["merged_id"] == other.id
    assert record.data["by"] == world.site.agent.id and record.data["conversations"] == 2
    (event,) = events.of("visitor.merged")
    assert event.data == {"visitor_id": kept.id, "merged_id": other.id, "conversations": 2}


async def test_both_open_is_a_conflict_and_nothing_moves(client, world):
    kernel = app_kernel(client.app)
    site_id = world.site.site.id
    vera, victor = world.visitors
    a = await add_conversation(kernel, site_id, vera.id)
    b = await add_conversation(kernel, site_id, victor.id, state="assigned",
                               assignee_id=world.site.agent.id)  # fmt: skip
    resp = await merge(client, world, vera.id, victor.id)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "both_open"
    assert (await kernel.storage.get_conversation(site_id, b.id)).visitor_id == victor.id
    assert await kernel.storage.get_visitor(site_id, victor.id) is not None
    # once one is resolved, the merge goes through
    a.state, a.resolved_at = RESOLVED, 2000.0
    assert await kernel.storage.update_conversation(a)
    resp = await merge(client, world, vera.id, victor.id)
    assert resp.status == 200 and (await resp.json())["conversations_moved"] == 1


async def test_refusals(client, world):
    kernel = app_kernel(client.app)
    vera, victor = world.visitors
    resp = await merge(client, world, vera.id, vera.id)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "same_contact"
    resp = await merge(client, world, vera.id, "nobody")
    assert resp.status == 404
    elsewhere = await build_world(client, kernel)
    resp = await merge(client, world, vera.id, elsewhere.visitors[0].id)
    assert resp.status == 404  # another site's contact is not found
    session = await client.post(
        "/v1/visitors/session", json={"widget_key": world.site.site.widget_key}
    )
    token = bearer((await session.json())["token"])
    resp = await merge(client, world, vera.id, victor.id, headers=token)
    assert resp.status == 403
    resp = await client.post(f"/v1/visitors/{vera.id}/merge", json={}, headers=world.agent())
    assert resp.status == 400
    assert await kernel.storage.list_records(world.site.site.id, "audit.merge") == []


async def test_a_verified_users_link_follows_the_merge(client, world):
    kernel = app_kernel(client.app)
    site = world.site
    secret = await rotate(client, world.admin())
    from kefu.plugins.visitor_identity.keys import user_hash

    signed = user_hash(secret, "cust-1")
    status, first = await identify(client, site.site.widget_key, "cust-1", signed)
    assert status == 200
    verified_id = first["visitor_id"]
    phone = await contact(kernel, site.site.id, name="From the phone line")
    conv = await add_conversation(kernel, site.site.id, verified_id, state=RESOLVED, messages=1)
    resp = await merge(client, world, phone.id, verified_id)
    assert resp.status == 200, await resp.text()
    # the customer signs in again: the session continues as the kept contact
    status, again = await identify(client, site.site.widget_key, "cust-1", signed)
    assert status == 200 and again["visitor_id"] == phone.id
    resp = await client.get(f"/v1/visitors/{phone.id}/identity", headers=world.agent())
    assert (await resp.json())["user_id"] == "cust-1"
    assert (await kernel.storage.get_conversation(site.site.id, conv.id)).visitor_id == phone.id
    await kernel.storage.append_message(
        Message(site.site.id, conv.id, new_id(), "agent", site.agent.id, text="still here")
    )
