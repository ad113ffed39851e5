"""SIGKILL the real server while messages flow; after a restart nothing acknowledged is lost.

``kefu run`` runs as a subprocess on SQLite (the ``sql`` backend). Two WebSocket
clients exchange messages as fast as the server acknowledges them; the server is
killed with SIGKILL mid-flow, restarted on the same data directory, and then:

- every message the server acknowledged is stored exactly once, with its acked ``seq``;
- ``seq`` runs 1..N without a gap or a duplicate;
- a client that resumes from the last ``seq`` it saw receives everything it missed;
- re-sending the unacknowledged messages (same ``cid``) stores each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 8  # unacknowledged messages a client keeps in flight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``kefu run`` in a subprocess."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "kefu.toml"
        self.config.write_text(
            f'[server]\nport = {self.port}\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
            '[storage]\nbackend = "sql"\n[auth]\npassword_cost = 10\n'
            "[gateway]\nrate = 10000\nburst = 10000\n",
            encoding="utf-8",
        )
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        env = {**os.environ, "KEFU_LOG_LEVEL": "WARNING"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            cwd=ROOT,
            env=env,
        )

    async def start(self) -> str:
        """Start and wait until ready; returns what the server printed on stdout."""
        self.spawn()
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"server exited: {self.log.read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("server did not become ready")
        os.set_blocking(self.proc.stdout.fileno(), False)
        return (self.proc.stdout.read() or b"").decode()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    srv.kill()


async def _post(http: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


class Peer:
    """A WebSocket client that records acks and delivered messages until its socket dies."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.acks: dict[str, int] = {}
        self.seen: dict[int, str] = {}  # seq -> cid of every message delivered or acked
        self.replies: asyncio.Queue = asyncio.Queue()
        self.acked = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if frame["op"] == "ack":
                self.acks[frame["cid"]] = frame["seq"]
                self.acked.set()
                self.seen[frame["seq"]] = frame["cid"]
            elif frame["op"] == "message":
                self.seen[frame["seq"]] = frame["cid"]
            else:
                self.replies.put_nowait(frame)

    async def send(self, **frame) -> None:
        await self.ws.send_bytes(orjson.dumps(frame))

    async def wait_acks(self, count: int, other: Peer | None = None) -> None:
        """Until this peer (plus ``other``) holds ``count`` acks."""
        async with asyncio.timeout(10):
            while len(self.acks) + (len(other.acks) if other else 0) < count:
                self.acked.clear()
                if other:
                    other.acked.clear()
                waits = [asyncio.ensure_future(p.acked.wait()) for p in (self, other) if p]
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()

    async def reply(self, op: str) -> dict:
        async with asyncio.timeout(5):
            while True:
                frame = await self.replies.get()
                if frame["op"] == op:
                    return frame


async def _connect(http, base, token) -> Peer:
    ws = await http.ws_connect(f"{base.replace('http', 'ws')}/v1/ws?token={token}")
    peer = Peer(ws)
    await peer.reply("hello")
    return peer


async def _resume_all(peer: Peer, conversation_id: str, after: int) -> int:
    while True:
        await peer.send(op="resume", conversation_id=conversation_id, after_seq=after)
        resumed = await peer.reply("resumed")
        after = resumed["last_seq"]
        if not resumed["more"]:
            return after


