"""Long-poll sessions that every worker process can serve.

A session is one gateway connection held by the process that opened it (its
*owner*). The owner records itself in the bus's shared state
(``lp:owner:<session>``, a lease renewed while the session is used) and beats a
liveness key (``lp:node:<address>``) every few seconds. A request for a session
this process does not hold is forwarded to the owner over the bus (an addressed
publish to the owner's node, the reply addressed back, a correlation id, a
timeout), so consecutive requests may land on any worker:

- ``send``: the owner feeds the body to the gateway and answers once it was
  processed, as a local ``send`` does;
- ``recv``: the owner waits for frames and hands them over as a *pending batch*;
  the asking process confirms (``commit``) before it writes the response, or
  gives them back (``nack``) when its client left. The owner serves nothing else
  of that session until the batch is settled, and puts a batch nobody confirmed
  back in front of the outbox: frames reach the client once, in order;
- an owner that stopped beating (killed) makes the asker answer
  ``410 session_lost``, recorded in ``lp:closed:<session>`` so every worker says
  the same; the client opens a new session and resumes from its last ``seq``;
- a shutdown ends every session of the process with ``shutdown``: requests in
  flight and later ones answer ``410 shutdown``, on every worker.

Sessions per principal and per remote address are capped, counted in shared sets
(``lp:by-principal:…``, ``lp:by-address:…``) so the caps hold across workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from kefu.core.web_app import bearer_token, error_response
from kefu.plugins.transport_longpoll.outbox import Outbox

log = logging.getLogger(__name__)

BATCH_BYTES = 8  # a send body may be 8 x max_frame_bytes (the gateway checks each frame)
#: Longest session id looked up (ours are 32 characters).
MAX_SESSION_ID = 64
#: Seconds an asker waits for the owner beyond the recv wait itself.
FORWARD_GRACE_S = 5.0
#: Seconds an asker waits for the owner to process a forwarded ``send``.
SEND_TIMEOUT_S = 30.0
#: Seconds a batch handed to another process may stay unconfirmed before it is requeued.
BATCH_SETTLE_S = 10.0
#: Ended sessions whose reason this process remembers (answers 410 without a lookup),
#: and relayed requests and calls remembered to drop second copies.
ENDED_KEPT = 4096
#: Reasons that answer 404 afterwards instead of 410: the session is simply gone.
SILENT_REASONS = frozenset({"client_closed", "idle_timeout"})

ABANDONED = object()  # a forwarded recv this process gave up on while shutting down
#: Seconds an abandoned recv waits for the owner's verdict (it may be shutting down too).
ABANDONED_WAIT_S = 1.5

GONE_MESSAGES = {
    "session_lost": "the worker holding this session stopped; open a new session and resume "
    "from your last seq",
    "shutdown": "the server is shutting down; open a new session and resume from your last seq",
    "revoked": "your session ended (signed out, password changed, disabled or deleted); "
    "sign in again",
}


def owner_key(session_id: str) -> str:
    return f"lp:owner:{session_id}"


def closed_key(session_id: str) -> str:
    return f"lp:closed:{session_id}"


def node_key(address: str) -> str:
    return f"lp:node:{address}"


def rpc_topic(instance: str) -> str:
    return f"lp:rpc:{instance}"


def reply_topic(instance: str) -> str:
    return f"lp:reply:{instance}"


def gone(reason: str) -> web.Response:
    message = GONE_MESSAGES.get(reason, "the session was closed; open a new one and resume")
    return error_response(410, reason, message)


def not_found() -> web.Response:
    return error_response(404, "session_not_found", "unknown or expired session; open one")


def frames_response(body: bytes, recv_timeout: float) -> web.Response:
    """``body`` is a JSON array of frames; ``recv_timeout`` the longest wait of the next
    ``recv`` (stretched under pressure: the client asks for it next time)."""
    tail = b',"recv_timeout":' + orjson.dumps(recv_timeout) + b"}"
    return web.Response(body=b'{"frames":' + body + tail, content_type="application/json")


def join_frames(frames: list[bytes]) -> bytes:
    return b"[" + b",".join(frames) + b"]"


class Pending:
    """Frames handed to another process for its client, until it confirms or gives them back."""

    __slots__ = ("done", "frames", "id", "timer")

    def __init__(self, batch_id: int, frames: list[bytes], loop: asyncio.AbstractEventLoop):
        self.id, self.frames = batch_id, frames
        self.done = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None


class Session:
    __slots__ = (
        "conn",
        "ended",
        "id",
        "keys",
        "last_seen",
        "outbox",
        "pending",
        "polling",
        "pump",
        "renewed",
        "waiter",
    )

    def __init__(self, session_id: str, conn: Any, outbox: Outbox, keys: tuple[str, str]) -> None:
        self.id = session_id
        self.conn = conn
        self.outbox = outbox
        self.keys = keys  # the cap sets it is counted in
        self.last_seen = self.renewed = time.monotonic()
        self.polling = 0  # recv requests in flight
        self.pump: asyncio.Task | None = None
        self.pending: Pending | None = None
        self.waiter: asyncio.Future | None = None
        self.ended: str | None = None

    def notify(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, seconds: float) -> None:
        """Until a frame is queued, the session ends or ``seconds`` passed."""
        if self.waiter is None or self.waiter.done():
            self.waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait([self.waiter], timeout=seconds)

    @property
    def close_reason(self) -> str | None:
        if self.ended is not None:
            return self.ended
        return (self.conn.close_reason or "closed") if self.conn.closed else None


class LongPoll:
    """The sessions of one kernel, the four HTTP handlers and the bus relay between workers."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.sessions: dict[str, Session] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()
        self.instance = secrets.token_hex(8)
        self.address = f"local|{self.instance}"
        self.closing: str | None = None
        self._calls: dict[str, asyncio.Future] = {}
        self._recv_calls: set[str] = set()
        self._serving: dict[str, asyncio.Task] = {}
        # the bus delivers at least once: requests served and calls finished, remembered
        self._served: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, bool] = OrderedDict()  # corr -> got its reply
        self._alive: dict[str, tuple[float, bool]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._unsubscribe: list[Any] = []
        self._sweeper: asyncio.Task | None = None
        self._beater: asyncio.Task | None = None
        #: True while ``longpoll_interval`` is shed (degradation level 1)
        self.stretched = False

    @property
    def settings(self) -> Any:
        return self.kernel.config.section("transport_longpoll")

    @property
    def recv_timeout(self) -> float:
        """The longest wait of one ``recv`` now: ``recv_timeout_shed`` while stretched."""
        s = self.settings
        return s.recv_timeout_shed if self.stretched else s.recv_timeout

    @property
    def state(self) -> Any:
        bus = self.kernel.bus
        return bus.state if bus is not None else None

    @property
    def _ttl(self) -> float:
        s = self.settings
        return s.idle_timeout + s.owner_timeout

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        bus = self.kernel.bus
        if bus is not None:
            self.address = f"{bus.node_id}|{self.instance}"
            self._unsubscribe = [
                bus.subscribe(rpc_topic(self.instance), self._on_rpc),
                bus.subscribe(reply_topic(self.instance), self._on_reply),
            ]
            await self._beat()
            self._beater = asyncio.create_task(self._beating(), name="kefu-longpoll-beat")
        self._sweeper = asyncio.create_task(self._sweep(), name="kefu-longpoll-sweeper")

    async def stop(self) -> None:
        for task in (self._sweeper, self._beater):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.end_all("shutdown")
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.state is not None:
            with contextlib.suppress(Exception):
                await self.state.delete(node_key(self.address))

    async def end_all(self, reason: str) -> None:
        """End every session of this process, waking its pending receives; stop asking others."""
        self.closing = reason
        for corr in list(self._recv_calls):
            future = self._calls.get(corr)
            if future is not None and not future.done():
                future.set_result(ABANDONED)
        for session in list(self.sessions.values()):
            await self._end(session, reason)

    def _spawn(self, work: Any) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("long-poll task failed", exc_info=task.exception())

    async def _beat(self) -> None:
        await self.state.set(node_key(self.address), b"1", ttl=self.settings.owner_timeout)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.settings.owner_timeout / 4)
            try:
                await self._beat()
            except Exception as exc:  # the bus is down: keep trying, sessions stay local
                log.warning("long-poll: cannot renew this worker's liveness key: %s", exc)

    async def _sweep(self) -> None:
        while True:
            idle = self.settings.idle_timeout
            await asyncio.sleep(min(idle / 4, 5.0))
            cutoff = time.monotonic() - idle
            for session in list(self.sessions.values()):
                if session.last_seen < cutoff and not session.polling:
                    await self._end(session, "idle_timeout")

    # -- one session ----------------------------------------------------------------
    async def _pump(self, session: Session) -> None:
        """Move the connection's frames into the session's outbox (bounded in bytes)."""
        conn, outbox = session.conn, session.outbox
        try:
            while not conn.closed:
                frames = await conn.take(256)
                for frame in frames:
                    if not outbox.put(frame):
                        conn.close("slow_consumer")
                        break
                session.notify()
        finally:
            session.notify()
        await self._end(session, conn.close_reason or "closed")

    async def _end(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        reason = session.close_reason or reason
        session.ended = reason
        if reason not in SILENT_REASONS:
            self._remember(session.id, reason)
        if session.pump is not None and session.pump is not asyncio.current_task():
            session.pump.cancel()
        self._settle(session, session.pending.id if session.pending else None, requeue=False)
        session.outbox.clear()
        session.notify()
        gateway = self.kernel.gateway
        if gateway is not None:
            await gateway.close(session.conn, reason)
        else:
            session.conn.close(reason)
        state = self.state
        if state is None:
            return
        try:
            if reason not in SILENT_REASONS:
                ttl = max(self._ttl, 300.0)
                await state.set(closed_key(session.id), reason.encode(), ttl=ttl)
            await state.release(owner_key(session.id), self.address)
            for key in session.keys:
                await state.set_remove(key, [session.id])
        except Exception as exc:
            log.warning("long-poll: cannot record the end of session %s: %s", session.id, exc)

    def _remember(self, session_id: str, reason: str) -> None:
        _bounded_put(self.ended, session_id, reason)

    def _touch(self, session: Session) -> None:
        now = session.last_seen = time.monotonic()
        if self.state is not None and now - session.renewed > self.settings.idle_timeout / 4:
            session.renewed = now
            self._spawn(self._renew(session))

    async def _renew(self, session: Session) -> None:
        state, ttl = self.state, self._ttl
        await state.lease(owner_key(session.id), self.address, ttl)
        for key in session.keys:
            await state.set_add(key, [session.id], ttl=ttl)

    async def _collect(self, session: Session, wait: float) -> list[bytes] | None:
        """Wait up to ``wait`` s for frames and take them; None once the session is closed."""
        session.polling += 1
        try:
            while session.pending is not None:  # a batch another process has not confirmed
                await asyncio.wait([session.pending.done])
            if not session.outbox and session.close_reason is None:
                await session.wait(wait)
        finally:
            session.polling -= 1
            session.last_seen = time.monotonic()
        if session.close_reason is not None:
            return None
        return session.outbox.take(self.settings.max_frames_per_recv)

    def _hold(self, session: Session, frames: list[bytes]) -> int:
        loop = asyncio.get_running_loop()
        pending = session.pending = Pending(next(self._ids), frames, loop)
        pending.timer = loop.call_later(BATCH_SETTLE_S, self._settle, session, pending.id, True)
        return pending.id

    def _settle(self, session: Session, batch_id: int | None, requeue: bool) -> None:
        pending = session.pending
        if pending is None or pending.id != batch_id:
            return
        session.pending = None
        if pending.timer is not None:
            pending.timer.cancel()
        if requeue and session.ended is None:
            session.outbox.requeue(pending.frames)
        pending.done.set_result(None)
        session.notify()

    # -- finding a session --------------------------------------------------------------
    async def _locate(self, request: web.Request) -> Session | str | web.Response:
        """The local session, the address of the process holding it, or the answer."""
        session_id = request.query.get("session", "")
        session = self.sessions.get(session_id)
        if session is not None:
            reason = session.close_reason
            if reason is not None:
                await self._end(session, reason)
                return gone(reason)
            self._touch(session)
            return session
        reason = self.ended.get(session_id)
        if reason is not None:
            return gone(reason)
        state = self.state
        if state is None or not session_id or len(session_id) > MAX_SESSION_ID:
            return not_found()
        try:
            owner = await state.get(owner_key(session_id))
            closed = None if owner is not None else await state.get(closed_key(session_id))
        except Exception as exc:
            log.warning("long-poll: shared state unavailable: %s", exc)
            return error_response(503, "unavailable", "session lookup failed; retry")
        if closed is not None:
            return gone(closed.decode())
        if owner is None or owner.decode() == self.address:
            return not_found()
        return owner.decode()

    async def _verdict(self, session_id: str, within: float) -> str | None:
        """Why the session ended, once its owner recorded it within ``within`` seconds."""
        deadline = time.monotonic() + within
        while self.state is not None:
            with contextlib.suppress(Exception):  # the bus going away: no verdict
                closed = await self.state.get(closed_key(session_id))
                if closed is not None:
                    return closed.decode()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        return None

    async def _lost(self, session_id: str, owner: str) -> web.Response:
        """The owner does not answer: the session is lost for every worker."""
        reason = "session_lost"
        log.warning("long-poll: session %s lost with its worker %s", session_id, owner)
        self._remember(session_id, reason)
        self._tell(owner, "drop", session_id, reason=reason)  # in case it is only cut off
        with contextlib.suppress(Exception):
            await self.state.set(closed_key(session_id), reason.encode(), ttl=max(self._ttl, 300))
            await self.state.release(owner_key(session_id), owner)
        return gone(reason)

    # -- the relay between processes --------------------------------------------------
    def _tell(self, to: str, op: str, session_id: str, body: bytes = b"", **fields: Any) -> None:
        node, _, instance = to.partition("|")
        header = orjson.dumps({"op": op, "sid": session_id, "from": self.address, **fields})
        self.kernel.bus.publish(rpc_topic(instance), header + b"\n" + body, node=node)

    async def _call(
        self, owner: str, op: str, session_id: str, within: float, body: bytes = b"", **fields: Any
    ) -> Any:
        """Ask the owner; its ``(header, body)``, :data:`ABANDONED`, or None when it is gone."""
        loop = asyncio.get_running_loop()
        corr = f"{self.instance}.{next(self._ids)}"
        future = self._calls[corr] = loop.create_future()
        if op == "recv":
            self._recv_calls.add(corr)
        deadline = loop.time() + within
        check = self.settings.owner_timeout / 4
        try:
            self._tell(owner, op, session_id, body, corr=corr, **fields)
            while not future.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await asyncio.wait([future], timeout=min(remaining, check))
                if not future.done() and not await self._is_alive(owner):
                    return None
            return future.result()
        except asyncio.CancelledError:
            self._tell(owner, "cancel", session_id, corr=corr)
            raise
        finally:
            self._calls.pop(corr, None)
            self._recv_calls.discard(corr)
            _bounded_put(self._finished, corr, future.done() and future.result() is not ABANDONED)

    async def _is_alive(self, owner: str) -> bool:
        now = time.monotonic()
        known = self._alive.get(owner)
        if known is not None and now - known[0] < self.settings.owner_timeout / 4:
            return known[1]
        try:
            alive = await self.state.get(node_key(owner)) is not None
        except Exception:
            alive = True  # the bus itself is down: not the owner's fault; the timeout decides
        if len(self._alive) > 1024:
            self._alive.clear()
        self._alive[owner] = (now, alive)
        return alive

    def _on_reply(self, topic: str, payload: bytes) -> None:
        raw, _, body = payload.partition(b"\n")
        header = orjson.loads(raw)
        corr = header.get("corr", "")
        future = self._calls.get(corr)
        if future is not None and not future.done():
            future.set_result((header, body))
        elif header.get("batch") and self._finished.get(corr) is False:
            # the request was given up (client gone, shutdown): give the frames back.
            # A second copy of a reply that was used is ignored.
            self._tell(header["from"], "nack", header["sid"], batch=header["batch"])

    def _on_rpc(self, topic: str, payload: bytes) -> None:
        raw, _, body = payload.partition(b"\n")
        msg = orjson.loads(raw)
        op, session = msg["op"], self.sessions.get(msg["sid"])
        if op in ("commit", "nack"):
            if session is not None:
                self._settle(session, msg["batch"], requeue=op == "nack")
        elif op == "cancel":
            task = self._serving.pop(f"{msg['from']} {msg['corr']}", None)
            if task is not None:
                task.cancel()
        elif op == "drop":
            if session is not None:
                self._spawn(self._end(session, msg["reason"]))
        else:
            key = f"{msg['from']} {msg['corr']}"
            if key in self._served:
                return  # a second copy of a request already served or being served
            _bounded_put(self._served, key, None)
            task = self._serving[key] = self._spawn(self._serve(msg, body))
            task.add_done_callback(lambda _, key=key: self._serving.pop(key, None))

    async def _serve(self, msg: dict, body: bytes) -> None:
        """Answer one forwarded request for a session of this process."""
        session_id, op = msg["sid"], msg["op"]
        session = self.sessions.get(session_id)
        header: dict[str, Any] = {"status": "ok"}
        reply = b""
        reason = session.close_reason if session is not None else self.ended.get(session_id)
        if session is not None and reason is not None:
            await self._end(session, reason)
        if reason is not None:
            header = {"status": "gone", "reason": reason}
        elif session is None:
            header = {"status": "unknown"}
        elif op == "recv":
            self._touch(session)
            frames = await self._collect(session, msg["wait"])
            if frames is None:
                header = {"status": "gone", "reason": session.close_reason or "closed"}
            else:
                if frames:
                    header["batch"] = self._hold(session, frames)
                reply = join_frames(frames)
        elif op == "send":
            self._touch(session)
            await self.kernel.gateway.receive(session.conn, body, batch=True)
        elif op == "close":
            await self._end(session, "client_closed")
        node, _, instance = msg["from"].partition("|")
        header.update(corr=msg["corr"], sid=session_id, **{"from": self.address})
        self.kernel.bus.publish(
            reply_topic(instance), orjson.dumps(header) + b"\n" + reply, node=node
        )

    @staticmethod
    def _answer(header: dict) -> web.Response | None:
        """The HTTP answer to an owner's refusal, or None when it served the request."""
        if header["status"] == "gone":
            return gone(header["reason"])
        if header["status"] == "unknown":
            return not_found()
        return None

    # -- caps ---------------------------------------------------------------------------
    async def _claim(self, session_id: str, keys: tuple[str, str]) -> str | None:
        """Count the new session under its principal and address; the cap it breaks, if any."""
        s = self.settings
        caps = (s.max_sessions_per_principal, s.max_sessions_per_address)
        names = ("token", "address")
        state = self.state
        if state is None:
            for key, cap, name in zip(keys, caps, names, strict=True):
                if sum(1 for x in self.sessions.values() if key in x.keys) >= cap:
                    return name
            return None
        await state.lease(owner_key(session_id), self.address, self._ttl)
        for index, (key, cap) in enumerate(zip(keys, caps, strict=True)):
            await state.set_add(key, [session_id], ttl=self._ttl)
            members = await state.set_members(key)
            if len(members) > cap:  # some may belong to sessions that ended without a word
                stale = [m for m in members if await state.get(owner_key(m)) is None]
                await state.set_remove(key, stale)
                if len(members) - len(stale) > cap:
                    for added in keys[: index + 1]:
                        await state.set_remove(added, [session_id])
                    await state.release(owner_key(session_id), self.address)
                    return names[index]
        return None

    # -- handlers -------------------------------------------------------------------
    async def open(self, request: web.Request) -> web.Response:
        gateway = self.kernel.gateway
        if gateway is None:
            return error_response(503, "unavailable", "the gateway plugin is not running")
        if self.closing:
            return error_response(503, self.closing, "the server is shutting down; retry")
        token = bearer_token(request)
        if token is None and request.can_read_body:
            with contextlib.suppress(ValueError):
                body = orjson.loads(await request.read())
                token = body.get("token") if isinstance(body, dict) else None
        principal = await gateway.authenticate(request, token if isinstance(token, str) else None)
        if principal is None:
            return error_response(401, "invalid_token", "the token is missing, invalid or expired")
        p, s = principal, self.settings
        keys = (f"lp:by-principal:{p.site_id}:{p.kind}:{p.id}", f"lp:by-address:{request.remote}")
        session_id = secrets.token_urlsafe(24)
        try:
            refused = await self._claim(session_id, keys)
        except Exception as exc:
            log.warning("long-poll: shared state unavailable: %s", exc)
            return error_response(503, "unavailable", "cannot open a session now; retry")
        if refused is not None:
            cap = s.max_sessions_per_principal if refused == "token" else s.max_sessions_per_address
            return error_response(
                429, "too_many_sessions", f"at most {cap} open long-poll sessions per {refused}"
            )
        credential = token if isinstance(token, str) else None
        conn = await gateway.open(
            principal, "longpoll", remote=request.remote, credential=credential
        )
        g = gateway.settings
        session = Session(session_id, conn, Outbox(g.outbox_frames, s.outbox_bytes), keys)
        self.sessions[session_id] = session
        session.pump = self._spawn(self._pump(session))
        return web.json_response(
            {
                "session": session_id,
                "connection_id": conn.id,
                "recv_timeout": self.recv_timeout,
                "idle_timeout": s.idle_timeout,
            }
        )

    async def send(self, request: web.Request) -> web.Response:
        where = await self._locate(request)
        if isinstance(where, web.Response):
            return where
        gateway = self.kernel.gateway
        limit = gateway.settings.max_frame_bytes * BATCH_BYTES
        too_large = error_response(413, "frame_too_large", f"a send is limited to {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        if len(body) > limit:
            return too_large
        if isinstance(where, Session):
            await gateway.receive(where.conn, body, batch=True)
            return web.json_response({"ok": True}, status=202)
        session_id = request.query["session"]
        reply = await self._call(where, "send", session_id, SEND_TIMEOUT_S, body)
        if reply is None:
            return await self._lost(session_id, where)
        return self._answer(reply[0]) or web.json_response({"ok": True}, status=202)

    async def recv(self, request: web.Request) -> web.Response:
        try:
            longest = self.recv_timeout
            wanted = float(request.query.get("timeout", longest))
        except ValueError:
            wanted = math.nan
        if not math.isfinite(wanted):
            return error_response(400, "invalid_field", "timeout must be a number of seconds")
        wait = min(max(wanted, 0.0), longest)
        where = await self._locate(request)
        if isinstance(where, web.Response):
            return where
        if isinstance(where, Session):
            frames = await self._collect(where, wait)
            if frames is None:
                reason = where.close_reason or "closed"
                await self._end(where, reason)
                return gone(reason)
            if _client_gone(request):
                where.outbox.requeue(frames)  # left for the next recv
                return web.Response(status=499)
            return frames_response(join_frames(frames), self.recv_timeout)
        session_id = request.query["session"]
        reply = await self._call(where, "recv", session_id, wait + FORWARD_GRACE_S, wait=wait)
        if reply is ABANDONED:
            # this worker stops: the owner keeps the session, unless it stops too (the whole
            # server's SIGTERM), whose verdict (410 shutdown) is then the answer
            verdict = await self._verdict(session_id, ABANDONED_WAIT_S)
            return gone(verdict) if verdict else frames_response(b"[]", self.recv_timeout)
        if reply is None:
            return await self._lost(session_id, where)
        header, body = reply
        refused = self._answer(header)
        if refused is not None:
            return refused
        batch = header.get("batch")
        if _client_gone(request):
            if batch:
                self._tell(where, "nack", session_id, batch=batch)
            return web.Response(status=499)
        if batch:  # confirmed before it is written: the owner serves nothing in between
            self._tell(where, "commit", session_id, batch=batch)
            await self.kernel.bus.flush()
        return frames_response(body, self.recv_timeout)

    async def close(self, request: web.Request) -> web.Response:
        session_id = request.query.get("session", "")
        session = self.sessions.get(session_id)
        if session is not None:
            await self._end(session, "client_closed")
        elif self.state is not None and session_id and len(session_id) <= MAX_SESSION_ID:
            owner = await self.state.get(owner_key(session_id))
            if owner is not None and owner.decode() != self.address:
                await self._call(owner.decode(), "close", session_id, FORWARD_GRACE_S)
        return web.json_response({"ok": True})


def _bounded_put(memory: OrderedDict, key: str, value: Any) -> None:
    memory[key] = value
    while len(memory) > ENDED_KEPT:
        memory.popitem(last=False)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
