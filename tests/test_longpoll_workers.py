"""Long-poll sessions across worker processes, session caps and byte-bounded outboxes.

Two kernels over one bus and one storage stand for two workers (as in
tests/test_gateway_cluster.py); the last test runs two real ``kefu run``
processes on the Redis bus and one SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import re
import secrets
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from kefu.core.plugins import DEFAULT_PLUGINS
from kefu.core.web_app import create_app
from kefu.plugins.transport_longpoll.sessions import node_key
from tests.chat_support import (
    PollPeer,
    add_site,
    app_kernel,
    login,
    make_kernel,
    visitor_session,
    ws_peer,
)
from tests.conftest import service_unavailable
from tests.test_crash_recovery import Server
from tests.test_gateway_cluster import Shared

FAST = "[gateway]\nrate = 1000\nburst = 1000\n"


class Roaming(PollPeer):
    """A long-poll client whose consecutive requests go to the next worker in turn
    (or to the one named with :meth:`via`)."""

    def __init__(self, clients: list[Any], session: str) -> None:
        self._turn = itertools.cycle(clients)
        self._pinned: Any = None
        super().__init__(clients[0], session)

    @property
    def client(self) -> Any:
        return self._pinned or next(self._turn)

    @client.setter
    def client(self, value: Any) -> None:
        pass  # the turn decides

    @classmethod
    async def open(cls, clients: list[Any], token: str) -> Roaming:
        resp = await clients[0].post("/v1/poll/open", json={"token": token})
        assert resp.status == 200, await resp.text()
        peer = cls(clients, (await resp.json())["session"])
        assert (await peer.expect("hello"))["protocol"] == 1
        return peer

    async def via(self, client: Any, wait: float = 1.0) -> list[dict]:
        """One ``recv`` on that worker; ConnectionError (``closed_with`` set) when refused."""
        self._pinned = client
        try:
            return await self.recv(wait)
        finally:
            self._pinned = None


async def _until(check: Any, within: float = 5.0) -> None:
    """Until ``check()`` holds (a recv is parked at the owner, ...); fail after ``within`` s."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def _workers(aiohttp_client, tmp_path, extra: str = "", count: int = 2) -> list[Any]:
    shared = Shared()
    clients = []
    for _ in range(count):  # one data dir, as workers of one install: the same secret
        kernel = make_kernel(
            tmp_path, extra, extra_plugins=(("shared", shared),), storage="shared", bus="shared"
        )
        clients.append(await aiohttp_client(create_app(kernel)))
    return clients


async def _chat(clients: list[Any]) -> tuple[Roaming, Any, str, str]:
    """A visitor roaming over every worker and an agent on the last one, in one conversation."""
    site = await add_site(app_kernel(clients[0].app))
    token = (await visitor_session(clients[0], site.site.widget_key))["token"]
    agent = await ws_peer(clients[-1], await login(clients[-1], site.site.id, site.agent.email))
    visitor = await Roaming.open(clients, token)
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    await agent.expect("conversation", event="started")
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")
    return visitor, agent, conversation_id, token


async def _resume_all(peer: Roaming, conversation_id: str, after: int) -> list[int]:
    """What a client does after a reconnect: resume until nothing more; the seqs replayed."""
    seqs = []
    while True:
        await peer.send(op="resume", conversation_id=conversation_id, after_seq=after)
        resumed = await peer.expect("resumed")
        seqs += [f["seq"] for f in peer.frames if f["op"] == "message"]
        peer.frames = [f for f in peer.frames if f["op"] != "message"]
        after = resumed["last_seq"]
        if not resumed["more"]:
            return seqs


async def test_requests_alternating_between_workers_deliver_every_frame_once_in_order(
    aiohttp_client, tmp_path
):
    one, two = await _workers(aiohttp_client, tmp_path, FAST)
    visitor, agent, conversation_id, _ = await _chat([one, two])
    for i in range(30):  # the visitor's sends alternate too: acks come back in order
        await visitor.send(op="send", conversation_id=conversation_id, cid=f"v{i}", text=str(i))
    for i in range(60):
        await agent.send(op="send", conversation_id=conversation_id, cid=f"a{i}", text=str(i))
    seen: list[int] = []
    acks: list[str] = []
    async with asyncio.timeout(20):
        while len(seen) < 60 or len(acks) < 30:
            for frame in await visitor.recv(1.0):
                if frame["op"] == "message":
                    seen.append(frame["seq"])
                elif frame["op"] == "ack":
                    acks.append(frame["cid"])
    assert acks == [f"v{i}" for i in range(30)]
    assert len(seen) == len(set(seen)) == 60 and seen == sorted(seen)
    assert await visitor.recv(0.2) == [] and await visitor.recv(0.2) == []


