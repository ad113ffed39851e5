"""Two kefu nodes behind the load balancer of deploy/compose (issue 18), all real processes.

The test starts a private ``redis-server``, two ``kefu run`` nodes on one fresh PostgreSQL
schema and one secret, and Debian's nginx running deploy/compose/nginx/nginx.conf (the
service names and the port replaced) on free ports. A visitor and an agent connect
through nginx and land on different nodes; they chat both ways; then the agent's node is
killed (SIGKILL) while both go on sending; both reconnect through nginx to the surviving
node, resume, and every message acknowledged reaches the other side once, with the seq
PostgreSQL holds (in the order sent while the link was up; messages re-sent together after
the reconnect may be numbered in another order).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cluster_support import (
    PG_DSN,
    Client,
    Node,
    PrivateRedis,
    Stats,
    agent_token,
    free_port,
    until,
    visitor_token,
)
from tests.conftest import service_unavailable
from tests.deploy_support import nginx_config

pytestmark = pytest.mark.needs_service


async def _pg(query: str, *args):
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


class Nginx:
    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.conf = nginx_config(workdir, self.port, upstreams, tag=True)
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=(self.workdir / "nginx.out").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {self.logs()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.base}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    def logs(self) -> str:
        out = self.workdir / "logs" / "error.log"
        return out.read_text()[-3000:] if out.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def upstream(client: Client) -> str:
    """The node (host:port) nginx connected this client's WebSocket to: the last one it
    tried (``$upstream_addr`` lists a node that refused first)."""
    response = client.ws._response  # type: ignore[union-attr]
    return response.headers["X-Kefu-Upstream"].split(",")[-1].strip()


def shown(client: Client, conversation_id: str, kind: str) -> list[tuple[int, str]]:
    conv = client.convs.get(conversation_id)
    return [(seq, cid) for seq, cid, k in (conv.order if conv else []) if k == kind]


@pytest.mark.timeout(180)
async def test_two_nodes_behind_nginx_chat_and_survive_a_node_kill(tmp_path):
    if shutil.which("nginx") is None:
        service_unavailable("nginx (Debian's package, installed by tests/services.sh)")
    if shutil.which("redis-server") is None:
        service_unavailable("redis-server (the Debian package)")
    try:
        await _pg("SELECT 1")
    except Exception as exc:
        service_unavailable(f"PostgreSQL at {PG_DSN} ({exc})")
    schema = f"kefu_lb_{secrets.token_hex(5)}"
    redis = PrivateRedis(tmp_path)
    common = {
        "schema": schema,
        "redis": redis.url,
        "prefix": f"kefu-lb-{secrets.token_hex(3)}:",
        "secret": secrets.token_urlsafe(40),
    }
    a, b = Node(tmp_path, "a", **common), Node(tmp_path, "b", **common)
    nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    stats = Stats()
    clients: list[Client] = []
    try:
        redis.start()
        await a.start()  # first and alone: it creates the tables and the demo site
        await b.start()
        await nginx.start()
        banner = a.banner()
        widget_key = re.search(r"widget key '([^']+)'", banner)[1]
        password = re.search(r"password '([^']+)'", banner)[1]
        lb = nginx.base
        async with aiohttp.ClientSession() as http:
            vtoken = await visitor_token(http, lb, widget_key)
            atoken = await agent_token(http, lb, "demo", "admin@example.com", password)
        visitor = Client("v", "visitor", vtoken, [lb], stats)
        agent = Client("ag", "agent", atoken, [lb], stats)
        clients = [visitor, agent]
        await visitor.connect()
        await agent.connect()
        for _ in range(6):  # round robin: the next connection goes to the other node
            if upstream(agent) != upstream(visitor):
                break
            agent.closing = True
            await agent.ws.close()
            agent.closing, agent.ws = False, None
            await agent.connect()
        nodes = {f"127.0.0.1:{a.port}": a, f"127.0.0.1:{b.port}": b}
        assert upstream(agent) != upstream(visitor), "both on one node"
        assert set(nodes) == {upstream(agent), upstream(visitor)}
        conversation_id = await visitor.start()
        await agent.watch(conversation_id)

        async def chat(rounds: int, total: int) -> None:
            for _ in range(rounds):
                visitor.send_message(conversation_id)
                agent.send_message(conversation_id)
                await asyncio.sleep(0.02)

            def done() -> bool:
                return (
                    not visitor.pending
                    and not agent.pending
                    and all(
                        len(shown(other, conversation_id, me.kind)) >= total
                        for me, other in ((visitor, agent), (agent, visitor))
                    )
                )

            await until(done, 60, f"{total} messages each way acknowledged and delivered")

        await chat(10, 10)  # both ways, across the two nodes
        assert visitor.drops == agent.drops == 0

        victim = nodes[upstream(agent)]
        survivor = a if victim is b else b
        victim.kill()  # SIGKILL: no drain, the agent's WebSocket just breaks
        await chat(10, 20)  # sent while the agent reconnects: queued and re-sent
        await until(lambda: agent.resumed >= 1 and agent.ws is not None, 30, "agent reconnected")
        assert upstream(agent) == f"127.0.0.1:{survivor.port}"
        await chat(5, 25)  # and on, both on the surviving node
        await asyncio.sleep(0.3)  # a second copy would arrive now

        stored = {
            row["seq"]: row["cid"]
            for row in await _pg(
                f'SELECT seq, cid FROM "{schema}".messages WHERE conversation_id = $1',
                conversation_id,
            )
        }
        for me, other in ((visitor, agent), (agent, visitor)):
            got = shown(other, conversation_id, me.kind)
            sent = [f"{me.name}.{n}" for n in range(1, 26)]
            cids = [cid for _, cid in got]
            # once each; the first ten (sent before the kill) in the order sent. Messages
            # queued while the link was down are re-sent together after the reconnect, so
            # the server may number them in another order (each keeps the seq it acked).
            assert sorted(cids) == sorted(sent) and len(cids) == len(set(cids)), (me.name, got)
            assert cids[:10] == sent[:10], (me.name, got)
            for cid in sent:
                _, seq = me.acked[cid]
                assert stored[seq] == cid, (cid, seq)  # acknowledged = stored
            assert not other.dups and not other.stats.twice
        assert len(set(stored.values())) == len(stored)  # nothing stored twice
        assert agent.drops >= 1 and agent.resumed >= 1
        print(
            f"\nlb: victim node {victim.name}, agent reconnects {agent.resumed}, "
            f"visitor reconnects {visitor.resumed}; {stats.figures()}"
        )
    finally:
        for client in clients:
            await client.close()
        nginx.stop()
        a.kill()
        b.kill()
        redis.stop()
        with contextlib.suppress(Exception):
            await _pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
