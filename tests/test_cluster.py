"""Several real kefu processes on PostgreSQL and Redis (issue 12): delivery and routing across
workers and nodes, then faults with traffic flowing.

One cluster serves the whole module: node ``a`` and node ``b`` (``kefu run``, one process each,
their own ports and data dirs) and node ``c`` (``kefu run`` with two workers on one port), all
on one fresh PostgreSQL schema, one private ``redis-server`` (restarted as a fault) and one
secret. Every process is killed and the schema dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.cluster_support import (
    Client,
    LongPoll,
    Node,
    PrivateRedis,
    Stats,
    agent_token,
    client_port,
    pg_fetch,
    post_json,
    postgres_client_ports,
    require_cluster_services,
    socket_owner,
    spawn,
    until,
    visitor_token,
)

pytestmark = pytest.mark.needs_service


@dataclass
class Env:
    schema: str
    redis: PrivateRedis
    a: Node
    b: Node
    c: Node
    widget_key: str
    password: str

    @property
    def nodes(self) -> list[Node]:
        return [self.a, self.b, self.c]

    def pids(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.processes()]


_pg = pg_fetch


async def _start(env_dir: Path, schema: str, redis: PrivateRedis) -> tuple[Node, Node, Node]:
    common = {
        "schema": schema,
        "redis": redis.url,
        "prefix": f"kefu-cl-{secrets.token_hex(3)}:",
        "secret": secrets.token_urlsafe(40),
    }
    a = Node(env_dir, "a", **common)
    b = Node(env_dir, "b", **common)
    c = Node(env_dir, "c", workers=2, **common)
    await a.start()  # first and alone: it creates the tables and the demo site
    await asyncio.gather(b.start(), c.start())
    return a, b, c


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_cluster_services()
    root = tmp_path_factory.mktemp("cluster")
    schema = f"kefu_cluster_{secrets.token_hex(5)}"
    redis = PrivateRedis(root)
    nodes: tuple[Node, ...] = ()
    try:
        redis.start()
        nodes = asyncio.run(_start(root, schema, redis))
        banner = nodes[0].banner()
        widget_key = re.search(r"widget key '([^']+)'", banner)
        password = re.search(r"password '([^']+)'", banner)
        assert widget_key and password, banner
        yield Env(schema, redis, *nodes, widget_key[1], password[1])
    finally:
        for node in nodes:
            node.kill()
        redis.stop()
        with contextlib.suppress(Exception):
            asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def _stored(env: Env, conversation_ids: list[str]) -> dict[str, dict[int, str]]:
    """conversation -> {seq: cid} as PostgreSQL holds it."""
    rows = await _pg(
        f'SELECT conversation_id, seq, cid FROM "{env.schema}".messages '
        "WHERE conversation_id = ANY($1::text[])",
        conversation_ids,
    )
    out: dict[str, dict[int, str]] = {c: {} for c in conversation_ids}
    for row in rows:
        out[row["conversation_id"]][row["seq"]] = row["cid"]
    return out


async def _admin(env: Env, http: aiohttp.ClientSession, base: str) -> str:
    return await agent_token(http, base, "demo", "admin@example.com", env.password)


# -- 1. two workers and two nodes ------------------------------------------------------------


async def _exchange(pairs: list[tuple[Client, Client, str]], count: int = 25) -> None:
    """Each side of each conversation sends ``count`` messages, interleaved; then every
    message must have reached the other side exactly once, in its sender's order."""
    for _ in range(count):
        for visitor, agent, conversation_id in pairs:
            visitor.send_message(conversation_id)
            agent.send_message(conversation_id)
        await asyncio.sleep(0.02)
    everyone = [c for visitor, agent, _ in pairs for c in (visitor, agent)]

    def done() -> bool:
        for visitor, agent, conversation_id in pairs:
            for me, other in ((visitor, agent), (agent, visitor)):
                if me.pending or len(_shown(other, conversation_id, me.kind)) < count:
                    return False
        return True

    await until(done, 30, "every message acknowledged and delivered")
    await asyncio.sleep(0.3)  # a second copy would come now
    for visitor, agent, conversation_id in pairs:
        for me, other in ((visitor, agent), (agent, visitor)):
            shown = _shown(other, conversation_id, me.kind)
            sent = [f"{me.name}.{n}" for n in range(1, count + 1)]
            assert [cid for _, cid in shown] == sent, (me.name, shown)  # once, in order
            assert {cid: seq for seq, cid in shown} == {
                cid: me.acked[cid][1] for cid in sent
            }  # the seq acknowledged to the sender
    for client in everyone:
        assert not client.dups and not client.stats.twice, (client.name, client.dups[:5])
        assert client.drops == 0, client.name


