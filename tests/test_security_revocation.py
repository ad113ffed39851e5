"""Revocation and identity re-checks (issue 13, holes 2 and 3; docs/security.md).

Two kernels on one bus and one storage stand for two workers (as in
tests/test_gateway_cluster.py); tests/test_security_cluster.py runs the same on two real
processes over Redis.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kefu.core.domain import ASSIGNED, Agent, Visitor, new_id
from kefu.core.web_app import create_app
from tests.chat_support import (
    FAST_HASH,
    PASSWORD,
    PollPeer,
    add_site,
    app_kernel,
    login,
    make_kernel,
    poll_peer,
    visitor_session,
    ws_peer,
)
from tests.rest_support import add_conversation, bearer
from tests.test_gateway_cluster import Shared

NEW_PASSWORD = "a brand new password"


@pytest.fixture
async def workers(aiohttp_client, tmp_path):
    shared = Shared()
    clients = []
    for _ in range(2):  # one data dir, as workers of one install: the same secret
        kernel = make_kernel(
            tmp_path, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        clients.append(await aiohttp_client(create_app(kernel)))
    return clients


async def ws_closed(peer, within: float = 1.0) -> tuple[dict | None, int | None]:
    """The fatal error frame and the close code of a WebSocket the server closes."""
    fatal = None
    async with asyncio.timeout(within):
        while True:
            msg = await peer.ws.receive()
            if msg.type.name in ("TEXT", "BINARY"):
                frame = msg.json()
                if frame.get("fatal"):
                    fatal = frame
                continue
            return fatal, peer.ws.close_code


async def poll_gone(peer: PollPeer, within: float = 1.0) -> str:
    """The 410 code a long-poll session answers once the server closed it."""
    async with asyncio.timeout(within):
        while True:
            try:
                await peer.recv(within)
            except ConnectionError:
                return peer.closed_with


async def refused_everywhere(clients, token: str) -> None:
    """The token is refused by REST, WebSocket and long-poll on every worker."""
    for client in clients:
        resp = await client.get("/v1/conversations", headers=bearer(token))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
        ws = await client.ws_connect(f"/v1/ws?token={token}")
        frame = await ws.receive_json(timeout=2)
        assert frame["code"] == "invalid_token"
        await ws.receive(timeout=2)
        assert ws.close_code == 4401
        resp = await client.post("/v1/poll/open", headers=bearer(token))
        assert resp.status == 401


async def test_a_password_change_closes_ws_and_longpoll_on_every_worker_within_1s(workers):
    """Holes 2 and 3: before, the old token stayed valid for 12 h after a password change
    and open connections kept working."""
    one, two = workers
    s = await add_site(app_kernel(one.app))
    admin = await login(one, s.site.id, s.admin.email)
    old = await login(two, s.site.id, s.agent.email)
    ws_one, ws_two = await ws_peer(one, old), await ws_peer(two, old)
    poll_two = await poll_peer(two, old)
    started = time.monotonic()
    resp = await one.post(
        f"/v1/agents/{s.agent.id}/password", json={"password": NEW_PASSWORD}, headers=bearer(admin)
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["sessions_ended"] == 1
    results = await asyncio.gather(ws_closed(ws_one), ws_closed(ws_two), poll_gone(poll_two))
    elapsed = time.monotonic() - started
    for fatal, code in results[:2]:
        assert code == 4403 and fatal["code"] == "revoked"
    assert results[2] == "revoked"
    assert elapsed < 1.0
    await refused_everywhere(workers, old)
    await login(two, s.site.id, s.agent.email, NEW_PASSWORD)  # the new password works


async def test_an_agent_changes_its_own_password_with_the_current_one(workers):
    one, _ = workers
    s = await add_site(app_kernel(one.app))
    token = await login(one, s.site.id, s.agent.email)
    path = f"/v1/agents/{s.agent.id}/password"
    resp = await one.post(path, json={"password": NEW_PASSWORD}, headers=bearer(token))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "wrong_password"
    body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    resp = await one.post(path, json=body, headers=bearer(token))
    assert resp.status == 200
    fresh = (await resp.json())["token"]
    assert (await one.get("/v1/conversations", headers=bearer(fresh))).status == 200
    assert (await one.get("/v1/conversations", headers=bearer(token))).status == 401
    # the REST PATCH with a password revokes the same way
    admin = await login(one, s.site.id, s.admin.email)
    resp = await one.patch(
        f"/v1/agents/{s.agent.id}", json={"password": PASSWORD}, headers=bearer(admin)
    )
    assert resp.status == 200
    assert (await one.get("/v1/conversations", headers=bearer(fresh))).status == 401


async def test_logout_ends_one_session_and_logout_all_every_one(workers):
    """Hole 3: logout did not revoke anything."""
    one, two = workers
    s = await add_site(app_kernel(one.app))
    first, second, third = [await login(one, s.site.id, s.agent.email) for _ in range(3)]
    listed = await (await one.get("/v1/auth/sessions", headers=bearer(first))).json()
    assert len(listed["sessions"]) == 3
    assert sum(x["current"] for x in listed["sessions"]) == 1
    ws_first, ws_second = await ws_peer(two, first), await ws_peer(two, second)
    assert (await one.post("/v1/auth/logout", headers=bearer(first))).status == 204
    fatal, code = await ws_closed(ws_first)
    assert code == 4403 and fatal["code"] == "revoked"
    await refused_everywhere(workers, first)
    assert (await two.get("/v1/conversations", headers=bearer(second))).status == 200
    await ws_second.send(op="ping", ref="p")
    await ws_second.expect("pong")  # the other session's connection stays
    resp = await two.post("/v1/auth/logout-all", headers=bearer(third))
    assert (await resp.json()) == {"sessions_ended": 2}
    assert (await ws_closed(ws_second))[1] == 4403
    await refused_everywhere(workers, second)
    await refused_everywhere(workers, third)


async def test_disable_enable_and_delete_an_agent(workers):
    """Hole 3: there was no API to disable or delete an agent."""
    one, two = workers
    s = await add_site(app_kernel(one.app))
    admin = bearer(await login(one, s.site.id, s.admin.email))
    token = await login(two, s.site.id, s.agent.email)
    peer = await ws_peer(two, token)
    resp = await one.post(f"/v1/agents/{s.agent.id}/disable", headers=admin)
    assert resp.status == 200
    assert (await resp.json()) == {
        "agent_id": s.agent.id, "disabled": True, "deleted": False, "sessions_ended": 1,
    }  # fmt: skip
    assert (await ws_closed(peer))[1] == 4403
    await refused_everywhere(workers, token)
    body = {"site_id": s.site.id, "email": s.agent.email, "password": PASSWORD}
    resp = await two.post("/v1/auth/login", json=body)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "account_disabled"
    listed = await (await one.get("/v1/agents", headers=admin)).json()
    assert {a["id"]: a["disabled"] for a in listed["agents"]}[s.agent.id] is True
    assert (await one.post(f"/v1/agents/{s.agent.id}/enable", headers=admin)).status == 200
    token = await login(two, s.site.id, s.agent.email)
    peer = await ws_peer(one, token)
    # an admin cannot lock itself out; an agent cannot disable anyone
    resp = await one.post(f"/v1/agents/{s.admin.id}/disable", headers=admin)
    assert resp.status == 400
    resp = await one.post(f"/v1/agents/{s.admin.id}/disable", headers=bearer(token))
    assert resp.status == 403
    assert (await one.delete(f"/v1/agents/{s.agent.id}", headers=admin)).status == 204
    assert (await ws_closed(peer))[1] == 4403
    await refused_everywhere(workers, token)
    assert (await one.get(f"/v1/agents/{s.agent.id}", headers=admin)).status == 404
    listed = await (await one.get("/v1/agents", headers=admin)).json()
    assert s.agent.id not in {a["id"] for a in listed["agents"]}
    resp = await two.post("/v1/auth/login", json=body)
    assert resp.status == 401
    # the e-mail is free again
    new = {"email": s.agent.email, "name": "Bob II", "password": PASSWORD}
    assert (await one.post("/v1/agents", json=new, headers=admin)).status == 201
    # another site's admin cannot touch this site's agents
    other = await add_site(app_kernel(one.app))
    foreign = bearer(await login(one, other.site.id, other.admin.email))
    assert (await one.post(f"/v1/agents/{s.admin.id}/disable", headers=foreign)).status == 404
    assert (await one.delete(f"/v1/agents/{s.admin.id}", headers=foreign)).status == 404


async def test_a_demoted_admin_open_websocket_loses_admin_rights_at_once(workers):
    """Hole 2: a demoted admin still resolved others' conversations over its open socket."""
    one, two = workers
    kernel = app_kernel(one.app)
    s = await add_site(kernel)
    boss = await kernel.storage.create_agent(
        Agent(new_id(), s.site.id, "boss@x.test", "Boss", FAST_HASH, ["admin", "agent"])
    )
    boss_token = bearer(await login(one, s.site.id, boss.email))
    admin_ws = await ws_peer(two, await login(two, s.site.id, s.admin.email))
    first, second = [
        await add_conversation(
            kernel,
            s.site.id,
            (await kernel.storage.upsert_visitor(Visitor(new_id(), s.site.id))).id,
            state=ASSIGNED,
            assignee_id=s.agent.id,
        )
        for _ in range(2)
    ]
    # as an admin it may resolve a conversation assigned to someone else
    await admin_ws.send(op="resolve", conversation_id=first.id, ref="r1")
    await admin_ws.expect("resolve_ok", ref="r1")
    resp = await one.patch(
        f"/v1/agents/{s.admin.id}", json={"roles": ["agent"]}, headers=boss_token
    )
    assert resp.status == 200
    identity = await admin_ws.expect("identity", within=1.0)
    assert identity["principal"]["roles"] == ["agent"]
    await admin_ws.send(op="resolve", conversation_id=second.id, ref="r2")
    refused = await admin_ws.expect("error", ref="r2")
    assert refused["code"] == "forbidden"


