"""A low-overhead load client: visitors and agents over WebSocket, HTTP long-polling or gRPC.

One :class:`Participant` is one visitor or agent with one connection (a *link*); it keeps,
per conversation, every ``seq`` it has seen and the end of the contiguous run
(``last_seq``), its unacknowledged sends by ``cid``, and what was acknowledged. When its
link drops it reconnects (after a jittered pause), resumes every conversation from
``last_seq`` and re-sends what has no ack with the same ``cid`` — the client rules of
docs/protocol.md. Messages carry their send time (wall clock, shared by every process on
the machine) at the start of ``text``, so the receiving process measures delivery latency.

A :class:`Dialer` spreads connections over several source addresses in 127.0.0.0/8 (one
aiohttp session per address) so that no address runs out of ephemeral ports. Over gRPC
(``kefu.v1.Chat/Connect``, one stream per participant) streams share a few HTTP/2
connections, :data:`STREAMS_PER_CHANNEL` each, as a back end's client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from array import array
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

log = logging.getLogger(__name__)

PAD = "lorem ipsum dolor sit amet " * 3  # ~100-byte messages
CONNECT_TIMEOUT = 15.0
RECV_WAIT = 20  # seconds a long-poll recv waits
STREAMS_PER_CHANNEL = 50  # gRPC streams multiplexed over one HTTP/2 connection


class Stats:
    """Counters and latency samples of one worker process.

    Latencies are recorded for messages *sent* inside ``window`` (wall-clock seconds),
    whenever their ack or delivery arrives, so a late tail is not cut off.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.window = (0.0, 0.0)
        self.delivery = array("d")  # seconds, send to receipt by the other party
        # the same, split by whether the two sides' connections were on different server
        # workers (known only with several workers, see Worker.cmd_placement)
        self.delivery_cross = array("d")
        self.delivery_same = array("d")
        self.ack = array("d")  # seconds, send to ack
        self.lag = array("d")  # seconds the open-loop scheduler ran behind its plan
        self.resume = array("d")  # seconds, drop to resumed (and unacked re-sent)
        self.sent = self.acked = self.delivered = self.duplicates = self.resent = 0
        self.reconnects = 0
        self.errors: dict[str, int] = {}
        self.closes: dict[str, int] = {}

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def export(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("sent", "acked", "delivered", "duplicates")}
        out.update(resent=self.resent, reconnects=self.reconnects)
        out.update(errors=dict(self.errors), closes=dict(self.closes))
        for name in ("delivery", "delivery_cross", "delivery_same", "ack", "lag", "resume"):
            out[name] = getattr(self, name).tobytes()
        return out


class Conv:
    """What one participant holds of one conversation."""

    __slots__ = ("cross", "id", "last_seq", "seen", "top")

    def __init__(self, conversation_id: str, last_seq: int = 0) -> None:
        self.id = conversation_id
        self.last_seq = last_seq
        self.top = 0  # highest seq acknowledged to this participant
        self.cross: bool | None = None  # both sides on different server workers (if known)
        self.seen: set[int] = set(range(1, last_seq + 1))

    def see(self, seq: int) -> bool:
        """Record a seq; False when it was seen before (a duplicate)."""
        if seq in self.seen:
            return False
        self.seen.add(seq)
        while self.last_seq + 1 in self.seen:
            self.last_seq += 1
        return True


