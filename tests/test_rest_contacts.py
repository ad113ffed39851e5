"""Contacts, data rights and message delete over HTTP (issue 14), memory backend."""

from __future__ import annotations

import pytest

from kefu.core.domain import Message, new_id
from tests.chat_support import app_kernel, start_client
from tests.rest_support import add_conversation, build_world


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


async def say(kernel, conv, text: str) -> None:
    await kernel.storage.append_message(
        Message(conv.site_id, conv.id, new_id(), "visitor", conv.visitor_id, text=text)
    )


async def test_contact_list_edit_and_export(client, world):
    kernel = app_kernel(client.app)
    vera, victor = world.visitors
    conv = await add_conversation(kernel, world.site.site.id, vera.id, messages=3)
    resp = await client.get("/v1/visitors", headers=world.agent())
    assert resp.status == 200
    assert {v["name"] for v in (await resp.json())["visitors"]} == {"Vera", "Victor"}
    resp = await client.get("/v1/visitors", params={"q": "vic"}, headers=world.agent())
    assert [v["id"] for v in (await resp.json())["visitors"]] == [victor.id]
    resp = await client.patch(
        f"/v1/visitors/{vera.id}",
        json={
            "name": "Vera Ng",
            "email": "vera@example.com",
            "phone": "+86 10 1234",
            "attributes": {"plan": "gold"},
        },
        headers=world.agent(),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["name"], body["email"], body["attributes"]) == (
        "Vera Ng",
        "vera@example.com",
        {"plan": "gold", "phone": "+86 10 1234"},
    )
    bad = await client.patch(
        f"/v1/visitors/{vera.id}", json={"email": "nope"}, headers=world.agent()
    )
    assert bad.status == 400
    resp = await client.get(f"/v1/visitors/{vera.id}/export", headers=world.agent())
    export = await resp.json()
    assert export["visitor"]["name"] == "Vera Ng"
    assert [c["id"] for c in export["conversations"]] == [conv.id]
    assert [x["text"] for x in export["conversations"][0]["messages"]] == ["m1", "m2", "m3"]


async def test_erasure_is_for_admins_and_removes_messages_from_search(client, world):
    kernel = app_kernel(client.app)
    vera, victor = world.visitors
    conv = await add_conversation(kernel, world.site.site.id, vera.id)
    await say(kernel, conv, "my secret address 12 Elm St")
    kept = await add_conversation(kernel, world.site.site.id, victor.id)
    await say(kernel, kept, "another secret")
    assert (await client.delete(f"/v1/visitors/{vera.id}", headers=world.agent())).status == 403
    resp = await client.delete(f"/v1/visitors/{vera.id}", headers=world.admin())
    assert resp.status == 200
    assert await resp.json() == {"visitor_id": vera.id, "messages_removed": 1}
    assert (await client.get(f"/v1/visitors/{vera.id}", headers=world.admin())).status == 404
    assert (await client.delete(f"/v1/visitors/{vera.id}", headers=world.admin())).status == 404
    hits = await (
        await client.get("/v1/search", params={"q": "secret"}, headers=world.agent())
    ).json()
    assert [h["message"]["text"] for h in hits["messages"]] == ["another secret"]
    audit = await kernel.storage.list_records(world.site.site.id, "audit.erasure")
    assert [(r.data["visitor_id"], r.data["messages"]) for r in audit] == [(vera.id, 1)]
    assert "Elm" not in str(audit[0].data)


async def test_agent_deletes_a_message_tombstone_and_audit(client, world):
    kernel = app_kernel(client.app)
    vera = world.visitors[0]
    conv = await add_conversation(kernel, world.site.site.id, vera.id)
    await say(kernel, conv, "card 4242 4242 4242 4242")
    await say(kernel, conv, "sorry, wrong box")
    url = f"/v1/conversations/{conv.id}/messages/1"
    resp = await client.delete(url, headers=world.agent())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["meta"]["deleted"]["by"] == world.site.agent.id
    assert (await client.delete(url, headers=world.agent())).status == 409
    assert (
        await client.delete(f"/v1/conversations/{conv.id}/messages/9", headers=world.agent())
    ).status == 404
    page = await (
        await client.get(f"/v1/conversations/{conv.id}/messages", headers=world.agent())
    ).json()
    assert [(x["seq"], x["text"]) for x in page["messages"]] == [(1, ""), (2, "sorry, wrong box")]
    hits = await (
        await client.get("/v1/search", params={"q": "4242"}, headers=world.agent())
    ).json()
    assert hits["messages"] == []
    audit = await kernel.storage.get_record(
        world.site.site.id, "audit.message_delete", f"{conv.id}.1"
    )
    assert (audit.data["sender_kind"], audit.data["by"]) == ("visitor", world.site.agent.id)
    assert "4242" not in str(audit.data)
