"""Real processes for tests/test_cluster.py: a private Redis, a PostgreSQL schema, ``kefu run``
nodes (single processes or a ``--workers N`` supervisor), and a small chat client that follows
the client rules of docs/protocol.md section 4 (last seq per conversation, duplicates dropped by
seq, resume after a reconnect, unacknowledged messages re-sent with the same cid).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
PG_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG_PORT = int(re.search(r":(\d+)/", PG_DSN)[1]) if re.search(r":(\d+)/", PG_DSN) else 5432
REDIS_PLUGIN = "kefu.plugins.bus_redis"


_TASKS: set[asyncio.Task] = set()


def spawn(coro: Any) -> asyncio.Task:
    """A background task, kept referenced until it is done."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes ---------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in task.read_text().split()]
                out += kids
                todo += kids
    return out


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def postgres_client_ports(pids: list[int]) -> list[int]:
    """Local ports of the TCP connections these processes hold to PostgreSQL: the
    ``client_port`` of their backends in ``pg_stat_activity`` (so a fault kills kefu's
    connections only, not those of other tests sharing the server)."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == PG_PORT:
                    ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


async def pg_fetch(query: str, *args: Any) -> list[Any]:
    """One query on the shared PostgreSQL, on a connection of its own."""
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def require_cluster_services() -> None:
    """redis-server (to start private ones, or the local one) and PostgreSQL, else skip
    (fail in CI)."""
    import shutil

    from tests.conftest import service_unavailable

    if shutil.which("redis-server") is None:
        service_unavailable("redis-server (the Debian package)")
    try:
        asyncio.run(pg_fetch("SELECT 1"))
    except Exception as exc:
        service_unavailable(f"PostgreSQL at {PG_DSN} ({exc})")


class PrivateRedis:
    """``redis-server`` on a free port, for this test module alone (it is restarted as a
    fault). Nothing is saved: a restart empties it, as a crashed cache would be."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=(self.workdir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while self.command(b"PING") != b"+PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on {self.port}")
            time.sleep(0.05)

    def command(self, *parts: bytes) -> bytes | None:
        """One inline command; the first reply line, or None when nobody answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b" ".join(parts) + b"\r\n")
                return s.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (kill -9 if it does not go)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.command(b"SHUTDOWN", b"NOSAVE")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Node:
    """One ``kefu run`` (a machine of the cluster): its own port and data dir; PostgreSQL,
    Redis and the secret shared with the other nodes. ``workers > 1``: a supervisor."""

    def __init__(
        self, root: Path, name: str, *, schema: str, redis: str, prefix: str, secret: str,
        workers: int = 1, extra: str = "", disable: tuple[str, ...] = ("bot_intents",),
    ) -> None:  # fmt: skip
        self.name, self.workers, self.secret, self.schema = name, workers, secret, schema
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "kefu.toml"
        self.out = self.dir / "stdout.log"
        self.err = self.dir / "stderr.log"
        url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)
        from kefu.core.plugins import DEFAULT_PLUGINS

        enable = "" if REDIS_PLUGIN in DEFAULT_PLUGINS else f'enable = ["{REDIS_PLUGIN}"]\n'
        self.config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nworkers = {workers}\n'
            f'data_dir = "{self.dir / "data"}"\nreload = false\ndrain_timeout = 5\n'
            f'[storage]\nbackend = "sql"\n[sql]\nurl = "{url}"\npg_schema = "{schema}"\n'
            f'[bus]\nbackend = "redis"\n[bus_redis]\nurl = "{redis}"\nprefix = "{prefix}"\n'
            "[auth]\npassword_cost = 10\n[gateway]\nrate = 10000\nburst = 10000\n"
            f"[plugins]\n{enable}disable = {orjson.dumps(list(disable)).decode()}\n"
            f"[routing]\n{extra}",  # the default lease (3 s)
            encoding="utf-8",
        )
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()  # every process of this node ever seen, for the clean-up

    def spawn(self) -> None:
        env = {
            **os.environ,
            # after what the test run has (a worktree's checkout of kefu, say)
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
            "KEFU_SERVER__SECRET": self.secret,
            "KEFU_LOG_LEVEL": "WARNING",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(self.config)],
            stdout=self.out.open("ab"),
            stderr=self.err.open("ab"),
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            env=env,
        )
        self.pids.add(self.proc.pid)

    async def ready(self, within: float = 60.0) -> None:
        """Until the banner is printed and /readyz answers 200."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.logs()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not become ready: {self.logs()}")
                if "serving on" in self.out.read_text(errors="replace"):
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(f"{self.base}/readyz") as resp:
                            if resp.status == 200:
                                self.pids.update(self.processes())
                                return
                await asyncio.sleep(0.1)

    async def start(self, within: float = 60.0) -> None:
        self.spawn()
        await self.ready(within)

    def banner(self) -> str:
        return self.out.read_text(errors="replace")

    def logs(self) -> str:
        return f"stdout:\n{self.banner()[-2000:]}\nstderr:\n{self.err.read_text()[-4000:]}"

    def processes(self) -> list[int]:
        """The live processes: the supervisor and its workers, or the single process."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found = [self.proc.pid, *children(self.proc.pid)]
        self.pids.update(found)
        return found

    def worker_pids(self) -> list[int]:
        procs = self.processes()
        return procs[1:] if self.workers > 1 else procs

    def kill(self) -> None:
        """SIGKILL of every process of this node (the workers too: they would drain)."""
        kill_pids([*self.processes(), *self.pids])
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


@contextlib.contextmanager
def two_nodes(root: Path, label: str, **options: Any) -> Iterator[tuple[Node, Node]]:
    """Two single-process nodes (``a`` started first and alone: it creates the tables and
    the demo site) on the local Redis and a fresh PostgreSQL schema, dropped afterwards;
    ``options`` go to :class:`Node`."""
    require_cluster_services()
    schema = f"kefu_{label}_{secrets.token_hex(5)}"
    common = {
        "schema": schema,
        "redis": "redis://127.0.0.1:6379/0",
        "prefix": f"kefu-{label}-{secrets.token_hex(3)}:",
        "secret": secrets.token_urlsafe(40),
        **options,
    }
    a, b = Node(root, "a", **common), Node(root, "b", **common)
    try:
        asyncio.run(a.start())
        asyncio.run(b.start())
        yield a, b
    finally:
        a.kill()
        b.kill()
        with contextlib.suppress(Exception):
            asyncio.run(pg_fetch(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


# -- the chat client -----------------------------------------------------------------------


@dataclass
class Stats:
    """Figures of one run, over every client."""

    sent: int = 0  # distinct messages offered (a re-send is not counted again)
    resent: int = 0
    acked: int = 0
    delivered: int = 0  # messages shown to a receiver (after de-dup by seq)
    duplicates: int = 0  # copies dropped by seq
    twice: list = field(default_factory=list)  # (client, cid, seq, other seq): shown twice
    reconnects: int = 0
    resume_s: list = field(default_factory=list)  # disconnect to every conversation resumed
    errors: dict = field(default_factory=dict)

    def figures(self) -> str:
        worst = max(self.resume_s, default=0.0)
        return (
            f"sent={self.sent} acked={self.acked} delivered={self.delivered} "
            f"resent={self.resent} duplicates_dropped={self.duplicates} "
            f"shown_twice={len(self.twice)} reconnects={self.reconnects} "
            f"resume_max_s={worst:.2f} errors={self.errors}"
        )


class Conv:
    """What a client holds of one conversation: the seqs it has, and which cid each is."""

    def __init__(self, conversation_id: str, last_seq: int = 0) -> None:
        self.id = conversation_id
        self.last_seq = last_seq  # every seq up to it is held
        self.seqs: dict[int, str] = {}  # seq -> cid, shown or acknowledged
        self.order: list[tuple[int, str, str]] = []  # (seq, cid, sender kind) as shown
        self.base = last_seq  # held before this client joined: not replayed

    def hold(self, seq: int, cid: str) -> bool:
        if seq in self.seqs or seq <= self.base:
            return False
        self.seqs[seq] = cid
        while self.last_seq + 1 in self.seqs:
            self.last_seq += 1
        return True


class Client:
    """A visitor or an agent over WebSocket. ``bases`` are the nodes it may dial, in turn:
    a connection lost is dialled again on the next one."""

    def __init__(self, name: str, kind: str, token: str, bases: list[str], stats: Stats) -> None:
        self.name, self.kind, self.token, self.bases, self.stats = name, kind, token, bases, stats
        self.turn = 0
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task | None = None
        self.convs: dict[str, Conv] = {}
        self.cid_seq: dict[str, int] = {}  # every cid held, with its seq
        self.pending: dict[str, tuple[dict, float]] = {}  # cid -> (frame, last tried)
        self.acked: dict[str, tuple[str, int]] = {}  # cid -> (conversation, seq)
        self.waiters: dict[Any, asyncio.Future] = {}
        self.ref = self.n = 0
        self.closing = False
        self.reconnecting: asyncio.Task | None = None
        self.gaps: set[str] = set()  # conversations to resume (a seq jumped)
        self.drops = self.resumed = 0  # links lost; reconnects that resumed everything
        self.record: set[str] = set()  # other ops to keep in ``recorded`` (assignment, ...)
        self.recorded: list[dict] = []
        self.dups: list[tuple[int, str, str]] = []  # (seq, cid, sender kind) dropped by seq

    # -- the link --------------------------------------------------------------------
    async def connect(self) -> None:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        base = self.bases[self.turn % len(self.bases)]
        ws = await self.http.ws_connect(
            f"{base.replace('http', 'ws', 1)}/v1/ws?token={self.token}",
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            heartbeat=None,
        )
        hello = orjson.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        if hello.get("op") != "hello":
            await ws.close()
            raise ConnectionError(f"no hello: {hello}")
        self.ws = ws
        self.reader = asyncio.ensure_future(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.on_frame(orjson.loads(msg.data))
        except Exception:
            pass
        finally:
            if self.ws is ws:
                self.lost()

    def lost(self) -> None:
        self.ws = None
        self.drops += 1
        for future in self.waiters.values():
            if not future.done():
                future.set_exception(ConnectionError("lost"))
        if not self.closing and self.reconnecting is None:
            self.reconnecting = asyncio.ensure_future(self._reconnect(time.monotonic()))

    async def _reconnect(self, since: float) -> None:
        pause = 0.05
        try:
            while not self.closing:
                self.turn += 1  # the next node
                try:
                    await self.connect()
                    await self.resume_all()
                    self.resend_all()
                except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError) as exc:
                    self.count(f"reconnect: {type(exc).__name__}")
                    ws, self.ws = self.ws, None
                    if isinstance(ws, aiohttp.ClientWebSocketResponse):
                        await ws.close()
                    await asyncio.sleep(pause)
                    pause = min(1.0, pause * 2)
                    continue
                self.resumed += 1
                self.stats.reconnects += 1
                self.stats.resume_s.append(time.monotonic() - since)
                return
        finally:
            self.reconnecting = None

    async def send_frame(self, frame: dict) -> None:
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        await ws.send_bytes(orjson.dumps(frame))

    async def request(self, frame: dict, wait: float = 30.0) -> dict:
        self.ref += 1
        ref = f"r{self.ref}"
        future = self.waiters[ref] = asyncio.get_running_loop().create_future()
        try:
            await self.send_frame({**frame, "ref": ref})
            return await asyncio.wait_for(future, wait)
        finally:
            self.waiters.pop(ref, None)

    # -- the protocol -------------------------------------------------------------------
    async def start(self) -> str:
        reply = await self.request({"op": "start"})
        assert reply["op"] == "started", reply
        conv = reply["conversation"]
        self.convs[conv["id"]] = Conv(conv["id"])  # a visitor holds its whole conversation
        return conv["id"]

    async def watch(self, conversation_id: str) -> None:
        reply = await self.request({"op": "watch", "conversation_id": conversation_id})
        assert reply["op"] == "watching", reply
        self.convs.setdefault(conversation_id, Conv(conversation_id))

    async def resume(self, conv: Conv) -> None:
        while True:
            reply = await self.request(
                {"op": "resume", "conversation_id": conv.id, "after_seq": conv.last_seq}
            )
            if reply["op"] != "resumed":
                raise ConnectionError(f"resume refused: {reply}")
            if not reply.get("more"):
                return

    async def resume_all(self) -> None:
        for conv in list(self.convs.values()):
            self.gaps.discard(conv.id)
            await self.resume(conv)

    def send_message(self, conversation_id: str) -> None:
        """One message, offered whether or not the link is up (sent on reconnect if not)."""
        self.n += 1
        cid = f"{self.name}.{self.n}"
        frame = {"op": "send", "conversation_id": conversation_id, "cid": cid, "text": cid,
                 "ref": cid}  # fmt: skip
        self.pending[cid] = (frame, time.monotonic())
        self.stats.sent += 1
        if self.ws is not None:
            spawn(self._try(frame))

    async def _try(self, frame: dict) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self.send_frame(frame)

    def resend(self, older_than: float | None = None) -> int:
        """Re-send unacknowledged messages with their cid: all of them (after a reconnect),
        or those the server refused (an error frame: storage failed, ...) and, with
        ``older_than``, those unanswered that long. A live WebSocket loses nothing, it may
        only be slow: re-sending merely late messages would only add to the server's load."""
        if self.ws is None:
            return 0
        now, count = time.monotonic(), 0
        for cid, (frame, tried) in list(self.pending.items()):
            if tried and (older_than is None or now - tried < older_than):
                continue
            self.pending[cid] = (frame, now)
            self.stats.resent += 1
            count += 1
            spawn(self._try(frame))
        return count

    def resend_all(self) -> None:
        for cid, (frame, _) in list(self.pending.items()):
            self.pending[cid] = (frame, 0.0)
        self.resend()

    def count(self, what: str) -> None:
        self.stats.errors[what] = self.stats.errors.get(what, 0) + 1

    def hold(self, conversation_id: str, seq: int, cid: str) -> bool:
        """Record (seq, cid); a cid already held under another seq was shown twice."""
        conv = self.convs.setdefault(conversation_id, Conv(conversation_id))
        known = self.cid_seq.get(cid)
        if known is not None and known != seq:
            self.stats.twice.append((self.name, cid, seq, known))
        self.cid_seq.setdefault(cid, seq)
        return conv.hold(seq, cid)

    def on_frame(self, frame: dict) -> None:
        op = frame.get("op")
        if op == "message":
            conversation_id, seq = frame["conversation_id"], frame["seq"]
            conv = self.convs.get(conversation_id)
            if conv is not None and seq > conv.last_seq + 1 and seq - 1 not in conv.seqs:
                self.gaps.add(conversation_id)  # missed something: resume
            if self.hold(conversation_id, seq, frame["cid"]):
                self.convs[conversation_id].order.append(
                    (seq, frame["cid"], frame["sender"]["kind"])
                )
                if frame["sender"]["kind"] != self.kind:
                    self.stats.delivered += 1
            else:
                self.stats.duplicates += 1
                self.dups.append((seq, frame["cid"], frame["sender"]["kind"]))
        elif op == "ack":
            cid = frame["cid"]
            if self.pending.pop(cid, None) is not None:
                self.stats.acked += 1
            self.acked[cid] = (frame["conversation_id"], frame["seq"])
            self.hold(frame["conversation_id"], frame["seq"], cid)
        elif op in self.record:
            self.recorded.append(frame)
        elif frame.get("ref") in self.waiters:
            future = self.waiters[frame["ref"]]
            if not future.done():
                future.set_result(frame)
        elif op == "error":
            self.count(frame.get("code", "?"))
            ref = frame.get("ref")
            if ref in self.pending:  # refused (storage failed, ...): tried again soon
                frame_, _ = self.pending[ref]
                self.pending[ref] = (frame_, 0.0)

    async def close(self) -> None:
        self.closing = True
        if self.reconnecting is not None:
            self.reconnecting.cancel()
        ws, self.ws = self.ws, None
        if isinstance(ws, aiohttp.ClientWebSocketResponse):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
        if self.http is not None:
            await self.http.close()


