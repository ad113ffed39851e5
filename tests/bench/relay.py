"""The baseline: a bare aiohttp relay speaking just enough of kefu's protocol for the harness.

It forwards a visitor's ``send`` to the agent sockets watching the conversation (and an
agent's to the visitor) with no storage, no routing, no pipeline, no authentication
beyond reading ``kind:id`` from the token, and no outbox: ``ack`` is sent at once. It runs
the same event loop as ``kefu run`` (uvloop) with compression off and the same heartbeat,
so the harness can run the very same client scenarios against it and show kefu's costs
as ratios. Long-polling is served by the same four endpoints as kefu's.

Run it as its own process: ``python tests/bench/relay.py --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import WSMsgType, web


class Peer:
    """One client connection: a WebSocket, or a long-poll session's queue."""

    __slots__ = ("convs", "id", "kind", "queue", "waiter", "ws")

    def __init__(self, kind: str, ident: str, ws: web.WebSocketResponse | None = None) -> None:
        self.kind, self.id, self.ws = kind, ident, ws
        self.convs: set[str] = set()
        self.queue: deque[bytes] = deque()
        self.waiter: asyncio.Future | None = None

    async def push(self, data: bytes) -> None:
        if self.ws is not None:
            if not self.ws.closed:
                await self.ws.send_frame(data, WSMsgType.TEXT)
            return
        self.queue.append(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Relay:
    """Conversations are ``[seq, peers]``; a conversation id is ``c-<visitor id>``."""

    def __init__(self) -> None:
        self.conversations: dict[str, list[Any]] = {}
        self.sessions: dict[str, Peer] = {}

    def _join(self, peer: Peer, conversation_id: str) -> list[Any]:
        entry = self.conversations.get(conversation_id)
        if entry is None:
            entry = self.conversations[conversation_id] = [0, set()]
        entry[1].add(peer)
        peer.convs.add(conversation_id)
        return entry

    def leave(self, peer: Peer) -> None:
        for conversation_id in peer.convs:
            entry = self.conversations.get(conversation_id)
            if entry is not None:
                entry[1].discard(peer)
        peer.convs.clear()

    async def handle(self, peer: Peer, data: bytes | str) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        batch = frame if isinstance(frame, list) else (frame,)
        for item in batch:
            reply = await self._op(peer, item)
            if reply is not None:
                if "ref" in item:
                    reply["ref"] = item["ref"]
                await peer.push(orjson.dumps(reply))

    async def _op(self, peer: Peer, frame: dict[str, Any]) -> dict[str, Any] | None:
        op = frame.get("op")
        if op == "send":
            conversation_id = frame["conversation_id"]
            entry = self._join(peer, conversation_id)
            entry[0] += 1
            seq = entry[0]
            message = {
                "op": "message",
                "conversation_id": conversation_id,
                "seq": seq,
                "cid": frame["cid"],
                "sender": {"kind": peer.kind, "id": peer.id},
                "type": "text",
                "text": frame.get("text", ""),
                "created_at": time.time(),
            }
            data = orjson.dumps(message)
            for other in tuple(entry[1]):
                if other is not peer:
                    await other.push(data)
            ack = {"op": "ack", "cid": frame["cid"], "seq": seq}
            return {**ack, "conversation_id": conversation_id}
        if op == "start":
            conversation_id = f"c-{peer.id}"
            created = conversation_id not in self.conversations
            entry = self._join(peer, conversation_id)
            view = {"id": conversation_id, "last_seq": entry[0], "state": "queued"}
            return {"op": "started", "conversation": view, "created": created}
        if op == "watch":
            entry = self._join(peer, frame["conversation_id"])
            view = {"id": frame["conversation_id"], "last_seq": entry[0]}
            return {"op": "watching", "conversation": view}
        if op == "resume":  # nothing stored, nothing to replay
            self._join(peer, frame["conversation_id"])
            after = frame.get("after_seq") or 0
            return {
                "op": "resumed",
                "conversation_id": frame["conversation_id"],
                "replayed": 0,
                "last_seq": after,
                "more": False,
            }
        if op == "ping":
            return {"op": "pong", "ts": time.time()}
        return {"op": "error", "code": "unknown_op", "message": f"unknown op {op!r}"}


def _principal(request: web.Request, token: str | None = None) -> tuple[str, str] | None:
    token = token or request.query.get("token")
    if not token:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or None
    if not token or ":" not in token:
        return None
    kind, ident = token.split(":", 1)
    return kind, ident


def make_app(heartbeat: float) -> web.Application:
    relay = Relay()

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=128 * 1024, heartbeat=heartbeat)
        await ws.prepare(request)
        who = _principal(request)
        if who is None:
            await ws.close(code=4401)
            return ws
        peer = Peer(*who, ws=ws)
        await peer.push(orjson.dumps({"op": "hello", "protocol": 1, "connection_id": id(peer)}))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await relay.handle(peer, msg.data)
        except ConnectionError:
            pass
        finally:
            relay.leave(peer)
        return ws

    async def poll_open(request: web.Request) -> web.Response:
        body = await request.read()
        token = orjson.loads(body).get("token") if body else None
        who = _principal(request, token)
        if who is None:
            return web.json_response({"error": {"code": "invalid_token"}}, status=401)
        session = secrets.token_urlsafe(16)
        peer = relay.sessions[session] = Peer(*who)
        peer.queue.append(orjson.dumps({"op": "hello", "protocol": 1}))
        return web.json_response({"session": session, "recv_timeout": 25.0})

    def _session(request: web.Request) -> Peer | None:
        return relay.sessions.get(request.query.get("session", ""))

    async def poll_send(request: web.Request) -> web.Response:
        peer = _session(request)
        if peer is None:
            return web.json_response({"error": {"code": "session_not_found"}}, status=404)
        await relay.handle(peer, await request.read())
        return web.json_response({"ok": True}, status=202)

    async def poll_recv(request: web.Request) -> web.Response:
        peer = _session(request)
        if peer is None:
            return web.json_response({"error": {"code": "session_not_found"}}, status=404)
        wait = min(float(request.query.get("timeout", 25)), 25.0)
        if not peer.queue:
            peer.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(peer.waiter, wait)
            except TimeoutError:
                pass
            finally:
                peer.waiter = None
        frames = [peer.queue.popleft() for _ in range(min(256, len(peer.queue)))]
        body = b'{"frames":[' + b",".join(frames) + b"]}"
        return web.Response(body=body, content_type="application/json")

    async def poll_close(request: web.Request) -> web.Response:
        peer = relay.sessions.pop(request.query.get("session", ""), None)
        if peer is not None:
            relay.leave(peer)
            _wake(peer)
        return web.json_response({"ok": True})

    def _wake(peer: Peer) -> None:
        if peer.waiter is not None and not peer.waiter.done():
            peer.waiter.set_result(None)

    async def shutdown(app: web.Application) -> None:
        for peer in relay.sessions.values():  # pending recvs answer now, not at their timeout
            _wake(peer)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.on_shutdown.append(shutdown)
    app.add_routes(
        [
            web.get("/v1/ws", websocket),
            web.post("/v1/poll/open", poll_open),
            web.post("/v1/poll/send", poll_send),
            web.get("/v1/poll/recv", poll_recv),
            web.post("/v1/poll/close", poll_close),
            web.get("/readyz", ready),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bare aiohttp WebSocket relay (bench baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat", type=float, default=30.0)
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(
        make_app(args.heartbeat),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        backlog=args.backlog,
    )


if __name__ == "__main__":
    main()
