"""Routing wired to live conversations over the real gateway (WebSocket clients): every
policy routes, the filters hold, the queue drains oldest first with position updates, and
business hours close and open the door."""

from __future__ import annotations

import pytest

from kefu.plugins.routing import service_of
from tests.chat_support import app_kernel, ws_peer
from tests.routing_support import (
    ROUTING,
    Events,
    add_agent,
    console,
    routing_client,
    settle,
    site_of,
    visitor,
)


@pytest.mark.parametrize("policy", ["weighted", "round_robin", "least_open"])
async def test_each_assigning_policy_routes_a_started_conversation(
    aiohttp_client, tmp_path, policy
):
    events = Events()
    client = await routing_client(
        aiohttp_client,
        tmp_path,
        ROUTING + f'policy = "{policy}"\n',
        extra_plugins=(("ev", events),),
    )
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await add_agent(kernel, site.site.id, "Ann", capacity=2)
    ben = await add_agent(kernel, site.site.id, "Ben", capacity=2)
    desks = {a.id: await console(client, a) for a in (ann, ben)}
    watcher = await ws_peer(client, desks[ann.id].token)  # another tab of Ann's: site frames

    first = await visitor(client, site)
    joined = await first.peer.expect("agent_joined")
    assert joined["conversation_id"] == first.conversation_id
    chosen = joined["agent"]["id"]
    assert chosen in desks and joined["agent"]["name"] in ("Ann", "Ben")
    offer = await desks[chosen].assignment()
    assert offer["conversation"]["id"] == first.conversation_id
    assert offer["conversation"]["assignee_id"] == chosen and offer["reason"] == "routed"
    site_frame = await watcher.expect("conversation", event="assigned")
    assert site_frame["agent_id"] == chosen
    assigned = events.of("conversation.assigned")
    assert [(e.data["conversation_id"], e.data["policy"]) for e in assigned] == [
        (first.conversation_id, policy)
    ]
    # the assigned agent watches it now: the visitor's messages reach them without `watch`
    await first.peer.send(op="send", conversation_id=first.conversation_id, cid="v1", text="hi")
    await first.peer.expect("ack")
    assert (await desks[chosen].peer.expect("message"))["text"] == "hi"

    second = await visitor(client, site)
    other = (await second.peer.expect("agent_joined"))["agent"]["id"]
    # every policy spreads two chats over two free agents (load, turns, fewest open)
    assert other != chosen
    stored = await kernel.storage.get_conversation(site.site.id, second.conversation_id)
    assert (stored.state, stored.assignee_id) == ("assigned", other)


async def test_manual_policy_leaves_a_pool_agents_pick_from(aiohttp_client, tmp_path):
    client = await routing_client(aiohttp_client, tmp_path, ROUTING + 'policy = "manual"\n')
    kernel = app_kernel(client.app)
    site = await site_of(client)
    ann = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    one, two = await visitor(client, site), await visitor(client, site)
    assert (await one.peer.expect("queue"))["position"] == 1
    assert (await two.peer.expect("queue"))["position"] == 2
    await settle(client)
    frames = await ann.peer.quiet(0.1)
    assert [f["event"] for f in frames] == ["started", "started"]  # nothing pushed on anyone
    await ann.peer.send(op="pick", ref=1)
    picked = await ann.peer.expect("pick_ok")
    assert picked["conversation"]["id"] == one.conversation_id  # the oldest first
    assert (await one.peer.expect("agent_joined"))["agent"]["id"] == ann.agent.id
    assert (await two.peer.expect("queue"))["position"] == 1  # moved up
    await ann.peer.send(op="pick", conversation_id=two.conversation_id)
    refused = await ann.peer.expect("error")
    assert refused["code"] == "nothing_to_pick"  # full: capacity 1 holds for picks too
    resp = await client.post("/v1/queue/pick", json={}, headers=ann.auth())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "nothing_to_pick"


async def test_skill_capacity_and_presence_filters(aiohttp_client, tmp_path):
    client = await routing_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    sales = await console(client, await add_agent(kernel, site.site.id, "Sam", skills=("sales",)))
    support = await console(
        client, await add_agent(kernel, site.site.id, "Sue", capacity=1, skills=("support",))
    )
    away = await console(client, await add_agent(kernel, site.site.id, "Al", skills=("support",)))
    await away.online("away")

    wants_support = await visitor(client, site, department="support")
    assert (await wants_support.peer.expect("agent_joined"))["agent"]["id"] == support.agent.id
    overflow = await visitor(client, site, department="support")  # Sue is full, Al away
    waiting = await overflow.peer.expect("queue")
    assert (waiting["position"], waiting["available"]) == (1, True)
    assert waiting["eta_s"] > 0
    wants_sales = await visitor(client, site, department="sales")
    assert (await wants_sales.peer.expect("agent_joined"))["agent"]["id"] == sales.agent.id
    await settle(client)
    stored = await kernel.storage.get_conversation(site.site.id, overflow.conversation_id)
    assert stored.state == "queued"

    await away.online("online")  # an agent coming online drains the queue
    assert (await overflow.peer.expect("agent_joined"))["agent"]["id"] == away.agent.id


