"""The gRPC servicer: ``Connect`` (the frame stream) and the unary ``History`` and
``GetConversation``, all ending in the gateway and storage like the other transports.

A stream is one gateway connection (transport ``grpc``): each ``Frame`` the client
sends goes to ``gateway.receive`` exactly as a WebSocket text message does, and
what the connection's outbox holds is written back one ``Frame`` per protocol
frame. A connection the server closes gets the same fatal ``error`` frame as on
the WebSocket, then the stream ends with a status (:data:`CLOSE_STATUS`) and the
reason in the trailing metadata ``kefu-close-reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
import orjson

from kefu.core.types import Principal
from kefu.plugins.transport_grpc import kefu_chat_pb2 as pb
from kefu.plugins.transport_grpc import kefu_chat_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

TRANSPORT = "grpc"
SERVICE_NAME = "kefu.v1.Chat"
HISTORY_DEFAULT, HISTORY_MAX = 100, 500
FATAL_WRITE_S = 1.0

#: How a stream the server ends is reported: status code and the error frame's text.
CLOSE_STATUS: dict[str, tuple[grpc.StatusCode, str]] = {
    "invalid_token": (
        grpc.StatusCode.UNAUTHENTICATED,
        "the token is missing, forged, expired or of an unknown site",
    ),
    "shutdown": (grpc.StatusCode.UNAVAILABLE, "the server is stopping; reconnect and resume"),
    "slow_consumer": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "you did not read fast enough; reconnect and resume",
    ),
    "flood": (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many frames past the rate limit"),
    "revoked": (
        grpc.StatusCode.UNAUTHENTICATED,
        "your session ended (signed out, password changed, disabled or deleted); sign in again",
    ),
}


def fatal_frame(reason: str) -> bytes:
    message = CLOSE_STATUS[reason][1]
    return orjson.dumps({"op": "error", "code": reason, "message": message, "fatal": True})


def bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def service_principal(identity: Any) -> Principal:
    """The principal of a service identity (its actions kept as ``action:<name>`` roles)."""
    roles = frozenset({"service", *(f"action:{a}" for a in identity.actions)})
    return Principal(kind="system", id=identity.name, site_id=identity.site_id, roles=roles)


class ChatService(pb_grpc.ChatServicer):
    """One per running transport; ``transport`` is its :class:`GrpcTransport`."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.kernel = transport.kernel

    # -- who is calling -------------------------------------------------------------
    async def _principal(self, context: grpc.aio.ServicerContext) -> tuple[Principal | None, Any]:
        """``(principal, remote)``; an unauthenticated call gets ``(None, remote)``."""
        transport = self.transport
        peer = context.peer()
        names: tuple[str, ...] = ()
        remote = peer
        if transport.front is not None:
            client = transport.front.peer(peer)
            if client is None:  # not through the TLS port
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "connect through the TLS port"
                )
            names, remote = client.names, client.remote
        token = bearer(context)
        if token is not None:
            gateway = self.kernel.gateway
            principal = await gateway.authenticate(None, token) if gateway is not None else None
            return principal, remote
        for name in names:
            identity = transport.services.get(name)
            if identity is not None:
                return service_principal(identity), remote
        return None, remote

    # -- the frame stream ------------------------------------------------------------
    async def Connect(self, request_iterator, context):
        gateway = self.kernel.gateway
        if gateway is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is not running")
        principal, remote = await self._principal(context)
        if principal is None:
            await self._end(context, "invalid_token")
            return
        # the token is checked again when the agent's identity changes (kefu.core.identity)
        conn = await gateway.open(principal, TRANSPORT, remote=remote, credential=bearer(context))
        streams = self.transport.streams
        streams.add(conn)
        reader = asyncio.create_task(self._read(request_iterator, conn))
        try:
            await self._write(context, conn)
        finally:
            streams.discard(conn)
            reader.cancel()
            await gateway.close(conn, "client_closed")  # keeps an earlier, better reason
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        reason = conn.close_reason or "client_closed"
        if reason in CLOSE_STATUS:
            await self._end(context, reason, write=reason != "slow_consumer")

    async def _read(self, request_iterator, conn) -> None:
        gateway = self.kernel.gateway
        try:
            async for frame in request_iterator:
                await gateway.receive(conn, frame.json)
                if conn.closed:
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.debug("grpc stream %s: read ended: %s", conn.id, exc)
        # the client half-closed or went away: like a WebSocket close
        await gateway.close(conn, "client_closed")

    async def _write(self, context: grpc.aio.ServicerContext, conn) -> None:
        timeout = self.transport.settings.send_timeout
        frame_type = pb.Frame
        try:
            while True:
                frames = await conn.take()
                if not frames:
                    return
                async with asyncio.timeout(timeout):
                    for data in frames:
                        await context.write(frame_type(json=data))
        except TimeoutError:
            conn.close("slow_consumer")
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError, RuntimeError):
            conn.close("client_closed")

    async def _end(self, context, reason: str, write: bool = True) -> None:
        """Send the fatal error frame, then end the stream with the reason's status."""
        if write:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(FATAL_WRITE_S):
                    await context.write(pb.Frame(json=fatal_frame(reason)))
        code, message = CLOSE_STATUS[reason]
        context.set_trailing_metadata((("kefu-close-reason", reason),))
        context.set_code(code)
        context.set_details(message)

    # -- unary calls -----------------------------------------------------------------
    async def _readable(self, request, context):
        principal, _ = await self._principal(context)
        if principal is None:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid_token", "bad token")
        conversation_id = request.conversation_id
        if not conversation_id or len(conversation_id) > 64:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid_field",
                "conversation_id must be 1 to 64 characters",
            )
        conversation = await self.kernel.storage.get_conversation(
            principal.site_id, conversation_id
        )
        if conversation is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "conversation_not_found",
                "no such conversation in your site",
            )
        if not await self.kernel.hooks.permits(principal, "conversation.read", conversation):
            await _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "forbidden",
                "you may not read this conversation",
            )
        return principal, conversation

    async def History(self, request, context):
        principal, conversation = await self._readable(request, context)
        limit = request.limit or HISTORY_DEFAULT
        if not 1 <= limit <= HISTORY_MAX or request.after_seq < 0:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid_field",
                f"limit is 1 to {HISTORY_MAX} and after_seq at least 0",
            )
        page = await self.kernel.storage.list_messages(
            principal.site_id, conversation.id, after_seq=request.after_seq, limit=limit + 1
        )
        return pb.HistoryReply(
            messages=[message_record(m) for m in page[:limit]], more=len(page) > limit
        )

    async def GetConversation(self, request, context):
        _, c = await self._readable(request, context)
        return pb.Conversation(
            id=c.id,
            site_id=c.site_id,
            visitor_id=c.visitor_id,
            state=c.state,
            assignee_id=c.assignee_id or "",
            department=c.department or "",
            last_seq=c.last_seq,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


def message_record(m) -> pb.Message:
    return pb.Message(
        conversation_id=m.conversation_id,
        seq=m.seq,
        cid=m.cid,
        sender_kind=m.sender_kind,
        sender_id=m.sender_id,
        type=m.type,
        text=m.text,
        attachment_json=orjson.dumps(m.attachment) if m.attachment else b"",
        meta_json=orjson.dumps(m.meta) if m.meta else b"",
        created_at=m.created_at,
    )


async def _abort(context, code: grpc.StatusCode, error: str, message: str) -> None:
    await context.abort(code, message, trailing_metadata=(("kefu-error-code", error),))