def _shown(client: Client, conversation_id: str, kind: str) -> list[tuple[int, str]]:
    """(seq, cid) of the messages from ``kind`` shown to ``client``, in arrival order."""
    conv = client.convs.get(conversation_id)
    return [(seq, cid) for seq, cid, k in (conv.order if conv else []) if k == kind]


async def _pair(
    http: aiohttp.ClientSession, env: Env, visitor: Client, agent: Client
) -> tuple[Client, Client, str]:
    await visitor.connect()
    await agent.connect()
    conversation_id = await visitor.start()
    await agent.watch(conversation_id)
    return visitor, agent, conversation_id


async def _check_stored(env: Env, pairs: list[tuple[Client, Client, str]]) -> None:
    stored = await _stored(env, [c for _, _, c in pairs])
    for visitor, agent, conversation_id in pairs:
        for me in (visitor, agent):
            for cid, (conv, seq) in me.acked.items():
                assert stored[conv].get(seq) == cid, (cid, seq)
        cids = list(stored[conversation_id].values())
        assert len(cids) == len(set(cids))


async def test_two_nodes_visitor_and_agent_apart_long_poll_alternating(env):
    """(b) Separate nodes: the visitor's long-poll requests alternate between a and b, its
    agent is on b; a second visitor on a over WebSocket. Once, in order, both ways."""
    stats = Stats()
    async with aiohttp.ClientSession() as http:
        admin = await _admin(env, http, env.b.base)
        pairs = []
        clients: list[Client] = []
        try:
            for n, make in enumerate(
                (
                    lambda t, n: LongPoll(f"lv{n}", "visitor", t, [env.a.base, env.b.base], stats),
                    lambda t, n: Client(f"wv{n}", "visitor", t, [env.a.base], stats),
                )
            ):
                token = await visitor_token(http, env.a.base, env.widget_key)
                visitor = make(token, n)
                agent = Client(f"ag{n}", "agent", admin, [env.b.base], stats)
                clients += [visitor, agent]
                pairs.append(await _pair(http, env, visitor, agent))
            await _exchange(pairs)
            served = pairs[0][0].served  # type: ignore[attr-defined]
            assert served.get(env.a.base, 0) > 5 and served.get(env.b.base, 0) > 5, served
            await _check_stored(env, pairs)
        finally:
            for client in clients:
                await client.close()
    print(f"\ntwo nodes: {stats.figures()} long-poll requests per node: {served}")


async def test_two_workers_on_one_port_visitor_and_agent_on_different_workers(env):
    """(a) ``kefu run --workers 2``: an agent on one worker, a visitor on the other (found
    from /proc: which worker holds the socket), and a long-poll visitor opening a new TCP
    connection per request, so its requests spread over both workers."""
    stats = Stats()
    workers = env.c.worker_pids()
    assert len(workers) == 2, workers
    async with aiohttp.ClientSession() as http:
        admin = await _admin(env, http, env.c.base)
        clients: list[Client] = []
        try:
            agent = Client("ag", "agent", admin, [env.c.base], stats)
            clients.append(agent)
            await agent.connect()
            agent_worker = await asyncio.to_thread(
                socket_owner, workers, env.c.port, client_port(agent)
            )
            assert agent_worker in workers
            token = await visitor_token(http, env.c.base, env.widget_key)
            for attempt in range(40):  # new connections until one lands on the other worker
                visitor = Client(f"wv{attempt}", "visitor", token, [env.c.base], stats)
                await visitor.connect()
                owner = await asyncio.to_thread(
                    socket_owner, workers, env.c.port, client_port(visitor)
                )
                if owner != agent_worker:
                    break
                await visitor.close()
            else:
                pytest.fail("40 connections all landed on the agent's worker")
            clients.append(visitor)
            pairs = [(visitor, agent, await visitor.start())]
            await agent.watch(pairs[0][2])
            token = await visitor_token(http, env.c.base, env.widget_key)
            roamer = LongPoll("lv", "visitor", token, [env.c.base], stats, fresh=True)
            agent2 = Client("ag2", "agent", admin, [env.c.base], stats)
            clients += [roamer, agent2]
            pairs.append(await _pair(http, env, roamer, agent2))
            await _exchange(pairs)
            await _check_stored(env, pairs)
        finally:
            for client in clients:
                await client.close()
    print(f"\ntwo workers: {stats.figures()}")