async def test_a_recv_whose_client_left_gives_its_frames_back(aiohttp_client, tmp_path):
    one, two = await _workers(aiohttp_client, tmp_path)
    visitor, agent, conversation_id, _ = await _chat([one, two])
    waiting = asyncio.ensure_future(visitor.via(two, 10.0))  # relayed to the owner (one)
    owner = app_kernel(one.app).existing_plugin_state("transport_longpoll")
    await _until(lambda: owner.sessions[visitor.session].polling == 1)
    waiting.cancel()  # the client gives up: its connection to worker two closes
    await asyncio.gather(waiting, return_exceptions=True)
    await agent.send(op="send", conversation_id=conversation_id, cid="late", text="late")
    assert (await agent.expect("ack"))["seq"] == 1
    assert (await visitor.expect("message"))["cid"] == "late"  # via one, then two: not lost
    assert not [f for f in visitor.frames if f["op"] == "message"]


async def test_a_dead_owner_answers_410_session_lost_and_the_client_resumes(
    aiohttp_client, tmp_path
):
    one, two = await _workers(aiohttp_client, tmp_path, "[transport_longpoll]\nowner_timeout = 1\n")
    visitor, agent, conversation_id, token = await _chat([one, two])
    for i in range(3):
        await agent.send(op="send", conversation_id=conversation_id, cid=f"a{i}", text=str(i))
        await agent.expect("ack")
    first = await visitor.expect("message")
    assert first["seq"] == 1
    # worker one dies: it stops answering the relay and beating (as SIGKILL would)
    owner = app_kernel(one.app).existing_plugin_state("transport_longpoll")
    owner._beater.cancel()
    for unsubscribe in owner._unsubscribe:
        unsubscribe()
    await app_kernel(one.app).bus.state.delete(node_key(owner.address))
    for _ in range(2):  # every worker says the same from now on
        with pytest.raises(ConnectionError, match="recv: 410 session_lost"):
            await visitor.via(two, 0.5)
    # the protocol's recovery: a new session (on a live worker) and a resume from the last seq
    back = await Roaming.open([two], token)
    assert await _resume_all(back, conversation_id, first["seq"]) == [2, 3]


async def test_shutdown_answers_410_shutdown_in_flight_and_later(aiohttp_client, tmp_path):
    one, two = await _workers(aiohttp_client, tmp_path)
    visitor, _, _, _ = await _chat([one, two])
    local = asyncio.ensure_future(visitor.via(one, 10.0))  # waiting on the owner
    relayed = asyncio.ensure_future(visitor.via(two, 10.0))  # relayed to it
    owner = app_kernel(one.app).existing_plugin_state("transport_longpoll")
    await _until(lambda: owner.sessions[visitor.session].polling == 2)
    await one.server.close()  # SIGTERM: shutdown requested, then stopped
    for recv in (local, relayed):
        with pytest.raises(ConnectionError, match="recv: 410 shutdown"):
            await recv
    for _ in range(2):
        with pytest.raises(ConnectionError, match="recv: 410 shutdown"):
            await visitor.via(two, 0.1)


async def test_sessions_per_token_are_capped_across_workers(aiohttp_client, tmp_path):
    one, two = await _workers(
        aiohttp_client, tmp_path, "[transport_longpoll]\nmax_sessions_per_principal = 3\n"
    )
    site = await add_site(app_kernel(one.app))
    token = (await visitor_session(one, site.site.widget_key))["token"]
    sessions = []
    for client in (one, two, one):
        resp = await client.post("/v1/poll/open", json={"token": token})
        assert resp.status == 200
        sessions.append((await resp.json())["session"])
    resp = await two.post("/v1/poll/open", json={"token": token})
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "too_many_sessions"
    await two.post(f"/v1/poll/close?session={sessions[0]}")  # relayed to worker one
    assert (await one.post("/v1/poll/open", json={"token": token})).status == 200
    other = (await visitor_session(one, site.site.widget_key))["token"]
    assert (await two.post("/v1/poll/open", json={"token": other})).status == 200


async def test_sessions_per_address_are_capped(aiohttp_client, tmp_path):
    one, two = await _workers(
        aiohttp_client, tmp_path, "[transport_longpoll]\nmax_sessions_per_address = 4\n"
    )
    site = await add_site(app_kernel(one.app))
    statuses = []
    for client in (one, two, one, two, one):
        token = (await visitor_session(client, site.site.widget_key))["token"]
        statuses.append((await client.post("/v1/poll/open", json={"token": token})).status)
    assert statuses == [200, 200, 200, 200, 429]


async def test_an_unread_outbox_is_bounded_in_bytes(aiohttp_client, tmp_path):
    (one,) = await _workers(
        aiohttp_client,
        tmp_path,
        "[transport_longpoll]\noutbox_bytes = 65536\n[gateway]\nrate = 1000\nburst = 1000\n",
        count=1,
    )
    visitor, agent, conversation_id, _ = await _chat([one])
    text = "x" * 7000
    for i in range(12):  # 12 x 7 KB: far under 1024 frames, over 64 KiB
        await agent.send(op="send", conversation_id=conversation_id, cid=f"a{i}", text=text)
        await agent.expect("ack")
    with pytest.raises(ConnectionError, match="recv: 410 slow_consumer"):
        await visitor.recv(0.1)


# -- two real processes: kefu run x 2 on the Redis bus and one SQLite file ----------------


