"""A small client for kefu's gRPC transport, and a terminal chat.

    from kefu.plugins.transport_grpc.client import connect

    async with connect("127.0.0.1:50051", token) as chat:   # hello already read
        await chat.send(op="start")
        started = await chat.expect("started")
        await chat.send(op="send", conversation_id=started["conversation"]["id"],
                        cid="c1", text="hello")
        print(await chat.expect("ack"))

``python -m kefu.plugins.transport_grpc.client --target HOST:PORT --token T``
(or ``kefu grpc-chat``) chats from a terminal: a visitor token starts (or
continues) its conversation, an agent token with ``--conversation ID`` watches
one; lines typed are sent, messages received are printed, and the stream
resumes from the last ``seq`` after a cut.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson

from kefu.plugins.transport_grpc import kefu_chat_pb2 as pb
from kefu.plugins.transport_grpc import kefu_chat_pb2_grpc as pb_grpc

#: Client keepalive: no more often than the server's min_client_ping_interval_s allows.
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
)


def channel(
    target: str,
    *,
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """A channel: plaintext, or TLS when ``root_certificates`` is given (with a client
    certificate for mutual TLS)."""
    options = list(KEEPALIVE_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if root_certificates is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return grpc.aio.secure_channel(target, credentials, options=options)


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Closed(ConnectionError):
    """The stream ended; ``code`` is the gRPC status, ``reason`` kefu's close reason."""

    def __init__(self, code: Any, reason: str | None, details: str | None) -> None:
        super().__init__(f"{code}: {reason or details}")
        self.code, self.reason, self.details = code, reason, details


