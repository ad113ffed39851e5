"""The WebSocket heartbeat (one timer wheel per process, plugins/transport_ws/heartbeat.py):
a silent peer that answers pings stays, one that does not is dropped after 1.5 intervals,
and a peer that keeps sending frames is never pinged."""

from __future__ import annotations

import asyncio
import time

from aiohttp import WSMsgType

from kefu.core.web_app import create_app
from tests.chat_support import add_site, app_kernel, make_kernel, visitor_session, ws_peer

HEARTBEAT = 1.0


async def _visitor(aiohttp_client, tmp_path, **ws_options):
    kernel = make_kernel(tmp_path, f"[transport_ws]\nheartbeat = {HEARTBEAT}\n")
    client = await aiohttp_client(create_app(kernel))
    site = await add_site(app_kernel(client.app))
    session = await visitor_session(client, site.site.widget_key)
    return client, await ws_peer(client, session["token"], **ws_options)


async def test_a_peer_that_answers_pings_stays(aiohttp_client, tmp_path):
    _, peer = await _visitor(aiohttp_client, tmp_path)  # aiohttp answers pings itself
    # several intervals without a frame from the client, which reads (and so pongs)
    assert await peer.quiet(HEARTBEAT * 4) == []
    await peer.send(op="ping", ref="alive")
    assert (await peer.expect("pong"))["ref"] == "alive"


async def test_a_peer_that_does_not_answer_is_dropped(aiohttp_client, tmp_path):
    _, peer = await _visitor(aiohttp_client, tmp_path, autoping=False)
    started, pings = time.monotonic(), 0
    async with asyncio.timeout(HEARTBEAT * 10):
        while True:
            msg = await peer.ws.receive()
            if msg.type is WSMsgType.PING:
                pings += 1  # and we do not answer
                continue
            break
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
    waited = time.monotonic() - started
    assert pings == 1, pings
    # 1.5 intervals, give or take the wheel's one-second slots (and a loaded machine)
    assert HEARTBEAT * 1.4 <= waited <= HEARTBEAT * 8, waited


async def test_a_peer_that_keeps_talking_is_not_pinged(aiohttp_client, tmp_path):
    _, peer = await _visitor(aiohttp_client, tmp_path, autoping=False)
    deadline = time.monotonic() + HEARTBEAT * 4
    n = 0
    while time.monotonic() < deadline:
        await peer.send(op="ping", ref=f"r{n}")
        async with asyncio.timeout(HEARTBEAT):
            msg = await peer.ws.receive()
        assert msg.type is WSMsgType.TEXT, msg  # a protocol ping would show here
        n += 1
        await asyncio.sleep(HEARTBEAT / 4)
    assert n >= 8