class LongPoll(Client):
    """The same client over HTTP long-polling: each request (``open``, ``send``, ``recv``)
    goes to the next of ``bases`` in turn, so consecutive requests of one session land on
    different nodes. ``fresh`` opens a new TCP connection per request (with ``--workers N``
    the kernel then spreads the requests over the workers of one port)."""

    def __init__(self, *args: Any, fresh: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fresh = fresh
        self.session: str | None = None
        self.rr = 0
        self.served: dict[str, int] = {}  # base -> requests it answered
        self.outq: list[tuple[dict, asyncio.Future]] = []
        self.flusher: asyncio.Task | None = None

    def _next(self) -> str:
        self.rr += 1
        return self.bases[self.rr % len(self.bases)]

    async def connect(self) -> None:
        if self.http is None:
            connector = aiohttp.TCPConnector(force_close=self.fresh)
            self.http = aiohttp.ClientSession(connector=connector)
        base = self.bases[self.turn % len(self.bases)]
        async with self.http.post(f"{base}/v1/poll/open", json={"token": self.token}) as resp:
            if resp.status != 200:
                raise ConnectionError(f"open: {resp.status} {await resp.text()}")
            session = (await resp.json())["session"]
        self.session, self.ws = session, True  # type: ignore[assignment]  # "connected"
        self.reader = asyncio.ensure_future(self._read(session))  # type: ignore[arg-type]

    async def _read(self, session: str) -> None:  # type: ignore[override]
        try:
            while self.session == session and not self.closing:
                base = self._next()
                url = f"{base}/v1/poll/recv?session={session}&timeout=2"
                async with self.http.get(url) as resp:  # type: ignore[union-attr]
                    if resp.status != 200:
                        self.count(f"recv {resp.status}")
                        break
                    frames = (await resp.json())["frames"]
                self.served[base] = self.served.get(base, 0) + 1
                for frame in frames:
                    self.on_frame(frame)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        finally:
            if self.session == session and not self.closing:
                self.session = None
                self.lost()

    async def send_frame(self, frame: dict) -> None:
        """Queued: one ``send`` request at a time, in order (up to 64 frames each), as a
        client must do so that its frames reach the server in the order it sent them."""
        if self.session is None:
            raise ConnectionError("not connected")
        future = asyncio.get_running_loop().create_future()
        self.outq.append((frame, future))
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.ensure_future(self._flush(self.session))
        await future

    async def _flush(self, session: str) -> None:
        while self.outq:
            batch, self.outq = self.outq[:64], self.outq[64:]
            base = self._next()
            try:
                async with self.http.post(  # type: ignore[union-attr]
                    f"{base}/v1/poll/send?session={session}",
                    data=orjson.dumps([frame for frame, _ in batch]),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    if resp.status != 202:
                        raise ConnectionError(f"send: {resp.status}")
                self.served[base] = self.served.get(base, 0) + 1
                error: Exception | None = None
            except (aiohttp.ClientError, OSError, ConnectionError) as exc:
                error = ConnectionError(str(exc))
            for _, future in batch:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)

    async def close(self) -> None:
        session, self.session = self.session, None
        self.closing = True
        if session is not None and self.http is not None:
            with contextlib.suppress(Exception):
                async with self.http.post(f"{self.bases[0]}/v1/poll/close?session={session}"):
                    pass
        self.ws = None
        await super().close()


def socket_owner(pids: list[int], server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server end of the TCP connection from ``client_port``."""
    wanted = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = cols[1], cols[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    wanted = cols[9]
    if wanted is None:
        return None
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{wanted}]":
                    return pid
    return None


def client_port(client: Client) -> int | None:
    """The local port of a WebSocket client's connection."""
    ws = client.ws
    conn = getattr(getattr(ws, "_response", None), "connection", None)
    if conn is None or conn.transport is None:
        return None
    return conn.transport.get_extra_info("sockname")[1]


async def post_json(http: aiohttp.ClientSession, url: str, body: dict, token: str = "") -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as resp:
        data = await resp.json()
        assert resp.status in (200, 201), (url, resp.status, data)
        return data


async def visitor_token(http: aiohttp.ClientSession, base: str, widget_key: str) -> str:
    return (await post_json(http, f"{base}/v1/visitors/session", {"widget_key": widget_key}))[
        "token"
    ]


async def agent_token(
    http: aiohttp.ClientSession, base: str, site: str, email: str, password: str
) -> str:
    body = {"site_id": site, "email": email, "password": password}
    return (await post_json(http, f"{base}/v1/auth/login", body))["token"]


async def until(check: Any, within: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s: {what}")
        await asyncio.sleep(step)