class GrpcChat:
    """One ``Connect`` stream; keeps every frame it receives, in order."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.frames: list[dict] = []
        self.hello: dict | None = None

    async def send(self, **frame: Any) -> None:
        await self.send_raw(orjson.dumps(frame))

    async def send_raw(self, data: bytes) -> None:
        await self.call.write(pb.Frame(json=data))

    async def receive(self) -> dict:
        """The next frame from the server; :class:`Closed` when the stream ended."""
        try:
            message = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            raise await self._closed(exc) from None
        if message is grpc.aio.EOF:
            raise await self._closed(None)
        return orjson.loads(message.json)

    async def _closed(self, exc: grpc.aio.AioRpcError | None) -> Closed:
        code = exc.code() if exc else await self.call.code()
        trailing = (exc.trailing_metadata() if exc else await self.call.trailing_metadata()) or ()
        reason = next((v for k, v in trailing if k == "kefu-close-reason"), None)
        details = exc.details() if exc else await self.call.details()
        return Closed(code, reason, details)

    async def expect(self, op: str, within: float = 3.0, **match: Any) -> dict:
        """The first unread frame with this ``op`` (and fields); others stay buffered."""
        async with asyncio.timeout(within):
            while True:
                for index, frame in enumerate(self.frames):
                    if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                        return self.frames.pop(index)
                self.frames.append(await self.receive())

    async def quiet(self, seconds: float = 0.2) -> list[dict]:
        """Every unread frame, waiting ``seconds`` for more."""
        with contextlib.suppress(TimeoutError, Closed):
            async with asyncio.timeout(seconds):
                while True:
                    self.frames.append(await self.receive())
        frames, self.frames = self.frames, []
        return frames

    async def close(self) -> None:
        """Half-close: the server ends the connection once it processed what was sent."""
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        self.call.cancel()


async def open_stream(ch: grpc.aio.Channel, token: str | None, *, hello: bool = True) -> GrpcChat:
    """Start ``Connect`` on a channel; reads the ``hello`` frame unless ``hello`` is False."""
    chat = GrpcChat(pb_grpc.ChatStub(ch).Connect(metadata=metadata(token)))
    if hello:
        first = await chat.expect("hello", within=10.0)
        chat.hello = first
    return chat


@contextlib.asynccontextmanager
async def connect(target: str, token: str | None, **tls: Any) -> AsyncIterator[GrpcChat]:
    """A channel and one stream on it, both closed on exit."""
    async with channel(target, **tls) as ch:
        chat = await open_stream(ch, token)
        try:
            yield chat
        finally:
            await chat.close()


async def history(
    ch: grpc.aio.Channel, token: str | None, conversation_id: str, after_seq: int = 0, limit=0
) -> pb.HistoryReply:
    request = pb.HistoryRequest(conversation_id=conversation_id, after_seq=after_seq, limit=limit)
    return await pb_grpc.ChatStub(ch).History(request, metadata=metadata(token))


async def conversation(ch: grpc.aio.Channel, token: str | None, conversation_id: str):
    request = pb.ConversationRequest(conversation_id=conversation_id)
    return await pb_grpc.ChatStub(ch).GetConversation(request, metadata=metadata(token))


# -- terminal chat --------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of [transport_grpc]")
    parser.add_argument("--token", required=True, help="a visitor or agent token")
    parser.add_argument("--conversation", help="conversation id (agents: the one to watch)")
    parser.add_argument("--ca", help="PEM CA of the server certificate (TLS)")
    parser.add_argument("--cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key", help="PEM client key (mutual TLS)")
    parser.add_argument("--server-name", help="name the server certificate carries")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(terminal_chat(args))
    except KeyboardInterrupt:
        return 130


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    def read(path: str | None) -> bytes | None:
        return open(path, "rb").read() if path else None

    if not args.ca:
        return {}
    return {
        "root_certificates": read(args.ca),
        "certificate_chain": read(args.cert),
        "private_key": read(args.key),
        "server_name": args.server_name,
    }


def _print(line: str) -> None:
    print(line, flush=True)


async def terminal_chat(args: argparse.Namespace, lines: Any = None, show: Any = _print) -> int:
    """Chat over gRPC: stdin lines (or ``lines``, a queue of them) are sent, messages are
    shown (``show(line)``); resume after a cut."""
    loop = asyncio.get_running_loop()
    if lines is None:
        lines = asyncio.Queue()
        loop.add_reader(sys.stdin, lambda: lines.put_nowait(sys.stdin.readline()))
    conversation_id, last_seq, sent = args.conversation, 0, 0
    unacked: dict[str, str] = {}  # cid -> text, shown once acknowledged
    shown: set[int] = set()
    async with channel(args.target, **_tls(args)) as ch:
        while True:
            try:
                chat = await open_stream(ch, args.token)
            except Closed as exc:
                print(f"! {exc}", file=sys.stderr)
                return 1
            if conversation_id is None:
                await chat.send(op="start")
                conversation_id = (await chat.expect("started"))["conversation"]["id"]
            await chat.send(op="resume", conversation_id=conversation_id, after_seq=last_seq)
            for cid, text in unacked.items():  # no ack before the cut: the same cid again
                await chat.send(op="send", conversation_id=conversation_id, cid=cid, text=text)
            show(f"* connected to {conversation_id}; type a line to send it")
            reader = asyncio.ensure_future(chat.receive())
            typed = asyncio.ensure_future(lines.get())
            try:
                while True:
                    done, _ = await asyncio.wait({reader, typed}, return_when="FIRST_COMPLETED")
                    if typed in done:
                        line = typed.result()
                        if line == "":  # end of input
                            return 0
                        if line.strip():
                            sent += 1
                            cid = f"{chat.hello['connection_id']}-{sent}"
                            unacked[cid] = line.rstrip("\n")
                            await chat.send(
                                op="send",
                                conversation_id=conversation_id,
                                cid=cid,
                                text=unacked[cid],
                            )
                        typed = asyncio.ensure_future(lines.get())
                    if reader in done:
                        frame = reader.result()
                        op = frame.get("op")
                        if op == "ack" and frame.get("cid") in unacked:
                            shown.add(frame["seq"])
                            show(f"[{frame['seq']}] you: {unacked.pop(frame['cid'])}")
                        elif op == "message" and frame["seq"] > last_seq:
                            last_seq = frame["seq"]
                            if frame["seq"] not in shown:
                                shown.add(frame["seq"])
                                who = frame["sender"]["kind"]
                                show(f"[{frame['seq']}] {who}: {frame['text']}")
                        elif op == "error":
                            show(f"! {frame['code']}: {frame['message']}")
                        reader = asyncio.ensure_future(chat.receive())
            except Closed as exc:
                if exc.reason in ("invalid_token", "revoked", "flood"):
                    print(f"! {exc}", file=sys.stderr)
                    return 1
                show(f"* stream ended ({exc.reason or exc.code}); resuming")
                await asyncio.sleep(1.0)
            finally:
                reader.cancel()
                typed.cancel()
                await chat.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kefu grpc-chat", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
