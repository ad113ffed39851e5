"""The gRPC transport end to end: a grpcio client and a WebSocket client chat through one
kefu, resume after a cut, cid idempotency, bad input answered as on the WebSocket, unary
calls, health, reflection, metrics and a graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kefu.core.domain import Message
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.transport_grpc import client as grpc_client
from kefu.plugins.transport_grpc.client import Closed, open_stream
from tests.chat_support import add_site, app_kernel, login, make_kernel, visitor_session, ws_peer

ROOT = Path(__file__).resolve().parent.parent
GRPC = "[transport_grpc]\nenabled = true\nport = 0\n"


def grpc_target(client) -> str:
    return f"127.0.0.1:{app_kernel(client.app).existing_plugin_state('transport_grpc').port}"


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await aiohttp_client(create_app(make_kernel(tmp_path, GRPC + "[gateway]\nrate = 50\n")))


@pytest.fixture
async def channel(client):
    async with grpc_client.channel(grpc_target(client)) as ch:
        yield ch


async def test_grpc_visitor_and_websocket_agent_chat_both_ways(client, channel):
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    token = (await visitor_session(client, site.site.widget_key))["token"]
    agent = await ws_peer(client, await login(client, site.site.id, site.agent.email))
    visitor = await open_stream(channel, token)
    assert visitor.hello["protocol"] == 1 and visitor.hello["principal"]["kind"] == "visitor"
    await visitor.send(op="start", ref="s")
    started = await visitor.expect("started", ref="s")
    conversation_id = started["conversation"]["id"]
    await agent.expect("conversation", event="started")
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")

    await visitor.send(op="send", conversation_id=conversation_id, cid="g1", text="over grpc")
    ack = await visitor.expect("ack")
    assert ack == {"op": "ack", "cid": "g1", "seq": 1, "conversation_id": conversation_id}
    got = await agent.expect("message", cid="g1")
    assert (got["seq"], got["text"], got["sender"]["kind"]) == (1, "over grpc", "visitor")

    await agent.send(op="send", conversation_id=conversation_id, cid="w1", text="over ws")
    assert (await agent.expect("ack"))["seq"] == 2
    reply = await visitor.expect("message", cid="w1")
    assert (reply["seq"], reply["text"], reply["sender"]["kind"]) == (2, "over ws", "agent")
    await agent.send(op="typing", conversation_id=conversation_id)
    assert (await visitor.expect("typing"))["from"]["kind"] == "agent"

    # cid idempotency: the same cid is acknowledged again with the same seq, stored once
    await visitor.send(op="send", conversation_id=conversation_id, cid="g1", text="over grpc")
    again = await visitor.expect("ack", cid="g1")
    assert again["seq"] == 1 and again["duplicate"] is True
    assert await agent.quiet(0.1) == []
    stored = await kernel.storage.list_messages(site.site.id, conversation_id)
    assert [m.cid for m in stored] == ["g1", "w1"]

    # a cut: the stream is cancelled, the agent writes meanwhile, a new stream resumes
    await visitor.close()
    await agent.send(op="send", conversation_id=conversation_id, cid="w2", text="missed 1")
    await agent.send(op="send", conversation_id=conversation_id, cid="w3", text="missed 2")
    await agent.expect("ack", cid="w2")
    await agent.expect("ack", cid="w3")
    visitor = await open_stream(channel, token)
    await visitor.send(op="resume", conversation_id=conversation_id, after_seq=2)
    replay = [await visitor.expect("message") for _ in range(2)]
    assert [(m["seq"], m["text"]) for m in replay] == [(3, "missed 1"), (4, "missed 2")]
    resumed = await visitor.expect("resumed")
    assert (resumed["replayed"], resumed["last_seq"], resumed["more"]) == (2, 4, False)
    await agent.send(op="send", conversation_id=conversation_id, cid="w4", text="live again")
    assert (await visitor.expect("message", cid="w4"))["seq"] == 5

    # unary calls with the same token
    page = await grpc_client.history(channel, token, conversation_id, after_seq=1, limit=2)
    assert [(m.seq, m.cid) for m in page.messages] == [(2, "w1"), (3, "w2")] and page.more
    state = await grpc_client.conversation(channel, token, conversation_id)
    assert (state.id, state.last_seq, state.state) == (conversation_id, 5, "queued")
    await visitor.close()


async def test_bad_input_is_answered_as_on_the_websocket(client, channel):
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    ws = await ws_peer(client, token)
    stream = await open_stream(channel, token)
    limit = stream.hello["limits"]["max_frame_bytes"]
    cases = [
        orjson.dumps({"op": "nope", "ref": 1}),
        b"{not json",
        orjson.dumps({"op": "send", "ref": 2, "text": "x" * (limit + 10)}),
        orjson.dumps({"op": "send", "ref": 3}),
        orjson.dumps([1, 2]),
    ]
    for data in cases:
        await stream.send_raw(data)
        await ws.ws.send_bytes(data)
        over_grpc, over_ws = await stream.expect("error"), await ws.expect("error")
        assert over_grpc == over_ws
    assert [c["code"] for c in [over_grpc]] == ["bad_frame"]
    await stream.send(op="ping", ref="alive")  # the stream stayed open through all of it
    assert (await stream.expect("pong"))["ref"] == "alive"

    # above the gRPC message cap: grpc itself refuses the message and ends the stream
    await stream.send_raw(b'{"op":"ping","pad":"' + b"y" * (200 * 1024) + b'"}')
    with pytest.raises(Closed) as ended:
        await stream.expect("pong")
    assert ended.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

    # a bad token: the same fatal error frame, then UNAUTHENTICATED
    bad = await open_stream(channel, "forged.token", hello=False)
    frame = await bad.receive()
    assert frame == {
        "op": "error",
        "code": "invalid_token",
        "message": "the token is missing, forged, expired or of an unknown site",
        "fatal": True,
    }
    with pytest.raises(Closed) as refused:
        await bad.receive()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "invalid_token"
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await grpc_client.history(channel, None, "c1")
    assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await grpc_client.history(channel, token, "no-such-conversation")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    await ws.close()


async def test_flood_closes_with_the_websocket_reason(aiohttp_client, tmp_path):
    extra = GRPC + "[gateway]\nrate = 1\nburst = 1\nflood_close_after = 5\n"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, extra)))
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    async with grpc_client.channel(grpc_target(client)) as ch:
        stream = await open_stream(ch, token)
        for n in range(6):  # one admitted, five refused: the fifth strike closes it
            await stream.send(op="ping", ref=n)
        assert (await stream.expect("error"))["code"] == "rate_limited"
        fatal = await stream.expect("error", code="flood")
        assert fatal["fatal"] is True
        with pytest.raises(Closed) as ended:
            await stream.receive()
        assert (ended.value.code, ended.value.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "flood",
        )


async def test_health_reflection_metrics_and_graceful_shutdown(aiohttp_client, tmp_path):
    app = create_app(make_kernel(tmp_path, GRPC))
    client = await aiohttp_client(app)
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    async with grpc_client.channel(grpc_target(client)) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="kefu.v1.Chat"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
        await reflect.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await reflect.read()
        names = {s.name for s in listed.list_services_response.service}
        assert {"kefu.v1.Chat", "grpc.health.v1.Health"} <= names
        reflect.cancel()

        stream = await open_stream(ch, token)
        await stream.send(op="start")
        conversation_id = (await stream.expect("started"))["conversation"]["id"]
        await stream.send(op="send", conversation_id=conversation_id, cid="m1", text="counted")
        await stream.expect("ack")
        metrics = await (await client.get("/metrics")).text()
        assert 'kefu_connections{kind="visitor",transport="grpc"} 1' in metrics
        for series in (
            'kefu_messages_stored_total{sender_kind="visitor",transport="grpc"} 1',
            'kefu_message_ack_seconds_count{transport="grpc"} 1',
            'kefu_conversations_started_total{transport="grpc"} 1',
        ):
            assert series in metrics, series

        kernel = app_kernel(client.app)
        await kernel.hooks.shutdown_requested()
        fatal = await stream.expect("error", within=5)
        assert (fatal["code"], fatal["fatal"]) == ("shutdown", True)
        with pytest.raises(Closed) as ended:
            await stream.receive()
        assert (ended.value.code, ended.value.reason) == (grpc.StatusCode.UNAVAILABLE, "shutdown")
        with pytest.raises(Closed) as refused:  # the port no longer takes calls
            await asyncio.wait_for(open_stream(ch, token), 5)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE


#: What the generators write of their own version: it follows the grpcio-tools / protobuf
#: installed (a fresh venv takes the newest), not the proto. The committed modules keep the
#: version they were generated with, which setup.cfg's grpcio minimum covers.
_GENERATOR_VERSION = re.compile(
    r"^GRPC_GENERATED_VERSION = .*$|^# Protobuf Python Version: .*$"
    r"|ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,[\s\d,]*",
    re.M,
)


def _without_generator_version(code: str) -> str:
    return _GENERATOR_VERSION.sub("<generator version>", code)


def test_generated_code_matches_the_proto(tmp_path):
    from kefu.plugins.transport_grpc import generate

    for path in generate.generate(tmp_path):
        committed = generate.HERE / path.name
        assert _without_generator_version(path.read_text()) == _without_generator_version(
            committed.read_text()
        ), f"{committed.name} is stale: run make grpc-gen"


def test_the_generated_code_needs_no_newer_grpcio_than_setup_cfg_asks():
    from kefu.plugins.transport_grpc import generate

    code = (generate.HERE / "kefu_chat_pb2_grpc.py").read_text()
    needed = re.search(r"^GRPC_GENERATED_VERSION = '([\d.]+)'", code, re.M).group(1)
    setup = (ROOT / "setup.cfg").read_text()
    floor = re.search(r"^\s*grpcio>=([\d.]+)", setup, re.M).group(1)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(needed) <= as_tuple(floor), (needed, floor)
    assert as_tuple(grpc.__version__) >= as_tuple(needed)


async def test_the_protocol_md_example_runs(client, capsys):
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    grpc_part = text[text.index("### gRPC") : text.index("## 3. Frames")]
    blocks = re.findall(r"```python\n(.*?)```", grpc_part, re.S)
    example = next(b for b in blocks if "asyncio.run(main(TARGET, TOKEN))" in b)
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    scope = {"TARGET": grpc_target(client), "TOKEN": token, "__name__": "example"}
    await asyncio.to_thread(exec, compile(example, "protocol.md", "exec"), scope)
    assert "stored as seq 1" in capsys.readouterr().out


def test_not_served_unless_enabled_and_installed(tmp_path, monkeypatch):
    import kefu.plugins.transport_grpc as plugin
    from kefu.core.errors import StartupError
    from kefu.core.kernel import load_kernel

    kernel = load_kernel(None, environ={}, entry_points=False)  # the embedded default
    assert kernel.config.section("transport_grpc").enabled is False
    assert "grpc" not in [t.name for t in kernel.hooks.transport_adapters()]
    enabled = make_kernel(tmp_path, GRPC)
    assert "grpc" in [t.name for t in enabled.hooks.transport_adapters()]
    monkeypatch.setattr(plugin, "installed", lambda: False)
    with pytest.raises(StartupError, match=r"kefu\[grpc\]"):
        asyncio.run(plugin.kefu_startup(enabled))


async def test_terminal_chat_sends_lines_and_prints_messages(client):
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    agent = await ws_peer(client, await login(client, site.site.id, site.agent.email))
    args = argparse.Namespace(
        target=grpc_target(client), token=token, conversation=None,
        ca=None, cert=None, key=None, server_name=None,
    )  # fmt: skip
    lines: asyncio.Queue = asyncio.Queue()
    shown: list[str] = []
    replied = asyncio.Event()

    def show(line: str) -> None:
        shown.append(line)
        if line.endswith("agent: hi terminal"):
            replied.set()

    chat = asyncio.create_task(grpc_client.terminal_chat(args, lines, show))
    started = await agent.expect("conversation", event="started", within=10)
    conversation_id = started["conversation"]["id"]
    await agent.send(op="watch", conversation_id=conversation_id)
    await agent.expect("watching")
    lines.put_nowait("hello from the terminal\n")
    got = await agent.expect("message", within=10)
    assert got["text"] == "hello from the terminal" and got["sender"]["kind"] == "visitor"
    await agent.send(op="send", conversation_id=conversation_id, cid="a1", text="hi terminal")
    await asyncio.wait_for(replied.wait(), 10)
    assert f"[{got['seq']}] you: hello from the terminal" in shown  # acked before the reply
    assert shown[0].startswith(f"* connected to {conversation_id}")
    lines.put_nowait("")  # end of input
    assert await asyncio.wait_for(chat, 10) == 0


async def test_a_stream_that_stops_reading_is_a_slow_consumer(aiohttp_client, tmp_path):
    extra = GRPC + "[gateway]\noutbox_frames = 16\n"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, extra)))
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    token = (await visitor_session(client, site.site.widget_key))["token"]
    async with grpc_client.channel(grpc_target(client)) as ch:
        visitor = await open_stream(ch, token)
        await visitor.send(op="start")
        conversation_id = (await visitor.expect("started"))["conversation"]["id"]
        closed = asyncio.get_running_loop().create_future()

        class Listener:
            @hookimpl
            def kefu_transport_disconnected(self, kernel, connection, reason):
                if connection.transport == "grpc" and not closed.done():
                    closed.set_result(reason)

        kernel.pm.register(Listener(), name="slow-watch")
        try:
            conversation = await kernel.delivery.conversation(site.site.id, conversation_id)
            for n in range(400):  # the visitor reads none of it: flow control, then the outbox
                message = Message(
                    site.site.id, conversation_id, f"m{n}", "agent", site.agent.id, text="z" * 7000
                )
                await kernel.delivery.deliver(conversation, message)
                if closed.done():
                    break
            assert await asyncio.wait_for(closed, 15) == "slow_consumer"
        finally:
            kernel.pm.unregister(name="slow-watch")
        # what was stored is there for the resume after the client reconnects
        again = await open_stream(ch, token)
        await again.send(op="resume", conversation_id=conversation_id, after_seq=0, ref="r")
        assert (await again.expect("resumed", ref="r", within=10))["replayed"] > 0
        await again.close()


def test_kefu_grpc_chat_is_a_cli_command(capsys):
    from kefu.core import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["grpc-chat", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--target" in out and "--token" in out and "--cert" in out