async def test_acknowledged_messages_survive_sigkill(server):
    banner = await server.start()
    widget_key = re.search(r"widget key '([^']+)'", banner).group(1)
    password = re.search(r"password '([^']+)'", banner).group(1)
    base = server.base
    async with aiohttp.ClientSession() as http:
        visitor_token = (
            await _post(http, f"{base}/v1/visitors/session", {"widget_key": widget_key})
        )["token"]
        login = {"site_id": "demo", "email": "admin@example.com", "password": password}
        agent_token = (await _post(http, f"{base}/v1/auth/login", login))["token"]
        visitor = await _connect(http, base, visitor_token)
        agent = await _connect(http, base, agent_token)
        await visitor.send(op="start")
        conversation_id = (await visitor.reply("started"))["conversation"]["id"]
        await agent.send(op="watch", conversation_id=conversation_id)
        await agent.reply("watching")

        # both sides send without waiting for acks; kill the server mid-flow
        sent: list[tuple[Peer, str]] = []

        async def pump(peer: Peer, prefix: str) -> None:
            """Send as fast as acks come back, with up to WINDOW messages in flight."""
            for i in range(10_000):
                while sum(1 for p, c in sent if p is peer) - len(peer.acks) >= WINDOW:
                    peer.acked.clear()
                    await peer.acked.wait()
                cid = f"{prefix}-{i}"
                sent.append((peer, cid))
                try:
                    await peer.send(op="send", conversation_id=conversation_id, cid=cid, text=cid)
                except (ConnectionError, aiohttp.ClientError, RuntimeError):
                    return

        pumps = [asyncio.create_task(pump(visitor, "v")), asyncio.create_task(pump(agent, "a"))]
        await visitor.wait_acks(100, agent)
        server.kill()
        await asyncio.gather(visitor.reader, agent.reader, return_exceptions=True)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        acked = {**visitor.acks, **agent.acks}
        assert len(acked) >= 100 and len(sent) > len(acked)  # killed with messages in flight
        visitor_last = max(s for s in visitor.seen if all(q in visitor.seen for q in range(1, s)))

        await server.start()  # same data directory, same secret: old tokens still work
        checker = await _connect(http, base, agent_token)
        last = await _resume_all(checker, conversation_id, 0)
        stored = dict(checker.seen)
        assert sorted(stored) == list(range(1, last + 1))  # 1..N: no gap, no duplicate seq
        assert len(set(stored.values())) == len(stored)  # each cid stored once
        by_cid = {cid: seq for seq, cid in stored.items()}
        for cid, seq in acked.items():
            assert by_cid.get(cid) == seq, f"acked {cid} as seq {seq}, stored {by_cid.get(cid)}"

        # the visitor resumes from what it had seen and gets exactly what it missed
        visitor = await _connect(http, base, visitor_token)
        visitor.seen.clear()
        await _resume_all(visitor, conversation_id, visitor_last)
        assert sorted(visitor.seen) == list(range(visitor_last + 1, last + 1))

        # retrying every unacknowledged send stores each once (some may already be there)
        unacked = [(p, cid) for p, cid in sent if cid not in acked]
        retry = await _connect(http, base, visitor_token)
        for _, cid in unacked:
            if cid.startswith("v-"):
                await retry.send(op="send", conversation_id=conversation_id, cid=cid, text=cid)
        await retry.wait_acks(sum(1 for _, c in unacked if c.startswith("v-")))
        for cid, seq in retry.acks.items():
            if cid in by_cid:
                assert seq == by_cid[cid]  # stored before the crash: same seq, not again
            else:
                assert seq > last
        final = await _connect(http, base, agent_token)
        total = await _resume_all(final, conversation_id, 0)
        assert len(set(final.seen.values())) == len(final.seen) == total


async def test_sigterm_with_open_websockets_stops_promptly(server):
    """kefu_shutdown_requested closes sockets first: clients get 1001 and the process exits fast."""
    banner = await server.start()
    widget_key = re.search(r"widget key '([^']+)'", banner).group(1)
    async with aiohttp.ClientSession() as http:
        peers = []
        for _ in range(3):
            session = await _post(
                http, f"{server.base}/v1/visitors/session", {"widget_key": widget_key}
            )
            peers.append(await _connect(http, server.base, session["token"]))
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.proc.wait, 20)
        elapsed = time.monotonic() - started
        for peer in peers:
            await asyncio.wait_for(peer.reader, 5)
            assert peer.ws.close_code == 1001
    assert server.proc.returncode == 0
    assert elapsed < 5, f"shutdown took {elapsed:.1f}s"
