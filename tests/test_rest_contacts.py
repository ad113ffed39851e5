"""Contacts, data rights and message delete over HTTP (issue 14), memory backend."""

from __future__ import annotations

import pytest

from kefu.core.domain import Message, new_id
from tests.chat_support import app_kernel, connect, login, open_chat, start_client
from tests.rest_support import add_conversation, bearer, build_world


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
    assert await resp.json() == {"visitor_id": vera.id, "messages_removed": 1, "uploads_deleted": 0}
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


async def test_message_delete_role_rules_live_tombstone_and_resume(client):
    """Who may delete what (docs/protocol.md section 7), the ``message_deleted`` frame to the
    visitor and every watcher, and a resume after it that replays the tombstone."""
    chat = await open_chat(client)
    kernel, site = app_kernel(client.app), chat.site
    admin_token = await login(client, site.site.id, site.admin.email)
    agent, admin = bearer(chat.agent_token), bearer(admin_token)
    sent = []
    for who, text in ((chat.visitor, "my card 4242 4242"), (chat.agent, "Bob here")):
        await who.send(op="send", conversation_id=chat.conversation_id, cid=text, text=text)
        sent.append((await who.expect("ack"))["seq"])
    admin_peer = await connect(client, admin_token)
    await admin_peer.send(
        op="send", conversation_id=chat.conversation_id, cid="ada", text="Ada here"
    )
    sent.append((await admin_peer.expect("ack"))["seq"])
    assert sent == [1, 2, 3]
    base = f"/v1/conversations/{chat.conversation_id}/messages"

    # an agent may not delete a colleague's message (the admin's); the admin may
    resp = await client.delete(f"{base}/3", headers=agent)
    assert resp.status == 403
    # the agent deletes the visitor's message: everyone in the conversation hears of it
    resp = await client.delete(f"{base}/1", headers=agent)
    assert resp.status == 200, await resp.text()
    for peer in (chat.visitor, chat.agent):
        frame = await peer.expect("message_deleted")
        assert frame["conversation_id"] == chat.conversation_id and frame["seq"] == 1
        assert frame["cid"] == "my card 4242 4242"
        assert frame["deleted_by"] == {"kind": "agent", "id": site.agent.id}
        assert frame["at"] > 0
    assert (await client.delete(f"{base}/2", headers=agent)).status == 200  # own message
    assert (await client.delete(f"{base}/3", headers=admin)).status == 200
    audit = await kernel.storage.list_records(site.site.id, "audit.message_delete")
    assert sorted((r.data["seq"], r.data["by"]) for r in audit) == [
        (1, site.agent.id), (2, site.agent.id), (3, site.admin.id)
    ]  # fmt: skip

    # a visitor reconnecting resumes the tombstones, not the texts
    again = await connect(client, chat.visitor_token)
    await again.send(op="resume", conversation_id=chat.conversation_id, after_seq=0)
    replayed = [await again.expect("message") for _ in range(3)]
    assert [(m["seq"], m["text"], m["attachment"]) for m in replayed] == [
        (1, "", None), (2, "", None), (3, "", None)
    ]  # fmt: skip
    assert replayed[0]["meta"]["deleted"]["by"] == site.agent.id
    await again.expect("resumed")

    # once the conversation is another agent's, the first one may delete nothing in it
    conversation = await kernel.storage.get_conversation(site.site.id, chat.conversation_id)
    conversation.state, conversation.assignee_id = "assigned", site.admin.id
    await kernel.storage.update_conversation(conversation)
    kernel.delivery.forget(site.site.id, conversation.id)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="v2", text="x")
    await chat.visitor.expect("ack")
    assert (await client.delete(f"{base}/4", headers=agent)).status == 403
    # a visitor may delete nothing
    visitor = bearer(chat.visitor_token)
    assert (await client.delete(f"{base}/4", headers=visitor)).status == 403
    for peer in (again, admin_peer):
        await peer.close()


async def test_resume_tells_a_client_that_was_offline_of_a_deletion(client):
    """A message the client already holds, deleted while it was offline: its ``resume`` from
    past that message carries ``message_deleted`` (the replay alone starts after it), and the
    conversation record lists the tombstone for the console's inbox."""
    chat = await open_chat(client)
    kernel, site = app_kernel(client.app), chat.site
    for text in ("my card 4242 4242", "and my address"):
        await chat.visitor.send(
            op="send", conversation_id=chat.conversation_id, cid=text, text=text
        )
        await chat.visitor.expect("ack")
    await chat.visitor.close()  # offline: the frame below never reaches it
    base = f"/v1/conversations/{chat.conversation_id}/messages"
    resp = await client.delete(f"{base}/1", headers=bearer(chat.agent_token))
    assert resp.status == 200, await resp.text()
    deleted_at = (await resp.json())["meta"]["deleted"]["at"]

    again = await connect(client, chat.visitor_token)
    await again.send(op="resume", conversation_id=chat.conversation_id, after_seq=2)
    frame = await again.expect("message_deleted")
    assert (frame["conversation_id"], frame["seq"], frame["cid"]) == (
        chat.conversation_id, 1, "my card 4242 4242"
    )  # fmt: skip
    assert frame["deleted_by"] == {"kind": "agent", "id": site.agent.id}
    assert frame["at"] == deleted_at
    resumed = await again.expect("resumed")
    assert (resumed["replayed"], resumed["last_seq"]) == (0, 2)
    # resuming from before it replays the tombstone itself, with no second notice
    await again.send(op="resume", conversation_id=chat.conversation_id, after_seq=0)
    replayed = [await again.expect("message") for _ in range(2)]
    assert [(m["seq"], m["text"]) for m in replayed] == [(1, ""), (2, "and my address")]
    await again.expect("resumed")
    assert not [f for f in await again.quiet() if f["op"] == "message_deleted"]

    stored = await kernel.storage.get_conversation(site.site.id, chat.conversation_id)
    assert list(stored.meta["deleted_messages"]) == ["1"]
    listed = await (
        await client.get(
            f"/v1/conversations/{chat.conversation_id}", headers=bearer(chat.agent_token)
        )
    ).json()
    assert listed["meta"]["deleted_messages"]["1"]["by"] == {"kind": "agent", "id": site.agent.id}
    await again.close()