async def test_a_deleted_agent_open_socket_can_no_longer_read_or_send(workers):
    """Hole 2: a deleted agent's open socket could still read history, send and add notes."""
    one, two = workers
    kernel = app_kernel(one.app)
    s = await add_site(kernel)
    admin = bearer(await login(one, s.site.id, s.admin.email))
    visitor = await visitor_session(one, s.site.widget_key)
    vpeer = await ws_peer(one, visitor["token"])
    await vpeer.send(op="start")
    conversation_id = (await vpeer.expect("started"))["conversation"]["id"]
    agent_ws = await ws_peer(two, await login(two, s.site.id, s.agent.email))
    agent_poll = await poll_peer(one, await login(one, s.site.id, s.agent.email))
    await agent_ws.send(op="watch", conversation_id=conversation_id)
    await agent_ws.expect("watching")
    assert (await one.delete(f"/v1/agents/{s.agent.id}", headers=admin)).status == 204
    fatal, code = await ws_closed(agent_ws)
    assert code == 4403 and fatal["code"] == "revoked"
    assert await poll_gone(agent_poll) == "revoked"
    await vpeer.send(op="send", conversation_id=conversation_id, cid="after", text="hello?")
    await vpeer.expect("ack")
    for k in (kernel, app_kernel(two.app)):  # no connection of the agent is left anywhere
        assert not [c for c in k.gateway.connections(s.site.id) if c.principal.id == s.agent.id]


async def test_the_periodic_recheck_closes_what_a_lost_announcement_missed(
    aiohttp_client, tmp_path
):
    """A change published while the bus was down is caught by the periodic re-check."""
    client = await aiohttp_client(
        create_app(make_kernel(tmp_path, "[gateway]\nrecheck_interval_s = 0.2\n"))
    )
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    token = await login(client, s.site.id, s.agent.email)
    peer = await ws_peer(client, token)
    # end the session behind the plugin's back: nothing is announced
    for record in await kernel.storage.list_records(s.site.id, "auth.session"):
        await kernel.storage.delete_record(s.site.id, "auth.session", record.id)
    assert (await ws_closed(peer, within=2.0))[1] == 4403
