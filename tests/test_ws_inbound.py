"""Data frames reach the callback as they are parsed, without waking the handler
(plugins/transport_ws/inbound.py), over a real aiohttp server and client.

If aiohttp stops calling ``_post_start`` or changes its queue, the frames show up in the
handler's ``receive()`` instead and the first test fails."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from kefu.plugins.transport_ws.inbound import DirectWebSocket


async def _serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/ws"


async def test_frames_go_to_the_callback_and_the_handler_sees_only_the_close():
    frames: list = []
    pongs: list = []
    woken: list = []
    done = asyncio.Event()

    async def handler(request):
        ws = DirectWebSocket(autoping=False)
        await ws.prepare(request)
        assert ws.direct(frames.append, lambda: pongs.append(1))
        async for msg in ws:  # only what is not a data frame or a pong
            woken.append(msg.type)
            if msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
        ws.detach()
        assert ws._reader.on_frame is None and ws._reader.on_pong is None
        done.set()
        return ws

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, autoping=False) as client:
                for i in range(50):
                    await client.send_str(f"m{i}")
                await client.send_bytes(b"\x00raw")
                await client.pong(b"late")  # an unsolicited pong: marked seen
                await client.ping(b"hi")  # a client ping: the handler answers it
                answer = await client.receive(timeout=5)
                assert answer.type is aiohttp.WSMsgType.PONG and answer.data == b"hi"
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await runner.cleanup()
    assert frames == [f"m{i}" for i in range(50)] + [b"\x00raw"]
    assert pongs == [1]
    assert woken == [aiohttp.WSMsgType.PING]  # then the close ended the loop


async def test_frames_queued_before_direct_keep_the_ordinary_reading_in_order():
    seen: list = []
    done = asyncio.Event()
    arrived = asyncio.Event()

    async def handler(request):
        ws = DirectWebSocket(autoping=False)
        await ws.prepare(request)
        await arrived.wait()
        await asyncio.sleep(0.05)  # the client's first frames are queued by now
        direct = ws.direct(lambda data: seen.append(("direct", data)), lambda: None)
        async for msg in ws:
            seen.append(("loop", msg.data))
            if msg.data == "last":
                break
        seen.append(("direct?", direct))
        done.set()
        return ws

    runner, url = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as client:
                await client.send_str("first")
                await client.send_str("second")
                arrived.set()
                await asyncio.sleep(0.1)
                await client.send_str("last")
                await asyncio.wait_for(done.wait(), 5)
    finally:
        await runner.cleanup()
    assert seen == [("loop", "first"), ("loop", "second"), ("loop", "last"), ("direct?", False)]


async def test_a_failing_callback_is_logged_and_the_socket_aborted(caplog):
    done = asyncio.Event()

    def broken(_data):
        raise ValueError("boom")

    async def handler(request):
        ws = DirectWebSocket(autoping=False)
        await ws.prepare(request)
        ws.direct(broken, lambda: None)
        async for _msg in ws:
            pass
        done.set()
        return ws

    runner, url = await _serve(handler)
    try:
        with caplog.at_level(logging.ERROR, logger="kefu.plugins.transport_ws.inbound"):
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(url) as client:
                    await client.send_str("x")
                    msg = await client.receive(timeout=5)
                    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
            await asyncio.wait_for(done.wait(), 5)
    finally:
        await runner.cleanup()
    assert "websocket frame handler failed" in caplog.text
