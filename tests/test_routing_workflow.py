"""The agent workflow over the real gateway: accept/decline, transfer (and every refusal the
issue names), reassignment when nobody answers, resolve/reopen permissions, presence with
automatic away after a disconnect."""

from __future__ import annotations

import asyncio

from tests.chat_support import add_site, app_kernel, ws_peer
from tests.routing_support import (
    ROUTING,
    Events,
    add_agent,
    console,
    joined,
    routing_client,
    settle,
    site_of,
    visitor,
)


async def test_accept_and_decline_and_the_decliner_is_not_offered_it_again(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    guest = await visitor(client, site)
    offer = await ann.assignment()
    conversation_id = offer["conversation"]["id"]
    ben = await console(client, await add_agent(kernel, site.site.id, "Ben", capacity=1))
    await ben.peer.send(op="accept", conversation_id=conversation_id, ref=1)
    assert (await ben.peer.expect("error", ref=1))["code"] == "not_assignee"
    await ann.peer.send(op="accept", conversation_id=conversation_id, ref=2)
    accepted = await ann.peer.expect("accept_ok", ref=2)
    assert accepted["conversation"]["meta"]["accepted_at"] > 0
    assert await ben.peer.expect("conversation", event="accepted")
    assert [e.data["agent_id"] for e in events.of("conversation.accepted")] == [ann.agent.id]

    second = await visitor(client, site)  # Ann is full: Ben gets it and declines
    offer = await ben.assignment()
    await ben.peer.send(op="decline", conversation_id=second.conversation_id, reason="busy")
    declined = await ben.peer.expect("decline_ok")
    assert declined["conversation"]["state"] == "queued"
    left = await second.peer.expect("agent_left")
    assert (left["agent_id"], left["reason"]) == (ben.agent.id, "declined")
    await settle(client)
    stored = await kernel.storage.get_conversation(site.site.id, second.conversation_id)
    assert stored.state == "queued" and stored.meta["declined_by"] == [ben.agent.id]
    assert events.of("conversation.declined")[0].data["reason"] == "busy"
    await ann.peer.send(op="resolve", conversation_id=guest.conversation_id)
    await ann.peer.expect("resolve_ok")  # Ann frees up: she gets it, never Ben again
    assert await joined(second.peer, ann.agent)


async def test_transfer_to_an_agent_or_a_department_with_a_note(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    guest = await visitor(client, site)
    await ann.assignment()
    ben = await console(client, await add_agent(kernel, site.site.id, "Ben", skills=("billing",)))
    await ann.peer.send(
        op="transfer", conversation_id=guest.conversation_id, agent_id=ben.agent.id, note="VIP"
    )
    moved = await ann.peer.expect("transfer_ok")
    assert moved["conversation"]["assignee_id"] == ben.agent.id
    offer = await ben.assignment()
    assert (offer["reason"], offer["from_agent_id"], offer["note"]) == (
        "transfer",
        ann.agent.id,
        "VIP",
    )
    assert await joined(guest.peer, ben.agent)
    await settle(client)
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.meta["notes"][-1]["text"] == "VIP"  # kept as a private note
    assert stored.meta["notes"][-1]["source"] == "transfer"

    await ben.peer.send(op="transfer", conversation_id=guest.conversation_id, department="billing")
    await ben.peer.expect("transfer_ok")  # to the department's queue; Ben is not offered it back
    cara = await console(client, await add_agent(kernel, site.site.id, "Cara", skills=("sales",)))
    await settle(client)
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert (stored.state, stored.department) == ("queued", "billing")
    assert ben.agent.id in stored.meta["declined_by"]
    await cara.peer.quiet(0.05)
    resp = await client.post(
        f"/v1/conversations/{guest.conversation_id}/transfer",
        json={"department": "sales"},
        headers=ann.auth(),
    )
    assert resp.status == 200
    assert await joined(guest.peer, cara.agent)
    transfers = events.of("conversation.transferred")
    assert [(e.data.get("to_agent_id"), e.data.get("to_department")) for e in transfers] == [
        (ben.agent.id, None),
        (None, "billing"),
        (None, "sales"),
    ]


async def test_every_bad_transfer_is_refused_with_a_clear_error(world):
    client, _ = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    elsewhere = await add_site(kernel)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    guest = await visitor(client, site)
    await ann.assignment()
    offline = await add_agent(kernel, site.site.id, "Olga")
    full = await console(client, await add_agent(kernel, site.site.id, "Fred", capacity=0))
    other = await console(client, await add_agent(kernel, site.site.id, "Otto"))
    url = f"/v1/conversations/{guest.conversation_id}/transfer"
    cases = [
        (ann, {"agent_id": "nobody"}, 404, "unknown_agent"),
        (ann, {"agent_id": elsewhere.agent.id}, 404, "unknown_agent"),  # another site's agent
        (ann, {"agent_id": offline.id}, 409, "agent_offline"),
        (ann, {"agent_id": full.agent.id}, 409, "agent_full"),
        (ann, {"agent_id": ann.agent.id}, 409, "already_assigned"),
        (ann, {"department": "nobody-serves-this"}, 404, "unknown_department"),
        (ann, {}, 400, "missing_field"),
        (other, {"agent_id": other.agent.id}, 403, "forbidden"),  # not theirs, not an admin
    ]
    for desk, body, status, code in cases:
        resp = await client.post(url, json=body, headers=desk.auth())
        error = (await resp.json())["error"]
        assert (resp.status, error["code"]) == (status, code), (body, error)
        assert error["message"]
    resp = await client.post(url, json={"agent_id": other.agent.id}, headers=guest.auth())
    assert resp.status == 403  # visitors never transfer
    await ann.peer.send(op="transfer", conversation_id=guest.conversation_id, ref="t")
    refused = await ann.peer.expect("error", ref="t")
    assert (refused["code"], refused["field"]) == ("missing_field", "agent_id")
    await ann.peer.send(op="transfer", conversation_id=guest.conversation_id, agent_id=7)
    assert (await ann.peer.expect("error"))["code"] == "invalid_field"
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.assignee_id == ann.agent.id  # nothing changed


async def test_an_unanswered_assignment_goes_to_someone_else(aiohttp_client, tmp_path):
    events = Events()
    routing = ROUTING.replace("answer_timeout_s = 0", "answer_timeout_s = 0.3")
    client = await routing_client(aiohttp_client, tmp_path, routing, extra_plugins=(("e", events),))
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    silent = await visitor(client, site)
    offer = await ann.assignment()
    assert offer["answer_within_s"] == 0.3
    ben = await console(client, await add_agent(kernel, site.site.id, "Ben", capacity=1))
    left = await silent.peer.expect("agent_left", within=3)
    assert (left["agent_id"], left["reason"]) == (ann.agent.id, "timeout")
    assert await joined(silent.peer, ben.agent)
    await ben.assignment()
    await ben.peer.send(op="accept", conversation_id=silent.conversation_id)
    await ben.peer.expect("accept_ok")  # accepting in time stops the timer too
    assert events.of("conversation.reassigned")[0].data["agent_id"] == ann.agent.id

    answered = await visitor(client, site)  # Ann is free again; this time she answers
    await ann.assignment()
    await ann.peer.send(op="send", conversation_id=answered.conversation_id, cid="a1", text="Hi!")
    await ann.peer.expect("ack")
    await asyncio.sleep(0.5)
    stored = await kernel.storage.get_conversation(site.site.id, answered.conversation_id)
    assert (stored.state, stored.assignee_id) == ("assigned", ann.agent.id)
    first = events.of("conversation.first_response")
    assert [e.data["agent_id"] for e in first] == [ann.agent.id] and first[0].data["seconds"] < 1
    assert len(events.of("conversation.reassigned")) == 1


async def test_resolve_permissions_and_reopen(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    other = await console(client, await add_agent(kernel, site.site.id, "Otto"), online=False)
    admin = await console(client, site.admin, online=False)
    guest = await visitor(client, site)
    await ann.assignment()
    url = f"/v1/conversations/{guest.conversation_id}"
    resp = await client.post(f"{url}/resolve", headers=other.auth())
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "forbidden" and "assignee" in error["message"]
    await other.peer.send(op="resolve", conversation_id=guest.conversation_id)
    assert (await other.peer.expect("error"))["code"] == "forbidden"
    resp = await client.post(f"{url}/resolve", headers=admin.auth())
    assert resp.status == 200  # an admin may
    resp = await client.post(f"{url}/resolve", headers=ann.auth())
    assert (await resp.json())["error"]["code"] == "conversation_resolved"
    resolved = events.of("conversation.resolved")[0].data
    assert (resolved["agent_id"], resolved["by_id"]) == (ann.agent.id, site.admin.id)

    resp = await client.post(f"{url}/reopen", headers=guest.auth())
    assert resp.status == 403  # visitors start a new conversation instead
    resp = await client.post(f"{url}/reopen", headers=other.auth())
    assert resp.status == 200 and (await resp.json())["state"] == "queued"
    assert await guest.peer.expect("reopened")
    assert await joined(guest.peer, ann.agent)
    resp = await client.post(f"{url}/reopen", headers=other.auth())
    assert (await resp.json())["error"]["code"] == "not_resolved"

    await guest.peer.send(op="resolve", conversation_id=guest.conversation_id)  # its visitor
    assert (await guest.peer.expect("resolve_ok"))["conversation"]["state"] == "resolved"
    assert len(events.of("conversation.resolved")) == 2


async def test_presence_goes_away_after_the_grace_period_and_comes_back(world):
    client, events = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    colleague = await console(client, await add_agent(kernel, site.site.id, "Cole"))
    second_tab = await ws_peer(client, ann.token)
    await second_tab.close()
    await asyncio.sleep(0.4)  # one tab left: still online
    assert (await kernel.storage.get_agent(site.site.id, ann.agent.id)).status == "online"
    await ann.peer.close()
    notice = await colleague.peer.expect("presence", agent_id=ann.agent.id, within=3)
    assert (notice["status"], notice["auto"]) == ("away", True)
    assert (await kernel.storage.get_agent(site.site.id, ann.agent.id)).status == "away"
    guest = await visitor(client, site)
    assert await joined(guest.peer, colleague.agent)
    back = await ws_peer(client, ann.token)
    assert (await colleague.peer.expect("presence", agent_id=ann.agent.id))["status"] == "online"
    assert (await kernel.storage.get_agent(site.site.id, ann.agent.id)).status == "online"
    await back.close()
    quick = await ws_peer(client, ann.token)  # back within the grace period: never away
    await asyncio.sleep(0.4)
    assert (await kernel.storage.get_agent(site.site.id, ann.agent.id)).status == "online"
    await quick.close()
    auto = [e.data for e in events.of("agent.presence") if e.data.get("auto")]
    assert [d["status"] for d in auto][:2] == ["away", "online"]


async def test_presence_over_rest_only_for_oneself_or_an_admin(world):
    client, _ = world
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann"), online=False)
    guest = await visitor(client, site)
    assert (await guest.peer.expect("queue"))["reason"] == "no_agents"
    url = f"/v1/agents/{ann.agent.id}/presence"
    resp = await client.put(url, json={"status": "online"}, headers=ann.auth())
    assert resp.status == 200 and (await resp.json())["status"] == "online"
    assert await joined(guest.peer, ann.agent)
    other = await console(client, await add_agent(kernel, site.site.id, "Otto"), online=False)
    resp = await client.put(url, json={"status": "away"}, headers=other.auth())
    assert resp.status == 403
    resp = await client.put(url, json={"status": "busy"}, headers=ann.auth())
    assert resp.status == 400
    resp = await client.put(
        "/v1/agents/nobody/presence", json={"status": "away"}, headers=ann.auth()
    )
    assert resp.status == 404
