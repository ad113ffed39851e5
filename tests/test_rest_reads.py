"""Agents' read marks and the lists' unread counts over HTTP (issue 14), memory backend."""

from __future__ import annotations

import pytest

from kefu.core.domain import Message, new_id
from kefu.plugins.rest_api import reads
from tests.chat_support import app_kernel, start_client, visitor_session
from tests.rest_support import add_conversation, bearer, build_world


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


async def listed(client, headers, **params) -> dict[str, dict]:
    resp = await client.get("/v1/conversations", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return {c["id"]: c for c in (await resp.json())["conversations"]}


async def test_marks_are_per_agent_never_move_back_and_feed_the_lists(client, world):
    kernel = app_kernel(client.app)
    site_id, bob = world.site.site.id, world.site.agent
    vera, victor = world.visitors
    mine = await add_conversation(
        kernel, site_id, vera.id, state="assigned", assignee_id=bob.id, messages=3
    )
    queued = await add_conversation(kernel, site_id, victor.id, messages=2)

    # never read: every message of his own conversation counts, none of the queue's
    got = await listed(client, world.agent())
    assert (got[mine.id]["read_seq"], got[mine.id]["unread"]) == (0, 3)
    assert (got[queued.id]["read_seq"], got[queued.id]["unread"]) == (0, 0)

    resp = await client.put(
        f"/v1/conversations/{mine.id}/read", json={"seq": 2}, headers=world.agent()
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"conversation_id": mine.id, "read_seq": 2, "unread": 1}
    # an older mark (a stale second device) does not move it back; past the end is the end
    resp = await client.put(
        f"/v1/conversations/{mine.id}/read", json={"seq": 1}, headers=world.agent()
    )
    assert (await resp.json())["read_seq"] == 2
    got = await listed(client, world.agent(), state="assigned", assignee="me")
    assert (got[mine.id]["read_seq"], got[mine.id]["unread"]) == (2, 1)
    one = await client.get(f"/v1/conversations/{mine.id}", headers=world.agent())
    assert (await one.json())["unread"] == 1
    found = await client.get(
        "/v1/search/conversations", params={"assignee": "me"}, headers=world.agent()
    )
    assert [(c["id"], c["unread"]) for c in (await found.json())["conversations"]] == [(mine.id, 1)]

    # a new message counts; reading to the end clears it
    await kernel.storage.append_message(
        Message(site_id, mine.id, new_id(), "visitor", vera.id, text="still there?")
    )
    assert (await listed(client, world.agent()))[mine.id]["unread"] == 2
    resp = await client.put(
        f"/v1/conversations/{mine.id}/read", json={"seq": 99}, headers=world.agent()
    )
    assert (await resp.json())["read_seq"] == 4
    assert (await listed(client, world.agent()))[mine.id]["unread"] == 0

    # the admin's marks are their own; a visitor has none and may not write one
    got = await listed(client, world.admin())
    assert (got[mine.id]["read_seq"], got[mine.id]["unread"]) == (0, 0)
    session = await visitor_session(client, world.site.site.widget_key)
    token = bearer(session["token"])
    theirs = await add_conversation(kernel, site_id, session["visitor_id"], messages=1)
    resp = await client.get(f"/v1/conversations/{theirs.id}", headers=token)
    assert (await resp.json())["unread"] is None
    resp = await client.put(f"/v1/conversations/{theirs.id}/read", json={"seq": 1}, headers=token)
    assert resp.status == 403
    resp = await client.put(
        f"/v1/conversations/{new_id()}/read", json={"seq": 1}, headers=world.agent()
    )
    assert resp.status == 404
    resp = await client.put(
        f"/v1/conversations/{mine.id}/read", json={"seq": "1"}, headers=world.agent()
    )
    assert resp.status == 400


async def test_marks_are_one_record_per_agent_with_the_newest_kept(client, world, monkeypatch):
    kernel = app_kernel(client.app)
    site_id, bob = world.site.site.id, world.site.agent
    monkeypatch.setattr(reads, "MAX_MARKS", 2)
    conversations = [
        await add_conversation(
            kernel, site_id, world.visitors[0 if n == 0 else 1].id, state="resolved", messages=1
        )
        for n in range(3)
    ]
    for conversation in conversations:
        resp = await client.put(
            f"/v1/conversations/{conversation.id}/read", json={"seq": 1}, headers=world.agent()
        )
        assert resp.status == 200
    record = await kernel.storage.get_record(site_id, reads.READ_KIND, bob.id)
    assert set(record.data) == {conversations[1].id, conversations[2].id}
    assert record.version == 3