class Participant:
    """A visitor or an agent with its link, conversations and in-flight messages."""

    __slots__ = (
        "acked",
        "assigned",
        "closing",
        "convs",
        "department",
        "dialer",
        "dropped_at",
        "gate",
        "ident",
        "kind",
        "link",
        "n",
        "pending",
        "reconnecting",
        "ref",
        "refused",
        "resumed_at",
        "stats",
        "tag",
        "token",
        "turn",
        "waiters",
    )

    def __init__(self, kind: str, ident: str, token: str, tag: str, dialer: Dialer) -> None:
        self.kind, self.ident, self.token, self.tag = kind, ident, token, tag
        self.dialer = dialer
        self.stats: Stats = dialer.stats
        self.link: WsLink | LpLink | GrpcLink | None = None
        self.convs: dict[str, Conv] = {}
        # cid -> (sent at, for the ack latency; 0 after a retry), frame, last attempt)
        self.pending: dict[str, tuple[float, dict, float]] = {}
        self.acked: dict[str, tuple[str, int]] = {}  # cid -> (conversation, seq)
        self.waiters: dict[int, asyncio.Future] = {}
        self.ref = self.n = self.turn = 0
        self.closing = self.reconnecting = False
        self.refused = False  # the server dropped a frame (rate limit, storage error, ...)
        self.dropped_at = self.resumed_at = 0.0
        # routed populations (the kill scenario): the department a visitor starts in; what
        # an agent was told it holds (conversation -> wall time of the last ``assignment``
        # frame, routed or replayed); a gate a reconnect waits on (agents kept away)
        self.department: str | None = None
        self.assigned: dict[str, float] = {}
        self.gate: asyncio.Event | None = None

    # -- requests -----------------------------------------------------------------
    async def connect(self) -> None:
        self.link = await self.dialer.open(self)

    async def request(self, frame: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any]:
        """Send a frame with a fresh ``ref`` and wait for the reply echoing it."""
        self.ref += 1
        ref = self.ref
        link = self.link
        if link is None:
            raise ConnectionError("not connected")
        future = self.waiters[ref] = asyncio.get_running_loop().create_future()
        try:
            await link.send({**frame, "ref": ref})
            async with asyncio.timeout(wait_s):
                return await future
        finally:
            self.waiters.pop(ref, None)

    async def start(self) -> str:
        frame: dict[str, Any] = {"op": "start"}
        if self.department:
            frame["department"] = self.department
        reply = await self.request(frame)
        if reply["op"] != "started":
            raise RuntimeError(f"start refused: {reply}")
        conversation = reply["conversation"]
        self.convs[conversation["id"]] = Conv(conversation["id"], conversation["last_seq"])
        return conversation["id"]

    async def watch(self, conversation_id: str) -> None:
        reply = await self.request({"op": "watch", "conversation_id": conversation_id})
        if reply["op"] != "watching":
            raise RuntimeError(f"watch refused: {reply}")
        last = reply["conversation"].get("last_seq", 0)
        self.convs.setdefault(conversation_id, Conv(conversation_id, last))

    async def resume_all(self) -> None:
        for conv in list(self.convs.values()):
            while True:
                reply = await self.request(
                    {"op": "resume", "conversation_id": conv.id, "after_seq": conv.last_seq}
                )
                if reply["op"] != "resumed" or not reply.get("more"):
                    break

    # -- messages -----------------------------------------------------------------
    async def send_message(self) -> None:
        """One open-loop message: to the visitor's conversation, or an agent's next one."""
        convs = self.convs
        if not convs:
            return
        if self.kind == "agent":
            self.turn = (self.turn + 1) % len(convs)
            conversation_id = list(convs)[self.turn] if len(convs) > 1 else next(iter(convs))
        else:
            conversation_id = next(iter(convs))
        self.n += 1
        cid = f"{self.tag}.{self.n}"
        now = time.time()
        frame = {
            "op": "send",
            "conversation_id": conversation_id,
            "cid": cid,
            "text": f"{now:.6f}|{PAD}",
        }
        self.pending[cid] = (now, frame, now)
        self.stats.sent += 1
        link = self.link
        if link is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await link.send(frame)

    def on_frame(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        stats = self.stats
        if op == "message":
            conv = self.convs.get(frame["conversation_id"])
            if conv is None:
                conv = self.convs[frame["conversation_id"]] = Conv(frame["conversation_id"])
            if not conv.see(frame["seq"]):
                stats.duplicates += 1
                return
            stats.delivered += 1
            if frame["sender"]["kind"] in ("visitor", "agent"):
                try:
                    sent = float(frame["text"].partition("|")[0])
                except ValueError:
                    return
                if stats.window[0] <= sent <= stats.window[1]:
                    latency = time.time() - sent
                    stats.delivery.append(latency)
                    if conv.cross is not None:
                        (stats.delivery_cross if conv.cross else stats.delivery_same).append(
                            latency
                        )
        elif op == "ack":
            cid = frame["cid"]
            sent = self.pending.pop(cid, None)
            conversation_id, seq = frame["conversation_id"], frame["seq"]
            self.acked[cid] = (conversation_id, seq)
            conv = self.convs.get(conversation_id)
            if conv is not None:
                conv.see(seq)
                if seq > conv.top:
                    conv.top = seq
            if sent is not None:
                stats.acked += 1
                if stats.window[0] <= sent[0] <= stats.window[1]:
                    stats.ack.append(time.time() - sent[0])
        elif op == "assignment":
            self.on_assignment(frame["conversation"])
        elif "ref" in frame and frame["ref"] in self.waiters:
            future = self.waiters[frame["ref"]]
            if not future.done():
                future.set_result(frame)
        elif op == "error":
            stats.count(stats.errors, frame.get("code", "?"))
            self.refused = True

    def on_assignment(self, conversation: dict[str, Any]) -> None:
        """An agent was given a conversation (or told again on connect): note when, and
        fetch the history of one it did not hold (its connection now watches it)."""
        conversation_id = conversation["id"]
        self.assigned[conversation_id] = time.time()
        if conversation_id not in self.convs:
            conv = self.convs[conversation_id] = Conv(conversation_id)
            self.dialer.spawn(self._catch_up(conv))

    async def _catch_up(self, conv: Conv) -> None:
        while True:
            reply = await self.request(
                {"op": "resume", "conversation_id": conv.id, "after_seq": conv.last_seq}
            )
            if reply["op"] != "resumed" or not reply.get("more"):
                return

    # -- connection loss ----------------------------------------------------------------
    def drop(self) -> None:
        """Cut the link at once, as a network failure would (the client then reconnects)."""
        if self.link is not None:
            self.link.abort()

    def on_closed(self, reason: str) -> None:
        self.link = None
        for future in self.waiters.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        if self.closing or self.reconnecting:
            return  # a running reconnect notices and tries again
        self.stats.count(self.stats.closes, reason)
        self.dropped_at = time.monotonic()
        self.reconnecting = True
        self.dialer.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        pause = random.uniform(0, self.dialer.jitter)
        try:
            if self.gate is not None:
                await self.gate.wait()  # kept away until the driver lets it back
            for _attempt in range(30):
                await asyncio.sleep(pause)
                if self.closing:
                    return
                try:
                    await self.connect()
                    await self.resume_all()
                    self.resend()
                except (aiohttp.ClientError, ConnectionError, TimeoutError, RuntimeError) as exc:
                    log.debug("%s %s: reconnect failed: %s", self.kind, self.ident, exc)
                    link, self.link = self.link, None
                    if link is not None:
                        link.abort()  # a half-resumed link is retried from scratch
                    pause = min(2.0, pause * 2 + 0.1)
                    continue
                self.resumed_at = time.monotonic()
                self.stats.reconnects += 1
                self.stats.resume.append(self.resumed_at - self.dropped_at)
                return
            log.warning("%s %s gave up reconnecting", self.kind, self.ident)
        finally:
            self.reconnecting = False

    def resend(self, older_than: float = 0.0, most: int = 30) -> int:
        """Re-send up to ``most`` unacknowledged messages (same cid) last tried before
        ``older_than`` (0: any); ``most`` keeps a retry burst under the gateway's rate limit.

        A live WebSocket loses nothing, it may only be slow: an ack that is merely late is
        not retried (retries of a saturated server only add to its load). Retries follow a
        reconnect, or a frame the server refused (an error frame, a failed long-poll POST).
        """
        link, count = self.link, 0
        if link is None:
            return 0
        if older_than and not self.refused:
            return 0
        now = time.time()
        for cid, (_, frame, tried) in list(self.pending.items()):
            if count >= most:
                break
            if older_than and tried > older_than:
                continue
            self.pending[cid] = (0.0, frame, now)  # no ack latency across an outage or a retry
            self.stats.resent += 1
            count += 1
            self.dialer.spawn(link.send(frame))
        if count < most:
            self.refused = False  # every refused frame had its retry
        return count

    async def close(self) -> None:
        self.closing = True
        link, self.link = self.link, None
        if link is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await link.close()
            link.abort()


class WsLink:
    """A WebSocket carrying frames as text messages."""

    __slots__ = ("owner", "reader", "ws")

    def __init__(self, owner: Participant, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.owner, self.ws = owner, ws
        self.reader = asyncio.ensure_future(self._read())

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_frame(orjson.dumps(frame), WSMsgType.TEXT)

    async def _read(self) -> None:
        ws, owner, reason = self.ws, self.owner, "closed"
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    break
                owner.on_frame(orjson.loads(msg.data))
            reason = f"ws_{ws.close_code}"
        except Exception as exc:  # a dropped socket surfaces in many shapes
            reason = type(exc).__name__
        if owner.link is self:
            owner.on_closed(reason)

    def address(self) -> tuple[str, int] | None:
        """This end's (ip, port): the peer address the server sees."""
        conn = self.ws._response.connection
        if conn is None or conn.transport is None:
            return None
        return conn.transport.get_extra_info("sockname")[:2]

    def abort(self) -> None:
        conn = self.ws._response.connection
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        else:
            self.reader.cancel()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


class LpLink:
    """A long-poll session: one ``recv`` always in flight, each send its own POST."""

    __slots__ = ("http", "owner", "reader", "session", "tasks", "url")

    def __init__(self, owner: Participant, http: aiohttp.ClientSession, url: str, session: str):
        self.owner, self.http, self.url, self.session = owner, http, url, session
        self.tasks: set[asyncio.Task] = set()
        self.reader = asyncio.ensure_future(self._read())

    async def send(self, frame: dict[str, Any]) -> None:
        """Fire the POST without waiting for it: replies come through ``recv``."""
        task = asyncio.ensure_future(self._post(orjson.dumps(frame)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, body: bytes) -> None:
        try:
            async with self.http.post(
                f"{self.url}/send", params={"session": self.session}, data=body
            ) as resp:
                if resp.status != 202:
                    self.owner.stats.count(self.owner.stats.errors, f"http_{resp.status}")
                    self.owner.refused = True
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            self.owner.refused = True

    async def _read(self) -> None:
        owner, reason = self.owner, "closed"
        params = {"session": self.session, "timeout": str(RECV_WAIT)}
        failures = 0
        try:
            while True:
                try:
                    async with self.http.get(f"{self.url}/recv", params=params) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            reason = f"http_{resp.status}"
                            break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures += 1  # a keep-alive socket closed under us: poll again
                    if failures > 3:
                        reason = type(exc).__name__
                        break
                    continue
                failures = 0
                for frame in orjson.loads(body)["frames"]:
                    owner.on_frame(frame)
        except asyncio.CancelledError:
            reason = "aborted"
        if owner.link is self:
            owner.on_closed(reason)

    def abort(self) -> None:
        self.reader.cancel()

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.http.post(f"{self.url}/close", params={"session": self.session}):
                pass


class GrpcLink:
    """One ``Connect`` stream; writes one at a time (a gRPC call takes one write at once)."""

    __slots__ = ("call", "lock", "owner", "reader")

    def __init__(self, owner: Participant, call: Any) -> None:
        self.owner, self.call = owner, call
        self.lock = asyncio.Lock()
        self.reader = asyncio.ensure_future(self._read())

    async def send(self, frame: dict[str, Any]) -> None:
        from kefu.plugins.transport_grpc.kefu_chat_pb2 import Frame

        async with self.lock:
            await self.call.write(Frame(json=orjson.dumps(frame)))

    async def _read(self) -> None:
        import grpc

        owner, reason = self.owner, "closed"
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    reason = f"grpc_{(await self.call.code()).name}"
                    break
                owner.on_frame(orjson.loads(message.json))
        except grpc.aio.AioRpcError as exc:
            reason = f"grpc_{exc.code().name}"
        except asyncio.CancelledError:
            reason = "aborted"
        except Exception as exc:
            reason = type(exc).__name__
        if owner.link is self:
            owner.on_closed(reason)

    def address(self) -> tuple[str, int] | None:
        return None  # streams share connections: no per-client socket

    def abort(self) -> None:
        self.call.cancel()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with self.lock:
                await self.call.done_writing()
        self.call.cancel()


class Dialer:
    """Opens links for the participants of one process, rotating source addresses."""

    def __init__(
        self, base: str, transport: str, sources: list[str], stats: Stats, jitter: float = 1.0
    ) -> None:
        self.base = base.rstrip("/")
        self.transport = transport
        self.stats = stats
        self.jitter = jitter
        self.sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(ip, 0), limit=0, ttl_dns_cache=None),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                skip_auto_headers=("User-Agent",),
            )
            for ip in sources
        ]
        self._turn = 0
        self._tasks: set[asyncio.Task] = set()
        self._channels: list[list] = []  # [channel, streams opened on it]

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; a failure is logged, never left unretrieved."""
        task = asyncio.ensure_future(_guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _session(self) -> aiohttp.ClientSession:
        self._turn = (self._turn + 1) % len(self.sessions)
        return self.sessions[self._turn]

    def _channel(self) -> Any:
        from kefu.plugins.transport_grpc.client import channel

        if not self._channels or self._channels[-1][1] >= STREAMS_PER_CHANNEL:
            self._channels.append([channel(self.base.removeprefix("grpc://")), 0])
        self._channels[-1][1] += 1
        return self._channels[-1][0]

    async def open(self, owner: Participant) -> WsLink | LpLink | GrpcLink:
        if self.transport == "grpc":
            from kefu.plugins.transport_grpc.client import metadata
            from kefu.plugins.transport_grpc.kefu_chat_pb2_grpc import ChatStub

            call = ChatStub(self._channel()).Connect(metadata=metadata(owner.token))
            return GrpcLink(owner, call)
        http = self._session()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if self.transport == "ws":
                ws = await http.ws_connect(
                    f"{self.base}/v1/ws",
                    params={"token": owner.token},
                    compress=0,
                    autoping=True,
                    max_msg_size=1 << 20,
                )
                link: WsLink | LpLink = WsLink(owner, ws)
                return link
            url = f"{self.base}/v1/poll"
            async with http.post(f"{url}/open", json={"token": owner.token}) as resp:
                if resp.status != 200:
                    raise ConnectionError(f"poll/open answered {resp.status}")
                session = (await resp.json())["session"]
            return LpLink(owner, http, url, session)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for http in self.sessions:
            await http.close()
        for ch, _ in self._channels:
            await ch.close()


async def _guarded(coro: Any) -> None:
    try:
        await coro
    except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.debug("background client task failed: %s", exc)