async def test_routing_across_nodes_never_assigns_twice_or_over_capacity(env):
    """Six agents with capacity 2, three on a and three on b, and 30 visitors starting at
    once on a, b and c: 12 assigned, each once, nobody over 2; storage agrees."""
    stats = Stats()
    bases = [env.a.base, env.b.base, env.c.base]
    clients: list[Client] = []
    async with aiohttp.ClientSession() as http:
        admin = await _admin(env, http, env.a.base)
        boss = {"email": "boss@routing.test", "name": "Boss", "password": "boss-password-1"}
        site = await post_json(
            http, f"{env.a.base}/v1/sites", {"name": "routing", "admin": boss}, admin
        )
        site_admin = await agent_token(
            http, env.b.base, site["id"], boss["email"], boss["password"]
        )
        try:
            agents = []
            for n in range(6):
                email = f"agent{n}@routing.test"
                body = {"email": email, "name": f"A{n}", "password": "agent-password-1",
                        "roles": ["agent"], "capacity": 2}  # fmt: skip
                await post_json(http, f"{env.a.base}/v1/agents", body, site_admin)
                base = bases[n % 2]
                token = await agent_token(http, base, site["id"], email, body["password"])
                agent = Client(f"ag{n}", "agent", token, [base], stats)
                agent.record = {"assignment"}
                await agent.connect()
                reply = await agent.request({"op": "presence", "status": "online"})
                assert reply["op"] == "presence_ok", reply
                agents.append(agent)
            clients += agents
            visitors = []
            for n in range(30):
                base = bases[n % 3]
                token = await visitor_token(http, base, site["widget_key"])
                visitor = Client(f"v{n}", "visitor", token, [base], stats)
                visitor.record = {"agent_joined"}
                await visitor.connect()
                visitors.append(visitor)
            clients += visitors
            started = await asyncio.gather(*(v.start() for v in visitors))
            assert len(set(started)) == 30

            def assignments() -> list[dict]:
                return [f for a in agents for f in a.recorded]

            await until(lambda: len(assignments()) >= 12, 60, "12 assignments")
            await asyncio.sleep(2.0)  # a second assignment, or a 13th, would come now
            frames = [(f["conversation"]["id"], a.name) for a in agents for f in a.recorded]
            per_conversation: dict[str, int] = {}
            for conversation_id, _ in frames:
                per_conversation[conversation_id] = per_conversation.get(conversation_id, 0) + 1
            assert len(frames) == 12 and set(per_conversation.values()) == {1}, frames
            assert all(len(a.recorded) == 2 for a in agents), [len(a.recorded) for a in agents]
            assert all(len(v.recorded) <= 1 for v in visitors)
            rows = await _pg(
                f'SELECT id, state, assignee_id FROM "{env.schema}".conversations '
                "WHERE site_id = $1",
                site["id"],
            )
            assert len(rows) == 30
            held: dict[str, int] = {}
            for row in rows:
                if row["assignee_id"] is not None:
                    held[row["assignee_id"]] = held.get(row["assignee_id"], 0) + 1
            assert sum(held.values()) == 12 and max(held.values()) == 2, held
            assert {r["id"] for r in rows if r["state"] == "assigned"} == set(per_conversation)
            # one process at a time runs the site's passes (the routing lease): every
            # assignment was made by the same routing service
            routed_by = await _pg(
                f"SELECT DISTINCT (meta::jsonb)->>'assigned_by' AS origin FROM \"{env.schema}\""
                ".conversations WHERE site_id = $1 AND state = 'assigned'",
                site["id"],
            )
            assert len(routed_by) == 1, routed_by
        finally:
            for client in clients:
                await client.close()
    print(f"\nrouting: 30 visitors, 6 agents x 2: 12 assigned once each; {stats.figures()}")