class Node(Server):
    """One ``kefu run`` of a two-worker install: its own port and data dir, shared
    database, secret and Redis."""

    def __init__(self, tmp_path: Path, name: str, database: Path, prefix: str) -> None:
        (tmp_path / name).mkdir()
        super().__init__(tmp_path / name)
        enable = (
            "" if REDIS_PLUGIN in DEFAULT_PLUGINS else f'[plugins]\nenable = ["{REDIS_PLUGIN}"]\n'
        )
        self.log = tmp_path / f"{name}.log"
        self.config.write_text(
            f'[server]\nport = {self.port}\ndata_dir = "{tmp_path / name / "data"}"\n'
            'reload = false\nsecret = "two-workers-share-this-secret-0123456789"\n'
            f'[storage]\nbackend = "sql"\n[sql]\nurl = "sqlite:///{database}"\n'
            f'[bus]\nbackend = "redis"\n[bus_redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
            "[auth]\npassword_cost = 10\n[gateway]\nrate = 10000\nburst = 10000\n"
            "[transport_longpoll]\nowner_timeout = 2\n" + enable,
            encoding="utf-8",
        )


REDIS_PLUGIN = "kefu.plugins.bus_redis"
REDIS_URL = os.environ.get("KEFU_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_up() -> bool:
    host, _, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
        return True
    return False


@pytest.fixture
def nodes(tmp_path):
    if importlib.util.find_spec(REDIS_PLUGIN) is None:
        pytest.skip("plugins/bus_redis has not landed")  # the lead enables this test then
    if not _redis_up():
        service_unavailable(f"Redis at {REDIS_URL}")
    prefix = f"kefu-lp-{secrets.token_hex(4)}:"
    database = tmp_path / "shared.db"
    pair = [Node(tmp_path, name, database, prefix) for name in ("one", "two")]
    yield pair
    for node in pair:
        node.kill()


class Http:
    """Requests to the two processes by base URL, in the shape Roaming expects of a client."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    def post(self, path: str, **kwargs: Any):
        return self.session.post(self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.session.get(self.base + path, **kwargs)


async def _poll_until_gone(peer: Roaming, client: Any) -> str:
    async with asyncio.timeout(20):
        while True:
            try:
                await peer.via(client, 10.0)
            except ConnectionError as exc:
                return str(exc)


async def test_two_processes_serve_one_session_and_recover_from_a_killed_owner(nodes):
    one, two = nodes
    banner = await one.start()  # first: it creates the demo site and prints its password
    await two.start()
    widget_key = re.search(r"widget key '([^']+)'", banner).group(1)
    password = re.search(r"password '([^']+)'", banner).group(1)
    async with aiohttp.ClientSession() as http:
        a, b = Http(http, one.base), Http(http, two.base)
        async with b.post("/v1/visitors/session", json={"widget_key": widget_key}) as resp:
            token = (await resp.json())["token"]
        login = {"site_id": "demo", "email": "admin@example.com", "password": password}
        async with b.post("/v1/auth/login", json=login) as resp:
            agent_token = (await resp.json())["token"]
        agent = await http.ws_connect(f"{two.base.replace('http', 'ws')}/v1/ws?token={agent_token}")
        visitor = await Roaming.open([a, b], token)  # owned by process one
        await visitor.send(op="start")
        conversation_id = (await visitor.expect("started"))["conversation"]["id"]
        await agent.send_bytes(orjson.dumps({"op": "watch", "conversation_id": conversation_id}))
        for i in range(40):
            frame = {"op": "send", "conversation_id": conversation_id, "cid": f"a{i}", "text": "x"}
            await agent.send_bytes(orjson.dumps(frame))
        for i in range(20):
            await visitor.send(op="send", conversation_id=conversation_id, cid=f"v{i}", text="y")
        seen, acks, log = [], [], []
        async with asyncio.timeout(30):
            while len(acks) < 20 or len(seen) < 40:
                got = await visitor.recv(1.0)
                log.append([(f["op"], f.get("cid")) for f in got])
                for frame in got:
                    if frame["op"] == "message":
                        seen.append(frame["seq"])
                    elif frame["op"] == "ack":
                        acks.append(frame["cid"])
        assert acks == [f"v{i}" for i in range(20)], log
        assert len(seen) == len(set(seen)) == 40 and seen == sorted(seen)
        last = max(max(seen), *(0,))

        one.kill()  # SIGKILL of the owner: the other process answers 410 session_lost
        with pytest.raises(ConnectionError, match="recv: 410 session_lost"):
            await visitor.via(b, 0.5)
        back = await Roaming.open([b], token)
        replayed = await _resume_all(back, conversation_id, 0)
        assert sorted(replayed) == list(range(1, 61)) and last <= 60

        # SIGTERM of the process holding a session: 410 shutdown in flight and afterwards
        await one.start()
        moved = await Roaming.open([a, b], token)
        waiting = asyncio.ensure_future(_poll_until_gone(moved, b))  # relayed to process one
        await asyncio.sleep(0.5)  # a relayed recv is parked at process one
        one.proc.send_signal(signal.SIGTERM)
        assert await waiting == "recv: 410 shutdown"
        with pytest.raises(ConnectionError, match="recv: 410 shutdown"):
            await moved.via(b, 0.1)
        await agent.close()
