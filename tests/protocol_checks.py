"""A client written from docs/protocol.md (and the upload part of docs/api.md) alone, and the
documented behaviours it checks against a running server: `run_checks(ctx)` runs every check
of :data:`CHECKS` in order, each isolated, and returns what failed, so a run reports "n of N"
instead of stopping at the first miss. Each check names the section it reads.

The server is only ever reached over HTTP and WebSocket; ``ctx.worker_of`` (optional) tells
which process holds a client's TCP connection, so a check can put a visitor and its agent on
different workers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

Check = Callable[["Ctx"], Awaitable[None]]
CHECKS: list[tuple[str, Check]] = []
#: Seconds one check may take.
CHECK_TIMEOUT = 15.0


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS.append((name, fn))
        return fn

    return register


class Peer:
    """One WebSocket connection that keeps every frame it receives, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def _next(self) -> dict:
        msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"closed: {msg.type.name} {msg.data} {msg.extra}")
        return orjson.loads(msg.data)

    async def expect(self, op: str, within: float = 5.0, **match: Any) -> dict:
        """The first unread frame with this ``op`` (and fields); the others stay unread."""
        async with asyncio.timeout(within):
            while True:
                for n, frame in enumerate(self.frames):
                    if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                        return self.frames.pop(n)
                self.frames.append(await self._next())

    async def quiet(self, op: str, within: float = 0.5, **match: Any) -> None:
        """No frame with this ``op`` (and fields) comes within ``within`` seconds."""
        try:
            frame = await self.expect(op, within, **match)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {frame}")

    async def request(self, within: float = 5.0, **frame: Any) -> dict:
        """Send with a fresh ``ref``; its reply (or error) by that ``ref``."""
        ref = frame.setdefault("ref", uuid.uuid4().hex[:12])
        await self.send(**frame)
        async with asyncio.timeout(within):
            while True:
                for n, got in enumerate(self.frames):
                    if got.get("ref") == ref:
                        return self.frames.pop(n)
                self.frames.append(await self._next())

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Ctx:
    base: str
    widget_key: str
    site_id: str
    admin_email: str
    admin_password: str
    http: aiohttp.ClientSession
    #: the process holding the server end of a WebSocket (None: do not care where)
    worker_of: Callable[[Peer], Awaitable[int | None]] | None = None
    admin_token: str = ""
    agent_token: str = ""
    peers: list[Peer] = field(default_factory=list)
    #: run after each check: conversations resolved, agents set offline, so that nothing a
    #: check left waiting is routed to the next check's agent
    undo: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    async def post(self, path: str, body: Any, token: str = "") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        headers["Content-Type"] = "application/json"
        async with self.http.post(self.base + path, data=data, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def visitor(self, token: str = "") -> dict:
        body = {"widget_key": self.widget_key, **({"token": token} if token else {})}
        status, out = await self.post("/v1/visitors/session", body)
        assert status == 200, (status, out)
        return out

    async def admin(self) -> str:
        if not self.admin_token:
            body = {"site_id": self.site_id, "email": self.admin_email,
                    "password": self.admin_password}  # fmt: skip
            status, out = await self.post("/v1/auth/login", body)
            assert status == 200, (status, out)
            self.admin_token = out["token"]
        return self.admin_token

    async def connect(self, token: str) -> Peer:
        ws = await self.http.ws_connect(f"{self.ws_base}/v1/ws?token={token}", autoping=True)
        peer = Peer(ws)
        self.peers.append(peer)
        await peer.expect("hello")
        return peer

    async def connect_apart(self, token: str, other: Peer) -> Peer:
        """A connection held by another worker than ``other``'s (when workers are known)."""
        if self.worker_of is None:
            return await self.connect(token)
        theirs = await self.worker_of(other)
        for _ in range(40):
            peer = await self.connect(token)
            if await self.worker_of(peer) != theirs:
                return peer
            await peer.close()
        raise AssertionError("40 connections all landed on one worker")

    async def new_agent(self, name: str) -> tuple[dict, str]:
        email = f"{name.lower()}-{uuid.uuid4().hex[:6]}@docs.test"
        body = {"email": email, "name": name, "password": "a-long-password", "roles": ["agent"]}
        status, agent = await self.post("/v1/agents", body, await self.admin())
        assert status == 201, (status, agent)
        status, out = await self.post(
            "/v1/auth/login",
            {"site_id": self.site_id, "email": email, "password": "a-long-password"},
        )
        assert status == 200, (status, out)
        return agent, out["token"]

    async def start(self, visitor: Peer, **frame: Any) -> dict:
        """``start``; the conversation is resolved (by its visitor) after the check."""
        started = await visitor.request(op="start", **frame)
        assert started["op"] == "started", started
        conv = started["conversation"]
        self.undo.append(lambda: visitor.request(op="resolve", conversation_id=conv["id"]))
        return started

    async def online(self, agent: Peer, **frame: Any) -> dict:
        """``presence`` online; offline again after the check."""
        reply = await agent.request(op="presence", status="online", **frame)
        assert reply["op"] == "presence_ok", reply
        self.undo.append(lambda: agent.request(op="presence", status="offline"))
        return reply

    async def chat(self, *, joined: bool = True) -> tuple[Peer, Peer, dict]:
        """A new online agent (its token in ``agent_token``) and a visitor on another worker
        with a started conversation; ``joined``: once the agent has it (``agent_joined`` to
        the visitor, ``assignment`` to the agent, whose connection then watches it)."""
        _, self.agent_token = await self.new_agent("Ann")
        agent = await self.connect(self.agent_token)
        await self.online(agent)
        visitor = await self.connect_apart((await self.visitor())["token"], agent)
        conv = (await self.start(visitor))["conversation"]
        if joined:
            await visitor.expect("agent_joined", conversation_id=conv["id"])
            assignment = await agent.expect("assignment")
            assert assignment["conversation"]["id"] == conv["id"], assignment
        return visitor, agent, conv


async def run_checks(ctx: Ctx, checks: list[tuple[str, Check]] = CHECKS) -> list[str]:
    """Every check in order; the failures as ``"name: what"`` (empty: all passed)."""
    failed = []
    for name, fn in checks:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await fn(ctx)
        except Exception as exc:  # a failed check is reported, the run goes on
            failed.append(f"{name}: {type(exc).__name__}: {exc}"[:600])
        finally:
            for undo in reversed(ctx.undo):
                try:
                    async with asyncio.timeout(5):
                        await undo()
                except Exception as exc:  # the check's own failure says more
                    failed.append(f"{name}: clean-up: {type(exc).__name__}: {exc}"[:300])
            ctx.undo.clear()
            for peer in ctx.peers:
                await peer.close()
            ctx.peers.clear()
    return failed


def _error(body: Any, code: str) -> bool:
    return (
        isinstance(body, dict)
        and body.get("error", {}).get("code") == code
        and bool(body["error"].get("message"))
    )


# -- 1. Identity ------------------------------------------------------------------------------
@check("1 widget config has the documented keys")
async def _widget_config(ctx: Ctx) -> None:
    async with ctx.http.get(f"{ctx.base}/v1/widget/config", params={"key": ctx.widget_key}) as r:
        assert r.status == 200
        body = await r.json()
    keys = {"site_id", "name", "greeting", "color", "languages", "protocol", "open_hours",
            "agents_online", "online", "bot", "team", "prechat"}  # fmt: skip
    assert keys <= set(body), keys - set(body)
    assert body["site_id"] == ctx.site_id and {"enabled", "fields"} <= set(body["prechat"])


@check("1 widget config: a missing or unknown key is 404 invalid_widget_key")
async def _widget_config_unknown(ctx: Ctx) -> None:
    for params in ({"key": "no-such-key"}, {}):
        async with ctx.http.get(f"{ctx.base}/v1/widget/config", params=params) as r:
            assert r.status == 404 and _error(await r.json(), "invalid_widget_key"), params


@check("1 visitor session: token, expires_at in 30 days, visitor_id, site_id")
async def _visitor_session(ctx: Ctx) -> None:
    out = await ctx.visitor()
    assert {"token", "expires_at", "visitor_id", "site_id"} <= set(out)
    assert out["site_id"] == ctx.site_id
    assert abs(out["expires_at"] - (time.time() + 2592000)) < 60


@check("1 visitor session: the previous token keeps the visitor")
async def _visitor_keeps(ctx: Ctx) -> None:
    first = await ctx.visitor()
    again = await ctx.visitor(first["token"])
    assert again["visitor_id"] == first["visitor_id"] and again["token"]


@check("1 visitor session: unknown key 401, not JSON 400 bad_json, bad field 400")
async def _visitor_refusals(ctx: Ctx) -> None:
    status, out = await ctx.post("/v1/visitors/session", {"widget_key": "nope"})
    assert status == 401 and _error(out, "invalid_widget_key"), (status, out)
    status, out = await ctx.post("/v1/visitors/session", b"{not json")
    assert status == 400 and _error(out, "bad_json"), (status, out)
    body = {"widget_key": ctx.widget_key, "attributes": "not an object"}
    status, out = await ctx.post("/v1/visitors/session", body)
    assert status == 400 and _error(out, "invalid_field"), (status, out)


@check("1 signed identity: a site without an identity secret is 401 identity_not_configured")
async def _identity_unconfigured(ctx: Ctx) -> None:
    for claim in ({"user_id": "cust-1"}, {"user_id": "cust-1", "user_hash": "00" * 32}):
        body = {"widget_key": ctx.widget_key, **claim}
        status, out = await ctx.post("/v1/visitors/session", body)
        assert status == 401 and _error(out, "identity_not_configured"), (claim, status, out)


@check("1 agent login: token for 12 hours, the agent with its roles")
async def _login(ctx: Ctx) -> None:
    body = {"site_id": ctx.site_id, "email": ctx.admin_email, "password": ctx.admin_password}
    status, out = await ctx.post("/v1/auth/login", body)
    assert status == 200, (status, out)
    assert abs(out["expires_at"] - (time.time() + 43200)) < 60
    agent = out["agent"]
    assert agent["site_id"] == ctx.site_id and agent["email"] == ctx.admin_email
    assert "admin" in agent["roles"] and {"id", "name"} <= set(agent)


@check("1 agent login: a wrong password is 401 invalid_credentials")
async def _login_wrong(ctx: Ctx) -> None:
    body = {"site_id": ctx.site_id, "email": ctx.admin_email, "password": "wrong-password"}
    status, out = await ctx.post("/v1/auth/login", body)
    assert status == 401 and _error(out, "invalid_credentials"), (status, out)


@check("api POST /v1/agents answers 201")
async def _agents_201(ctx: Ctx) -> None:
    agent, token = await ctx.new_agent("Ann")
    assert agent["name"] == "Ann" and token


# -- 2. Transports ------------------------------------------------------------------------------
@check("2 WebSocket: hello first, with protocol, principal, limits and heartbeat_s")
async def _hello(ctx: Ctx) -> None:
    session = await ctx.visitor()
    ws = await ctx.http.ws_connect(f"{ctx.ws_base}/v1/ws?token={session['token']}")
    peer = Peer(ws)
    ctx.peers.append(peer)
    hello = await peer._next()
    assert hello["op"] == "hello" and hello["protocol"] == 1 and hello["connection_id"]
    principal = hello["principal"]
    assert principal == {"kind": "visitor", "id": session["visitor_id"], "site": ctx.site_id}
    assert hello["limits"] == {"max_frame_bytes": 65536, "rate": 20.0, "burst": 40}
    assert hello["heartbeat_s"] == 20.0


@check("2 WebSocket: a bad token gets a fatal invalid_token frame, then 4401")
async def _bad_token(ctx: Ctx) -> None:
    async with ctx.http.ws_connect(f"{ctx.ws_base}/v1/ws?token=forged") as ws:
        msg = await ws.receive(timeout=5)
        frame = orjson.loads(msg.data)
        assert frame["op"] == "error" and frame["code"] == "invalid_token" and frame["fatal"]
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401, msg


@check("2 WebSocket: over max_frame_bytes is frame_too_large with ref; the connection stays")
async def _frame_too_large(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    await peer.send(op="ping", ref="big", pad="x" * 70000)
    error = await peer.expect("error", ref="big")
    assert error["code"] == "frame_too_large", error
    assert (await peer.request(op="ping"))["op"] == "pong"


@check("2 WebSocket: a message over max_msg_size closes with 1009")
async def _too_big(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    await peer.send(op="ping", pad="x" * 140000)
    async with asyncio.timeout(5):
        while (msg := await peer.ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert peer.ws.close_code == 1009, (msg, peer.ws.close_code)


@check("3 ping: pong with ref, ts and heartbeat_s")
async def _ping(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    pong = await peer.request(op="ping", ref="p1")
    assert pong["op"] == "pong" and pong["ref"] == "p1" and pong["heartbeat_s"] == 20.0
    assert abs(pong["ts"] - time.time()) < 30


class Poll:
    """A long-poll client; ``fresh`` opens a new TCP connection per request (workers vary)."""

    def __init__(self, ctx: Ctx, session: str) -> None:
        self.ctx, self.session = ctx, session

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            url = f"{self.ctx.base}/v1/poll/{path}"
            params = {"session": self.session, **params}
            data = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
            async with http.request(method, url, params=params, data=data) as resp:
                return resp.status, await resp.json(content_type=None)

    async def frames_until(self, op: str, within: float = 8.0) -> list[dict]:
        got: list[dict] = []
        deadline = time.monotonic() + within
        while not any(f.get("op") == op for f in got):
            assert time.monotonic() < deadline, f"no {op!r} in {got}"
            status, out = await self.call("GET", "recv", timeout="2")
            assert status == 200, (status, out)
            got += out["frames"]
        return got


async def open_poll(ctx: Ctx, token: str) -> tuple[Poll, dict]:
    status, out = await ctx.post("/v1/poll/open", {"token": token})
    assert status == 200, (status, out)
    return Poll(ctx, out["session"]), out


@check("2 long-poll: open answers session, connection_id, recv_timeout 25, idle_timeout 60")
async def _poll_open(ctx: Ctx) -> None:
    poll, out = await open_poll(ctx, (await ctx.visitor())["token"])
    assert out["session"] and out["connection_id"]
    assert (out["recv_timeout"], out["idle_timeout"]) == (25, 60), out
    frames = await poll.frames_until("hello")
    assert next(f for f in frames if f["op"] == "hello")["protocol"] == 1
    await poll.call("POST", "close")
    status, out = await ctx.post("/v1/poll/open", {"token": "forged"})
    assert status == 401 and _error(out, "invalid_token"), (status, out)


@check("2 long-poll: send is 202, replies come through recv, whichever worker answers")
async def _poll_roundtrip(ctx: Ctx) -> None:
    poll, _ = await open_poll(ctx, (await ctx.visitor())["token"])
    for n in range(6):  # every request on a new TCP connection: both workers answer some
        status, out = await poll.call("POST", "send", {"op": "ping", "ref": n})
        assert (status, out) == (202, {"ok": True}), (status, out)
        frames = await poll.frames_until("pong")
        assert [f["ref"] for f in frames if f["op"] == "pong"] == [n], frames
    await poll.call("POST", "close")


@check("2 long-poll bodies: not JSON 202 + bad_json; >64 frames frame_too_large; long ref")
async def _poll_bodies(ctx: Ctx) -> None:
    poll, _ = await open_poll(ctx, (await ctx.visitor())["token"])
    await poll.frames_until("hello")
    status, _ = await poll.call("POST", "send", b"{nope")
    assert status == 202
    assert any(f.get("code") == "bad_json" for f in await poll.frames_until("error"))
    status, _ = await poll.call("POST", "send", [{"op": "ping"}] * 65)
    assert status == 202
    frames = await poll.frames_until("error")
    assert [f["code"] for f in frames if f["op"] == "error"] == ["frame_too_large"], frames
    assert not any(f["op"] == "pong" for f in frames)  # nothing in it processed
    await poll.call("POST", "send", [{"op": "ping", "ref": "r" * 129}, 7, {"op": "ping"}])
    frames = await poll.frames_until("pong")
    while sum(f["op"] == "error" for f in frames) < 2:  # the errors may come in a later recv
        frames += await poll.frames_until("error")
    errors = {(f["code"], f.get("field")) for f in frames if f["op"] == "error"}
    assert {("invalid_field", "ref"), ("bad_frame", None)} <= errors, frames
    await poll.call("POST", "close")


@check("2 long-poll: a bad timeout 400; after close 404 session_not_found; close unknown 200")
async def _poll_close(ctx: Ctx) -> None:
    poll, _ = await open_poll(ctx, (await ctx.visitor())["token"])
    status, out = await poll.call("GET", "recv", timeout="nan")
    assert status == 400 and _error(out, "invalid_field"), (status, out)
    assert await poll.call("POST", "close") == (200, {"ok": True})
    status, out = await poll.call("GET", "recv", timeout="1")
    assert status == 404 and _error(out, "session_not_found"), (status, out)
    assert await Poll(ctx, "no-such-session").call("POST", "close") == (200, {"ok": True})


# -- 3. Frames ------------------------------------------------------------------------------
@check("3 start: started with ref, created, the conversation; again: the same one")
async def _start(ctx: Ctx) -> None:
    session = await ctx.visitor()
    peer = await ctx.connect(session["token"])
    started = await ctx.start(peer, ref=1)
    assert started["ref"] == 1 and started["created"] is True
    conv = started["conversation"]
    assert conv["site_id"] == ctx.site_id and conv["visitor_id"] == session["visitor_id"]
    assert conv["last_seq"] == 0 and {"id", "state", "assignee_id", "created_at"} <= set(conv)
    again = await peer.request(op="start")
    assert again["conversation"]["id"] == conv["id"] and again["created"] is False


@check("3 start: agents of the site get a conversation frame (event started)")
async def _conversation_event(ctx: Ctx) -> None:
    agent = await ctx.connect(await ctx.admin())
    visitor = await ctx.connect_apart((await ctx.visitor())["token"], agent)
    conv = (await ctx.start(visitor))["conversation"]
    frame = await agent.expect("conversation", event="started")
    while frame["conversation"]["id"] != conv["id"]:
        frame = await agent.expect("conversation", event="started")


@check("3/9 an online agent with a free slot: agent_joined and no queue frame before it")
async def _agent_joined(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat(joined=False)
    joined = await visitor.expect("agent_joined", conversation_id=conv["id"])
    assert joined["agent"]["id"] and joined["agent"]["name"], joined
    assert not any(f["op"] == "queue" for f in visitor.frames), visitor.frames
    assignment = await agent.expect("assignment")
    assert assignment["conversation"]["id"] == conv["id"] and assignment["reason"] == "routed"
    assert assignment["answer_within_s"] == 120


@check("3/4 send: ack after store, seq 1, 2 across senders; the other worker's side gets it")
async def _send(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat()
    cid = str(uuid.uuid4())
    ack = await visitor.request(op="send", conversation_id=conv["id"], cid=cid, text="Hello")
    assert ack == {"op": "ack", "cid": cid, "seq": 1, "conversation_id": conv["id"],
                   "ref": ack["ref"]}, ack  # fmt: skip
    message = await agent.expect("message", cid=cid)
    assert message["seq"] == 1 and message["type"] == "text" and message["text"] == "Hello"
    assert message["sender"]["kind"] == "visitor" and message["attachment"] is None
    assert isinstance(message["meta"], dict) and message["created_at"] > 0
    reply = await agent.request(op="send", conversation_id=conv["id"], cid="a1", text="Hi!")
    assert reply["op"] == "ack" and reply["seq"] == 2, reply
    got = await visitor.expect("message", cid="a1")
    assert got["sender"]["kind"] == "agent" and got["seq"] == 2
    await visitor.quiet("message", cid=cid)  # not to the connection that sent it


@check("4 a re-sent cid is acknowledged again with its seq and duplicate: true")
async def _duplicate(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat()
    first = await visitor.request(op="send", conversation_id=conv["id"], cid="same", text="x")
    again = await visitor.request(op="send", conversation_id=conv["id"], cid="same", text="x")
    assert again["op"] == "ack" and again["seq"] == first["seq"] and again["duplicate"] is True
    await agent.expect("message", cid="same")
    await agent.quiet("message", cid="same")  # delivered once


@check("3 send refusals: type, text, attachment, blank text; ref and field echoed")
async def _send_refusals(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    conv = (await ctx.start(peer))["conversation"]["id"]
    cases = [
        ({"type": "video", "text": "x"}, "invalid_field", "type"),
        ({"text": "x" * 8001}, "invalid_field", "text"),
        ({"type": "image"}, "missing_field", "attachment"),
        ({"type": "file", "attachment": {"name": "n"}}, "invalid_field", "attachment"),
        ({"text": "   "}, "missing_field", "text"),
        ({}, "missing_field", "text"),
    ]
    for n, (extra, code, fieldname) in enumerate(cases):
        frame = {"op": "send", "conversation_id": conv, "cid": f"r{n}", "ref": n, **extra}
        error = await peer.request(**frame)
        assert (error["op"], error["code"], error.get("field"), error["ref"]) == (
            "error", code, fieldname, n), (extra, error)  # fmt: skip


@check("3 an attachment that is no upload of the site: rejected invalid_attachment, cid echoed")
async def _bad_attachment(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    conv = (await ctx.start(peer))["conversation"]["id"]
    error = await peer.request(op="send", conversation_id=conv, cid="att", type="image",
                               attachment={"url": "https://evil.example/x.png"})  # fmt: skip
    assert error["code"] == "rejected" and error["reason"] == "invalid_attachment", error
    assert error["cid"] == "att"


async def _upload(ctx: Ctx, token: str, data: bytes, name: str) -> dict:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    headers = {"Authorization": f"Bearer {token}"}
    async with ctx.http.post(f"{ctx.base}/v1/uploads", data=form, headers=headers) as r:
        assert r.status == 201, (r.status, await r.text())
        return await r.json()


@check("3/api an image uploaded then sent by id reaches the visitor; either worker serves it")
async def _image(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat()
    token, png = await ctx.admin(), b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    up = await _upload(ctx, token, png, "photo.png")
    assert up["mime"] == "image/png" and up["size"] == len(png) and up["name"] == "photo.png"
    ack = await agent.request(op="send", conversation_id=conv["id"], cid="img", type="image",
                              text="", attachment={"id": up["id"]})  # fmt: skip
    assert ack["op"] == "ack", ack
    message = await visitor.expect("message", cid="img")
    assert message["type"] == "image" and message["attachment"]["mime"] == "image/png"
    for _ in range(4):  # a new TCP connection each time: both workers serve it
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as h:
            async with h.get(ctx.base + up["url"], params={"token": token}) as r:
                assert r.status == 200 and await r.read() == png


@check("3 resume: the messages after after_seq, oldest first, then resumed")
async def _resume(ctx: Ctx) -> None:
    visitor, _, conv = await ctx.chat()
    for n in range(3):
        ack = await visitor.request(op="send", conversation_id=conv["id"], cid=f"m{n}", text=f"{n}")
        assert ack["op"] == "ack", ack
    other = await ctx.connect(await ctx.admin())
    await other.send(op="resume", conversation_id=conv["id"], after_seq=1)
    resumed = await other.expect("resumed", conversation_id=conv["id"])
    seqs = [f["seq"] for f in other.frames if f.get("op") == "message"]
    assert seqs == [2, 3], other.frames
    assert (resumed["replayed"], resumed["last_seq"], resumed["more"]) == (2, 3, False), resumed


@check("3 watch / unwatch: watching with the conversation, unwatched")
async def _watch(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    conv = (await ctx.start(peer))["conversation"]["id"]
    agent = await ctx.connect(await ctx.admin())
    watching = await agent.request(op="watch", conversation_id=conv)
    assert watching["op"] == "watching" and watching["conversation"]["id"] == conv, watching
    unwatched = await agent.request(op="unwatch", conversation_id=conv)
    assert unwatched == {"op": "unwatched", "conversation_id": conv, "ref": unwatched["ref"]}


@check("3 typing and read reach the other side, never the author's other tab")
async def _typing(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat()
    ack = await visitor.request(op="send", conversation_id=conv["id"], cid="t", text="t")
    tab = await ctx.connect(ctx.agent_token)  # the agent's second tab
    await tab.request(op="watch", conversation_id=conv["id"])
    await agent.request(op="watch", conversation_id=conv["id"])
    await agent.send(op="typing", conversation_id=conv["id"], state=True)
    typing = await visitor.expect("typing", conversation_id=conv["id"])
    assert typing["from"]["kind"] == "agent" and typing["state"] is True
    await agent.send(op="read", conversation_id=conv["id"], seq=ack["seq"])
    await tab.quiet("typing")
    await visitor.send(op="read", conversation_id=conv["id"], seq=ack["seq"])
    read = await agent.expect("read", conversation_id=conv["id"])
    assert read["seq"] == ack["seq"] and read["by"]["kind"] == "visitor"
    await tab.quiet("read", by={"kind": "agent", "id": read["by"]["id"]})


@check("3 presence: presence_ok echoes status and accepting; the others get it, not its own tabs")
async def _presence(ctx: Ctx) -> None:
    ann, ann_token = await ctx.new_agent("Pia")
    mine = await ctx.connect(ann_token)
    my_tab = await ctx.connect(ann_token)
    colleague = await ctx.connect_apart(await ctx.admin(), mine)
    reply = await ctx.online(mine, accepting=False)
    assert (reply["op"], reply["status"], reply["accepting"]) == ("presence_ok", "online", False)
    seen = await colleague.expect("presence", agent_id=ann["id"], status="online")
    assert seen["agent_id"] == ann["id"]
    await my_tab.quiet("presence", agent_id=ann["id"])
    await mine.quiet("presence", agent_id=ann["id"])


@check("6 unknown op, not an object: unknown_op, bad_frame; a visitor's presence: forbidden")
async def _errors(ctx: Ctx) -> None:
    peer = await ctx.connect((await ctx.visitor())["token"])
    error = await peer.request(op="fly")
    assert error["code"] == "unknown_op" and error["op"] == "error", error
    await peer.ws.send_str("[1, 2]")
    assert (await peer.expect("error"))["code"] == "bad_frame"
    await peer.ws.send_str("{nope")
    assert (await peer.expect("error"))["code"] == "bad_json"
    error = await peer.request(op="presence", status="online")
    assert error["code"] == "forbidden", error
    error = await peer.request(op="resume", conversation_id="no-such", after_seq=0)
    assert error["code"] in ("conversation_not_found", "forbidden"), error


@check("api/3 a message deleted over REST: message_deleted to the visitor; resume tombstone")
async def _message_deleted(ctx: Ctx) -> None:
    visitor, _, conv = await ctx.chat()
    ack = await visitor.request(op="send", conversation_id=conv["id"], cid="del", text="oops")
    url = f"{ctx.base}/v1/conversations/{conv['id']}/messages/{ack['seq']}"
    headers = {"Authorization": f"Bearer {await ctx.admin()}"}
    async with ctx.http.delete(url, headers=headers) as r:
        assert r.status == 200, await r.text()
    deleted = await visitor.expect("message_deleted", conversation_id=conv["id"])
    assert (deleted["seq"], deleted["cid"]) == (ack["seq"], "del") and deleted["deleted_by"]
    other = await ctx.connect(await ctx.admin())
    await other.send(op="resume", conversation_id=conv["id"], after_seq=0)
    tomb = await other.expect("message", cid="del")
    assert tomb["text"] == "" and tomb["meta"]["deleted"]["by"], tomb


@check("9 accept, note (never to the visitor), tag, resolve: resolved then csat_request")
async def _workflow(ctx: Ctx) -> None:
    visitor, agent, conv = await ctx.chat()
    accepted = await agent.request(op="accept", conversation_id=conv["id"])
    assert accepted["op"] == "accept_ok" and accepted["conversation"]["meta"]["accepted_at"]
    answer = await agent.request(op="send", conversation_id=conv["id"], cid="ans", text="Yes")
    assert answer["op"] == "ack", answer
    note = await agent.request(op="note", conversation_id=conv["id"], text="refund agreed")
    assert note["op"] == "note_ok" and note["note"]["text"] == "refund agreed", note
    tags = await agent.request(op="tag", conversation_id=conv["id"], add=["Refund"])
    assert tags["op"] == "tag_ok" and tags["tags"] == ["refund"], tags
    done = await agent.request(op="resolve", conversation_id=conv["id"])
    assert done["op"] == "resolve_ok", done
    resolved = await visitor.expect("resolved", conversation_id=conv["id"])
    assert resolved["by"]["kind"] == "agent"
    assert (await visitor.expect("csat_request", conversation_id=conv["id"]))["scale"] == 5
    await visitor.quiet("note")
    late = await visitor.request(op="send", conversation_id=conv["id"], cid="late", text="?")
    assert late["code"] == "conversation_resolved", late
    rated = await visitor.request(op="rate", conversation_id=conv["id"], score=5)
    assert rated["op"] == "rate_ok" and rated["rating"]["score"] == 5, rated


@check("9 nobody online: queue frames (available false, no_agents) on both workers; queue_status")
async def _queue(ctx: Ctx) -> None:
    first = await ctx.connect((await ctx.visitor())["token"])
    second = await ctx.connect_apart((await ctx.visitor())["token"], first)
    for visitor in (first, second):  # one of them is not on the routing lease holder's worker
        conv = (await ctx.start(visitor))["conversation"]
        frame = await visitor.expect("queue", conversation_id=conv["id"])
        assert frame["available"] is False and frame["reason"] == "no_agents", frame
        assert frame["eta_s"] is None and frame["position"] >= 1, frame
        status = await visitor.request(op="queue_status", conversation_id=conv["id"])
        assert status["op"] == "queue" and status["state"] == "queued", status
        await visitor.quiet("agent_joined")