async def test_one_open_conversation_per_visitor_when_processes_race(env):
    """One visitor starts a conversation on every process at once (WebSocket ``start`` on a,
    on b and on new connections to c's two workers) while leaving offline messages on a and
    b: every answer names one conversation, created once, and PostgreSQL holds one open
    conversation for the visitor (the per-process lock serialises only its own starts: the
    partial unique index decides between processes). Then resolved, and raced again."""
    stats = Stats()
    rounds, fronts = 3, [env.a.base, env.b.base, env.c.base, env.c.base, env.c.base]
    async with aiohttp.ClientSession() as http:
        admin = await _admin(env, http, env.a.base)
        token = await visitor_token(http, env.a.base, env.widget_key)
        clients = [Client(f"tab{n}", "visitor", token, [b], stats) for n, b in enumerate(fronts)]
        try:
            await asyncio.gather(*(c.connect() for c in clients))

            async def leave(base: str, n: int) -> dict:
                body = {"email": "race@example.com", "text": f"call me {n}", "cid": f"off{n}"}
                async with http.post(
                    f"{base}/v1/offline_messages",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    reply = await resp.json()
                    assert resp.status == 201, reply
                    return {"id": reply["conversation_id"], "created": reply["created"]}

            async def start(client: Client) -> dict:
                reply = await client.request({"op": "start"})
                assert reply["op"] == "started", reply
                return {"id": reply["conversation"]["id"], "created": reply["created"]}

            seen: list[str] = []
            for round_ in range(rounds):
                answers = await asyncio.gather(
                    *(start(c) for c in clients),
                    leave(env.a.base, 2 * round_),
                    leave(env.b.base, 2 * round_ + 1),
                )
                ids = {a["id"] for a in answers}
                assert len(ids) == 1, answers
                assert sum(a["created"] for a in answers) == 1, answers
                (conversation_id,) = ids
                rows = await _pg(
                    f'SELECT c.id FROM "{env.schema}".conversations c JOIN "{env.schema}"'
                    ".conversations mine ON mine.site_id = c.site_id AND mine.visitor_id = "
                    "c.visitor_id WHERE mine.id = $1 AND c.state <> 'resolved'",
                    conversation_id,
                )
                assert [r["id"] for r in rows] == [conversation_id], rows
                seen.append(conversation_id)
                for _ in range(5):  # routing may assign it meanwhile: the state changed
                    async with http.post(
                        f"{env.b.base}/v1/conversations/{conversation_id}/resolve",
                        headers={"Authorization": f"Bearer {admin}"},
                    ) as resp:
                        if resp.status == 200:
                            break
                        assert resp.status == 409, await resp.text()
                else:
                    pytest.fail(f"{conversation_id} could not be resolved")
            assert len(set(seen)) == rounds
        finally:
            for client in clients:
                await client.close()
    print(f"\none open conversation: {rounds} rounds of {len(fronts) + 2} racing opens, one each")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 64


async def test_an_upload_through_one_node_is_served_by_every_other(env):
    """Uploads in storage (``[uploads] store = "auto"`` on PostgreSQL): a file uploaded
    through node a is downloaded from node b and from both workers of c, and a message on b
    may carry it as its attachment (checked there against the stored blob). With the files
    in each node's data dir, b answered 404 and refused the attachment."""
    async with aiohttp.ClientSession() as http:
        token = await visitor_token(http, env.a.base, env.widget_key)
        auth = {"Authorization": f"Bearer {token}"}
        form = aiohttp.FormData()
        form.add_field("file", PNG, filename="receipt.png", content_type="image/png")
        async with http.post(f"{env.a.base}/v1/uploads", data=form, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            upload = await resp.json()
        assert not list((env.a.dir / "data").glob("uploads/**/*.png"))  # no file on a
        admin = await _admin(env, http, env.b.base)
        for base, who in [
            (env.b.base, auth),
            (env.b.base, {"Authorization": f"Bearer {admin}"}),
        ] + [
            (env.c.base, auth)
        ] * 6:  # six requests to c: new connections, spread over its two workers
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(f"{base}{upload['url']}", headers=who) as resp:
                    assert resp.status == 200, (base, resp.status, await resp.text())
                    assert await resp.read() == PNG
                    assert resp.headers["Content-Type"] == "image/png"
                    assert resp.headers["X-Content-Type-Options"] == "nosniff"
                    assert resp.headers["Content-Disposition"] == 'inline; filename="receipt.png"'
        async with http.get(f"{env.b.base}{upload['url']}") as resp:
            assert resp.status == 401  # still only for callers of the site
        missing = upload["url"].rsplit("/", 1)[0] + "/aaaaaaaaaaaaaaaaaaaaaa-gone.png"
        async with http.get(f"{env.b.base}{missing}", headers=auth) as resp:
            assert resp.status == 404

        visitor = Client("up", "visitor", token, [env.b.base], Stats())
        try:
            await visitor.connect()
            conversation_id = await visitor.start()
            frame = {"op": "send", "conversation_id": conversation_id, "cid": "pic",
                     "type": "image", "attachment": {"id": upload["id"]}}  # fmt: skip
            await visitor.send_frame(frame)
            await until(lambda: "pic" in visitor.acked, 15, "the image message acknowledged")
        finally:
            await visitor.close()
    rows = await _pg(
        f'SELECT attachment FROM "{env.schema}".messages WHERE conversation_id = $1 AND cid = $2',
        conversation_id,
        "pic",
    )
    attachment = orjson.loads(rows[0]["attachment"])
    assert (attachment["id"], attachment["size"], attachment["mime"]) == (
        upload["id"],
        len(PNG),
        "image/png",
    )
    print(f"\nupload on a ({len(PNG)} bytes): served by b and c, attached on b")


# -- 2. faults with traffic flowing ----------------------------------------------------------

RATE = 520  # messages per second offered, over every client
PAIRS = 20
SECONDS = 10.0


async def _load(
    env: Env, label: str, fronts: list[list[str]], fault: Any, seconds: float = SECONDS
) -> Stats:
    """PAIRS conversations (visitor i dialling ``fronts[i % len(fronts)]``, its agent on b),
    RATE messages/s offered for ``seconds`` (60 % from visitors), ``fault(env)`` run
    meanwhile. Then drain, catch up, and check every figure against PostgreSQL."""
    stats = Stats()
    clients: list[Client] = []
    pairs: list[tuple[Client, Client, str]] = []
    async with aiohttp.ClientSession() as http:
        admin = await _admin(env, http, env.b.base)
        try:
            for i in range(PAIRS):
                front = fronts[i % len(fronts)]
                token = await visitor_token(http, front[0], env.widget_key)
                visitor = Client(f"{label}v{i}", "visitor", token, front, stats)
                agent = Client(f"{label}a{i}", "agent", admin, [env.b.base, env.a.base], stats)
                clients += [visitor, agent]
                pairs.append(await _pair(http, env, visitor, agent))
            began = time.monotonic()
            faulting = asyncio.ensure_future(fault(env))
            credit, last_retry, tick = 0.0, began, began
            while (now := time.monotonic()) - began < seconds:
                credit += (now - tick) * RATE
                tick = now
                while credit >= 1:
                    for visitor, agent, conversation_id in pairs:
                        if credit < 1:
                            break
                        sender = visitor if stats.sent % 5 < 3 else agent
                        sender.send_message(conversation_id)
                        credit -= 1
                if now - last_retry > 1.0:  # what a client does with silence or a gap
                    last_retry = now
                    for client in clients:
                        client.resend()
                        for conversation_id in list(client.gaps):
                            if client.ws is not None:
                                client.gaps.discard(conversation_id)
                                spawn(_quiet(client.resume(client.convs[conversation_id])))
                await asyncio.sleep(0.01)
            offered = stats.sent / (time.monotonic() - began)
            print(f"\n{label}: load over: {stats.figures()}")
            await faulting

            # drain: every message acknowledged, every client connected and caught up
            async def settled() -> bool:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    if all(
                        c.ws is not None and c.reconnecting is None for c in clients
                    ) and not any(c.pending for c in clients):
                        return True
                    for client in clients:
                        client.resend(older_than=20.0)
                    await asyncio.sleep(0.2)
                return False

            drained = await settled()
            print(f"{label}: drained={drained} after {time.monotonic() - began:.1f} s")
            for client in clients:  # the final catch-up: resume until it succeeds
                for conv in list(client.convs.values()):
                    for _ in range(6):
                        try:
                            await client.resume(conv)
                            break
                        except (ConnectionError, TimeoutError):
                            await until(lambda c=client: c.ws is not None, 30, "reconnected")
            await asyncio.sleep(0.5)
            conversation_ids = [c for _, _, c in pairs]
            stored = await _stored(env, conversation_ids)
        finally:
            for client in clients:
                await client.close()

    total = sum(len(s) for s in stored.values())
    lost = [
        (c.name, cid, seq)
        for c in clients
        for cid, (conv, seq) in c.acked.items()
        if stored[conv].get(seq) != cid
    ]
    twice_stored = [c for c, s in stored.items() if len(set(s.values())) != len(s)]
    missing = {
        c.name: sorted(set(stored[conv]) - set(c.convs[conv].seqs))[:5]
        for c in clients
        for conv in c.convs
        if set(stored[conv]) - set(c.convs[conv].seqs)
    }
    wrong = [
        (c.name, seq)
        for c in clients
        for conv in c.convs
        for seq, cid in c.convs[conv].seqs.items()
        if stored[conv].get(seq) != cid
    ]
    unresumed = [c.name for c in clients if c.drops and not c.resumed]
    print(
        f"\n{label}: offered {offered:.0f} msg/s for {seconds:.0f} s; {stats.figures()}; "
        f"stored={total} acked_lost={len(lost)} stored_twice={len(twice_stored)} "
        f"clients_dropped={sum(1 for c in clients if c.drops)} unresumed={len(unresumed)}"
    )
    assert offered >= 500, offered
    assert drained, [(c.name, len(c.pending), c.ws is not None) for c in clients if c.pending]
    assert not lost, lost[:10]
    assert not twice_stored and not stats.twice, (twice_stored, stats.twice[:10])
    assert not wrong, wrong[:10]
    assert not missing, missing
    assert not unresumed, unresumed
    assert stats.acked == stats.sent
    if stats.errors.get("internal_error"):
        # seen during the Redis restart: a send already stored and acknowledged gets
        # internal_error as well, is not published, and message.stored is never emitted
        pytest.xfail(
            "bug: Gateway.deliver -> fan_conversation -> _publish -> directory.nodes() raises "
            "redis ConnectionError after the ack while Redis is down (plugins/gateway/"
            "fanout.py): the send answers internal_error, no fan-out, no message.stored"
        )
    return stats


async def _quiet(coro: Any) -> None:
    with contextlib.suppress(ConnectionError, TimeoutError):
        await coro


def _fronts(env: Env) -> list[list[str]]:
    """Half the visitors on node a (they reconnect to b), half on c's port."""
    return [[env.a.base, env.b.base], [env.c.base]]


@pytest.mark.timeout(180)
async def test_kill_9_of_a_node_and_of_a_worker_with_traffic_flowing(env):
    """kill -9 of node a (its visitors reconnect to b) and of one of c's workers (its
    clients reconnect to c's port; the supervisor restarts the worker)."""

    async def fault(env: Env) -> None:
        await asyncio.sleep(3.0)
        env.a.kill()
        await asyncio.sleep(3.0)
        victim = env.c.worker_pids()[0]
        os.kill(victim, 9)

    try:
        stats = await _load(env, "kill", _fronts(env), fault)
        assert stats.reconnects >= PAIRS // 2  # every visitor of node a at least
    finally:
        await env.a.start()  # back for the next tests
        await until(lambda: len(env.c.worker_pids()) == 2, 30, "c's worker restarted")
        await env.c.ready()


@pytest.mark.timeout(180)
async def test_redis_restart_with_traffic_flowing(env):
    """Redis stopped (SHUTDOWN NOSAVE: everything in it is gone) for 2 s, then started
    again on the same port: nothing acknowledged lost, clients catch up by resume."""

    async def fault(env: Env) -> None:
        await asyncio.sleep(3.0)
        await asyncio.to_thread(env.redis.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(env.redis.start)

    await _load(env, "redis", _fronts(env), fault)


@pytest.mark.timeout(180)
async def test_postgres_connection_kill_with_traffic_flowing(env):
    """pg_terminate_backend of every connection kefu's processes hold, twice."""
    killed: list[int] = []

    async def fault(env: Env) -> None:
        for _ in range(2):
            await asyncio.sleep(3.0)
            ports = await asyncio.to_thread(postgres_client_ports, env.pids())
            rows = await _pg(
                "SELECT pg_terminate_backend(pid) AS gone FROM pg_stat_activity "
                "WHERE datname = 'test' AND pid <> pg_backend_pid() "
                "AND client_port = ANY($1::int[])",
                ports,
            )
            killed.append(sum(1 for r in rows if r["gone"]))

    await _load(env, "postgres", _fronts(env), fault)
    print(f"postgres backends terminated: {killed}")
    assert all(killed), killed