async def test_queue_drains_oldest_first_with_priority_and_positions_update(
    aiohttp_client, tmp_path
):
    client = await routing_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=1))
    busy = await visitor(client, site)
    await busy.peer.expect("agent_joined")
    line = [await visitor(client, site) for _ in range(3)]
    for place, guest in enumerate(line, start=1):
        assert (await guest.peer.expect("queue"))["position"] == place
    vip = line[2]  # a priority conversation jumps the line
    stored = await kernel.storage.get_conversation(site.site.id, vip.conversation_id)
    stored.priority = 5
    await kernel.storage.update_conversation(stored)
    service_of(kernel).changed(site.site.id, vip.conversation_id)  # read again at the next pass

    await desk.peer.send(op="resolve", conversation_id=busy.conversation_id)
    await desk.peer.expect("resolve_ok")
    assert (await busy.peer.expect("resolved"))["by"] == {"kind": "agent", "id": desk.agent.id}
    assert (await vip.peer.expect("agent_joined"))["agent"]["id"] == desk.agent.id
    await settle(client)
    first_in_line = await kernel.storage.get_conversation(site.site.id, line[0].conversation_id)
    assert first_in_line.state == "queued"

    resp = await client.post(
        f"/v1/conversations/{vip.conversation_id}/resolve", headers=desk.auth()
    )
    assert resp.status == 200 and (await resp.json())["state"] == "resolved"
    assert (await line[0].peer.expect("agent_joined"))["agent"]["id"] == desk.agent.id
    assert await line[1].peer.expect("queue", position=1)  # moved up (earlier: estimates)


async def test_capacity_raise_drains_and_a_negative_capacity_is_refused(aiohttp_client, tmp_path):
    client = await routing_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann", capacity=0))
    guest = await visitor(client, site)
    assert (await guest.peer.expect("queue"))["reason"] == "no_agents"  # no slot anywhere
    url = f"/v1/agents/{desk.agent.id}/capacity"
    for bad, code in ((-1, "invalid_request"), (101, "invalid_request"), (True, "invalid_request")):
        resp = await client.put(url, json={"capacity": bad}, headers=desk.auth())
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == code and "capacity" in error["message"]
    resp = await client.put(url, json={"capacity": 2}, headers=desk.auth())
    assert resp.status == 200 and (await resp.json())["capacity"] == 2
    assert (await guest.peer.expect("agent_joined"))["agent"]["id"] == desk.agent.id
    other = await console(client, await add_agent(kernel, site.site.id, "Bo"))
    resp = await client.put(url, json={"capacity": 3}, headers=other.auth())
    assert resp.status == 403  # only the agent themselves or an admin


async def test_business_hours_close_the_queue_and_opening_drains_it(aiohttp_client, tmp_path):
    client = await routing_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    admin = await console(client, site.admin, online=False)
    desk = await console(client, await add_agent(kernel, site.site.id, "Ann"))
    closed = {"timezone": "Europe/Paris", "closed_dates": [], "mon": [], "sun": []}
    resp = await client.put("/v1/business_hours", json=closed, headers=admin.auth())
    body = await resp.json()
    assert resp.status == 200 and body["source"] == "site" and body["open_now"] is False
    resp = await client.get("/v1/availability", headers=desk.auth())
    assert await resp.json() == {
        "open": False,
        "agents_online": 1,
        "available": False,
        "reason": "closed",
    }
    guest = await visitor(client, site)
    waiting = await guest.peer.expect("queue")
    assert (waiting["available"], waiting["reason"], waiting["eta_s"]) == (False, "closed", None)
    await settle(client)
    assert [f["op"] for f in await desk.peer.quiet(0.05)] == ["conversation"]  # started only

    always = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    resp = await client.put("/v1/business_hours", json=always, headers=admin.auth())
    assert (await resp.json())["open_now"] is True
    assert (await guest.peer.expect("agent_joined"))["agent"]["id"] == desk.agent.id

    for bad in ({"mon": ["18:00-09:00"]}, {"timezone": "Mars/Olympus"}, {"mon": ["9-5"]}):
        resp = await client.put("/v1/business_hours", json=bad, headers=admin.auth())
        assert resp.status == 400, bad
    resp = await client.put("/v1/business_hours", json=always, headers=desk.auth())
    assert resp.status == 403  # admins only
    resp = await client.delete("/v1/business_hours", headers=admin.auth())
    assert (await resp.json())["source"] == "none"


async def test_nobody_online_offers_the_message_form_and_queue_status_answers(
    aiohttp_client, tmp_path
):
    client = await routing_client(aiohttp_client, tmp_path)
    site = await site_of(client)
    guest = await visitor(client, site)
    waiting = await guest.peer.expect("queue")
    assert (waiting["available"], waiting["reason"]) == (False, "no_agents")
    await guest.peer.send(op="queue_status", conversation_id=guest.conversation_id, ref="q")
    again = await guest.peer.expect("queue", ref="q")
    assert (again["position"], again["state"], again["reason"]) == (1, "queued", "no_agents")
    resp = await client.get(
        f"/v1/conversations/{guest.conversation_id}/queue", headers=guest.auth()
    )
    assert (await resp.json())["position"] == 1
