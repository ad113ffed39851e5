"""The example auth plugin against a small HTTP user service started by the test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kefu_company_auth

from kefu.core.web_app import KERNEL_KEY, create_app
from tests.chat_support import add_site, make_kernel, ws_peer


@pytest.fixture
async def users(aiohttp_server):
    sessions = {}

    async def me(request):
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in sessions:
            return web.json_response({"error": "no session"}, status=401)
        return web.json_response(sessions[token])

    app = web.Application()
    app.router.add_get("/api/me", me)
    server = await aiohttp_server(app)
    return server, sessions


async def test_agents_sign_in_with_the_company_session(aiohttp_client, tmp_path, users):
    server, sessions = users
    kefu_company_auth._cache.clear()
    extra = f'[company_auth]\nurl = "{server.make_url("/api/me")}"\nsite_id = "acme"\ncache_s = 0\n'
    kernel = make_kernel(tmp_path, extra, extra_plugins=(("company_auth", kefu_company_auth),))
    client = await aiohttp_client(create_app(kernel))
    site = await add_site(client.server.app[KERNEL_KEY], "acme")
    sessions["cs_alice"] = {"email": site.agent.email, "active": True}
    sessions["cs_gone"] = {"email": site.agent.email, "active": False}
    sessions["cs_stranger"] = {"email": "nobody@acme.test", "active": True}

    async def status(token):
        resp = await client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"})
        return resp.status

    assert await status("cs_alice") == 200
    assert await status("cs_gone") == 401  # inactive at the company
    assert await status("cs_stranger") == 401  # no such agent in kefu
    assert await status("cs_unknown") == 401  # the service says no
    peer = await ws_peer(client, "cs_alice")  # every transport goes through the hook
    await peer.close()
    del sessions["cs_alice"]  # signed out at the company: refused on the next use
    assert await status("cs_alice") == 401
    await server.close()  # the service is down: fail closed
    sessions["cs_alice"] = {"email": site.agent.email, "active": True}
    assert await status("cs_alice") == 401
