"""Bot flow versions shared by two real kefu processes (PostgreSQL + Redis, issue 12):
versions, the active pointer and the activation log are storage records, and a process
that changes them tells the others over the bus.

Both processes watch one flow file: an edit is published by both at once (one version
kept, the record merged); a rollback through the admin API of one process is in force in
the other within a moment, and the other way round; a new conversation on either gets
the greeting of the version active install-wide."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.cluster_support import (
    Node,
    agent_token,
    pg_fetch,
    two_nodes,
    visitor_token,
)
from tests.test_bot_persist import version

pytestmark = pytest.mark.needs_service


async def _flows(http: aiohttp.ClientSession, node: Node, token: str) -> dict:
    async with http.get(
        f"{node.base}/v1/bot/flows", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    (flow,) = [f for f in body["flows"] if f["id"] == "kept"]
    return flow


async def _post(http: aiohttp.ClientSession, node: Node, token: str, path: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{node.base}{path}", headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def _active_everywhere(http, nodes, tokens, sha: str, within: float = 10.0) -> None:
    seen: dict[str, str] = {}

    async def check() -> bool:
        for node, token in zip(nodes, tokens, strict=True):
            seen[node.name] = (await _flows(http, node, token))["active"]
        return set(seen.values()) == {sha}

    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"active {seen}, wanted {sha[:12]} on every process")
        await asyncio.sleep(0.1)


async def _greeting(http, node: Node, widget_key: str, schema: str) -> str:
    """The bot's first message to a visitor who starts a chat on ``node``."""
    token = await visitor_token(http, node.base, widget_key)
    async with http.ws_connect(f"{node.base.replace('http', 'ws', 1)}/v1/ws?token={token}") as ws:
        assert (await ws.receive_json(timeout=30))["op"] == "hello"
        await ws.send_json({"op": "start", "ref": "s"})
        while (frame := await ws.receive_json(timeout=30))["op"] != "started":
            pass
    conversation_id = frame["conversation"]["id"]
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        rows = await pg_fetch(
            f'SELECT text FROM "{schema}".messages WHERE conversation_id = $1 '
            "AND sender_kind = 'bot' ORDER BY seq",
            conversation_id,
        )
        if rows:
            return rows[0]["text"]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no bot greeting in {conversation_id}")
        await asyncio.sleep(0.1)


async def _scenario(a: Node, b: Node, path, widget_key: str, password: str, schema: str):
    async with aiohttp.ClientSession() as http:
        tokens = [
            await agent_token(http, node.base, "demo", "admin@example.com", password)
            for node in (a, b)
        ]
        nodes = [a, b]
        v1 = (await _flows(http, a, tokens[0]))["active"]
        await _active_everywhere(http, nodes, tokens, v1)

        # an edit of the file both watch: both publish it at once, one version is kept
        path.write_text(version(2), encoding="utf-8")
        listing: list[dict] = []

        async def two_versions() -> bool:
            listing[:] = [await _flows(http, n, t) for n, t in zip(nodes, tokens, strict=True)]
            return all(len(f["versions"]) == 2 for f in listing)

        deadline = asyncio.get_running_loop().time() + 20
        while not await two_versions():
            assert asyncio.get_running_loop().time() < deadline, listing
            await asyncio.sleep(0.1)
        v2 = listing[0]["versions"][0]["sha256"]
        assert v2 != v1 and [v["sha256"] for v in listing[1]["versions"]] == [v2, v1]
        await _active_everywhere(http, nodes, tokens, v2)
        rows = await pg_fetch(
            f'SELECT id FROM "{schema}".records WHERE kind = $1 ORDER BY id', "bot.flow_version"
        )
        assert sorted(r["id"] for r in rows) == sorted([v1, v2])

        # a rollback on a is in force on b; an activation on b is in force on a
        assert (await _post(http, a, tokens[0], "/v1/bot/flows/kept/rollback"))["active"] == v1
        await _active_everywhere(http, nodes, tokens, v1, within=5)
        assert await _greeting(http, b, widget_key, schema) == "welcome to version 1"
        path_v2 = f"/v1/bot/flows/kept/versions/{v2}/activate"
        assert (await _post(http, b, tokens[1], path_v2))["active"] == v2
        await _active_everywhere(http, nodes, tokens, v2, within=5)
        assert await _greeting(http, a, widget_key, schema) == "welcome to version 2"
        # the activation log is one, whichever process is asked
        logs = [
            [(v["sha256"], v["activated_by"]) for v in (await _flows(http, n, t))["versions"]]
            for n, t in zip(nodes, tokens, strict=True)
        ]
        assert logs[0] == logs[1] == [(v2, "api"), (v1, "rollback")], logs


def test_flow_versions_and_activations_are_shared_by_two_processes(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(version(1), encoding="utf-8")
    extra = f'[bot]\nflows = ["{path}"]\nwatch = true\n'
    with two_nodes(tmp_path, "bot", disable=(), extra=extra) as (a, b):
        banner = a.banner()
        password = re.search(r"password '([^']+)'", banner)
        widget_key = re.search(r"widget key '([^']+)'", banner)
        assert password and widget_key, banner
        asyncio.run(_scenario(a, b, path, widget_key[1], password[1], a.schema))
