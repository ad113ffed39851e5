"""What the gRPC transport's frame encoding costs: JSON frames in a bytes field (what
kefu.v1.Chat/Connect carries) against a typed message per op converted to and from the
gateway's JSON. ``python -m tests.bench.grpc_frames`` (docs/performance.md, "gRPC transport")."""

from __future__ import annotations

import os
import time

import orjson

from kefu.plugins.transport_grpc import kefu_chat_pb2 as pb

N = 50_000
SEND = {"op": "send", "conversation_id": "c" * 22, "cid": "cid-000123", "text": "hello " * 8}
MESSAGE = {
    "op": "message",
    "conversation_id": "c" * 22,
    "seq": 123,
    "cid": "cid-000123",
    "sender": {"kind": "visitor", "id": "v" * 22},
    "type": "text",
    "text": "hello " * 8,
    "attachment": None,
    "meta": {},
    "created_at": 1764680000.123,
}


def per_op(fn) -> float:
    fn()
    started = time.process_time()
    for _ in range(N):
        fn()
    return (time.process_time() - started) / N * 1e6


def bytes_field() -> dict[str, float]:
    """Client encodes a frame, the server parses it and hands the bytes to the gateway
    (which parses JSON anyway); the other way the gateway's bytes are wrapped as they are."""
    send_json, message_json = orjson.dumps(SEND), orjson.dumps(MESSAGE)

    def inbound():
        wire = pb.Frame(json=send_json).SerializeToString()
        pb.Frame.FromString(wire).json  # noqa: B018

    def outbound():
        wire = pb.Frame(json=message_json).SerializeToString()
        orjson.loads(pb.Frame.FromString(wire).json)  # the client reads the frame

    return {"inbound send": per_op(inbound), "outbound message": per_op(outbound)}


def typed() -> dict[str, float]:
    """The same frames as typed messages: the server turns the typed ``send`` into the
    gateway's JSON, and the gateway's ``message`` JSON into the typed message."""
    message_json = orjson.dumps(MESSAGE)

    def inbound():
        # a typed send (the Message type stands in for a SendFrame of the same fields)
        wire = pb.Message(
            conversation_id=SEND["conversation_id"], cid=SEND["cid"], type="text", text=SEND["text"]
        ).SerializeToString()
        m = pb.Message.FromString(wire)
        frame = {"op": "send", "conversation_id": m.conversation_id, "cid": m.cid}
        frame.update(type=m.type, text=m.text)
        orjson.dumps(frame)  # the gateway's input

    def outbound():
        frame = orjson.loads(message_json)  # the gateway's serialised frame
        m = pb.Message(
            conversation_id=frame["conversation_id"],
            seq=frame["seq"],
            cid=frame["cid"],
            sender_kind=frame["sender"]["kind"],
            sender_id=frame["sender"]["id"],
            type=frame["type"],
            text=frame["text"],
            meta_json=orjson.dumps(frame["meta"]),
            created_at=frame["created_at"],
        )
        received = pb.Message.FromString(m.SerializeToString())
        received.text  # noqa: B018

    return {"inbound send": per_op(inbound), "outbound message": per_op(outbound)}


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}; CPU microseconds per frame, {N} frames")
    a, b = bytes_field(), typed()
    for key in a:
        print(f"{key:18s} json-in-bytes {a[key]:6.2f}   typed {b[key]:6.2f}")


if __name__ == "__main__":
    main()
