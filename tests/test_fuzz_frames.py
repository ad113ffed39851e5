"""Frame fuzzer (hypothesis): random and malformed frames over a real WebSocket and the
long-poll endpoints, as a visitor and as an agent; the server must answer each with a
documented error or a reply, never an ``internal_error`` frame, a 5xx, a 1011 close or a
logged exception, and the connection must still answer a ``ping`` after each batch.

``make test`` runs :data:`EXAMPLES` batches per transport (derandomised); the long run is
``KEFU_FRAME_FUZZ_EXAMPLES=5000 .venv/bin/python -m tests.bench.fuzz`` (docs/security.md
"Fuzzing").
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chat_support import PASSWORD
from tests.test_openapi import ServerThread

DEFAULT_EXAMPLES = 40
EXAMPLES = int(os.environ.get("KEFU_FRAME_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
OPS = ["start", "send", "resume", "watch", "unwatch", "typing", "read", "presence", "ping",
       "track", "queue_status", "hello", "ack", "", "Send", "x" * 300]  # fmt: skip
FIELDS = ["conversation_id", "cid", "type", "text", "after_seq", "seq", "state", "status",
          "accepting", "ref", "name", "props", "department", "attachment", "attributes",
          "limit"]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "c" * 5000, "\u0000", "\U0010ffff", "<script>"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _encodable(value: object) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


frames = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(OPS)}, optional=dict.fromkeys(FIELDS, json_values)
    ),
    json_values,  # not an object, or an object without an op
)


def _deep(op: str, field: str, depth: int, bracket: str) -> bytes:
    close = {"[": "]", '{"a":': "}"}[bracket]
    return f'{{"op": "{op}", "{field}": {bracket * depth}1{close * depth}}}'.encode()


#: JSON nested deeper than most parsers' limits, in a field of a real op
deep = st.builds(
    _deep,
    st.sampled_from(OPS[:11]),
    st.sampled_from(FIELDS),
    st.integers(200, 5000),
    st.sampled_from(["[", '{"a":']),
)
#: One frame as bytes on the wire: mostly JSON, sometimes not JSON at all.
wire = st.one_of(
    frames.filter(_encodable).map(orjson.dumps),
    st.binary(max_size=64),
    deep,
    st.just(b'{"op": "send", "text": "' + b"x" * 300_000 + b'"}'),
)


#: Frames (WebSocket) and send bodies (long-poll) sent, for the long run's report.
SENT = {"ws_batches": 0, "ws_frames": 0, "longpoll_bodies": 0}


class ErrorLog(logging.Handler):
    """Every ERROR (and logged exception) of the server's loggers during the run."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("kefu", "aiohttp")):
            self.records.append(record)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerThread(tmp_path_factory.mktemp("fuzz"), "memory")
    site = srv.start()
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    login = {"site_id": site.site.id, "email": site.agent.email, "password": PASSWORD}
    srv.agent_token = requests.post(f"{srv.base_url}/v1/auth/login", json=login, timeout=10).json()[
        "token"
    ]
    body = {"widget_key": site.site.widget_key, "page": "/"}
    srv.visitor_token = requests.post(
        f"{srv.base_url}/v1/visitors/session", json=body, timeout=10
    ).json()["token"]
    srv.errors = errors
    yield srv
    print(f"\nfuzz cases sent: {SENT}, server errors logged: {len(errors.records)}")
    logging.getLogger().removeHandler(errors)
    srv.stop()
    assert not errors.records, [r.getMessage() for r in errors.records[:5]]


async def _ws_batch(base_url: str, token: str, batch: list[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base_url}/v1/ws?token={token}", max_msg_size=0) as ws:
            try:
                for data in [*batch, b'{"op": "ping", "ref": "marker"}']:
                    await ws.send_bytes(data)
            except aiohttp.ClientConnectionResetError:
                pass  # closed by the server (a fatal error frame is waiting): read it
            async with asyncio.timeout(10):
                async for msg in ws:
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        break
                    frame = orjson.loads(msg.data)
                    assert frame.get("code") != "internal_error", frame
                    if frame.get("op") == "pong" and frame.get("ref") == "marker":
                        return
                    if frame.get("fatal"):  # a documented fatal error (rate limit, size)
                        assert frame.get("code") in (
                            "rate_limited",
                            "frame_too_large",
                            "too_slow",
                            "bad_json",
                        ), frame
            assert ws.close_code != 1011, ws.close_code


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=EXAMPLES == DEFAULT_EXAMPLES,
)


@FUZZ
@given(batch=st.lists(wire, min_size=1, max_size=12), agent=st.booleans())
def test_websocket_frames_never_cause_a_server_error(server, batch, agent):
    token = server.agent_token if agent else server.visitor_token
    SENT["ws_batches"] += 1
    SENT["ws_frames"] += len(batch)
    asyncio.run(_ws_batch(server.base_url, token, batch))


@FUZZ
@given(
    body=st.one_of(
        st.lists(wire, max_size=8).map(lambda b: b"[" + b",".join(x for x in b if _json(x)) + b"]"),
        wire,
    ),
    timeout=st.sampled_from(["0", "0.01", "nan", "inf", "-1", "abc", "1e308", ""]),
    agent=st.booleans(),
)
def test_longpoll_bodies_never_cause_a_server_error(server, body, timeout, agent):
    token = server.agent_token if agent else server.visitor_token
    base = server.base_url
    opened = requests.post(
        f"{base}/v1/poll/open", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert opened.status_code == 200, opened.text
    session = opened.json()["session"]
    SENT["longpoll_bodies"] += 1
    try:
        sent = requests.post(f"{base}/v1/poll/send?session={session}", data=body, timeout=10)
        assert sent.status_code < 500, sent.text
        got = requests.get(f"{base}/v1/poll/recv?session={session}&timeout={timeout}", timeout=30)
        assert got.status_code < 500, got.text
        if got.status_code == 200:
            for frame in got.json()["frames"]:
                assert frame.get("code") != "internal_error", frame
    finally:
        requests.post(f"{base}/v1/poll/close?session={session}", timeout=10)


def _json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True
