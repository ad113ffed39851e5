"""kefu-tagger through a real server: installed by its entry point, `kefu run`, a WebSocket
visitor, plain HTTP calls. Run it with `pytest examples/kefu-tagger`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest

HERE = Path(__file__).resolve().parent.parent
KEFU = [sys.executable, "-m", "kefu.core.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`pip install` the example into a directory of its own, as a third party would, then
    `kefu run` with a [tagger] section; yields the URL and the first start's banner values."""
    source, target = tmp_path / "src", tmp_path / "site"  # a copy: the build writes beside it
    shutil.copytree(HERE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "tests"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target), "KEFU_LOG_LEVEL": "warning"}
    port = free_port()
    config = tmp_path / "kefu.toml"
    config.write_text(
        f'[server]\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n'
        '[plugins]\ndisable = ["bot_intents"]\n'  # no model to load: a faster start
        '[tagger]\nword = "refund"\ntopic = "billing"\n'
    )
    listed = subprocess.run(
        [*KEFU, "plugins", "--config", str(config)], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert re.search(r"^tagger +0\.1\.0 +entrypoint +enabled ", listed.stdout, re.M)
    proc = subprocess.Popen(
        [*KEFU, "run", "--config", str(config)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        banner = ""
        while "password '" not in banner:  # printed on the first start only
            line = proc.stdout.readline()
            assert line, f"kefu run exited:\n{banner}"
            banner += line
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "not ready in 30 s"
                time.sleep(0.1)
        yield {
            "base": base,
            "widget_key": re.search(r"widget key '([^']+)'", banner)[1],
            "password": re.search(r"password '([^']+)'", banner)[1],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


async def frame(ws, op: str) -> dict:
    """The next frame of type ``op`` (an error frame is returned too)."""
    while True:
        got = await asyncio.wait_for(ws.receive_json(), 10)
        if got["op"] in (op, "error"):
            return got


async def test_a_visitor_message_is_tagged_counted_and_exported(server):
    base = server["base"]
    async with aiohttp.ClientSession() as http:
        body = {"widget_key": server["widget_key"]}
        async with http.post(f"{base}/v1/visitors/session", json=body) as resp:
            visitor = (await resp.json())["token"]
        async with http.ws_connect(f"{base}/v1/ws?token={visitor}") as ws:
            await frame(ws, "hello")
            await ws.send_json({"op": "start", "ref": 1})
            conversation = (await frame(ws, "started"))["conversation"]["id"]
            for ref, text in ((2, "is this in stock?"), (3, "I would like a REFUND")):
                await ws.send_json({"op": "send", "ref": ref, "conversation_id": conversation,
                                    "cid": str(uuid.uuid4()), "text": text})  # fmt: skip
                assert (await frame(ws, "ack"))["op"] == "ack"
            await ws.send_json({"op": "resume", "conversation_id": conversation, "after_seq": 0})
            replay = [await frame(ws, "message"), await frame(ws, "message")]
        assert [m["meta"].get("topic") for m in replay] == [None, "billing"]

        login = {"site_id": "demo", "email": "admin@example.com", "password": server["password"]}
        async with http.post(f"{base}/v1/auth/login", json=login) as resp:
            admin = (await resp.json())["token"]
        stats = f"{base}/v1/tagger/stats"
        async with http.get(stats, headers={"Authorization": f"Bearer {admin}"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"site_id": "demo", "tagged": 1, "word": "refund"}
        async with http.get(stats, headers={"Authorization": f"Bearer {visitor}"}) as resp:
            assert resp.status == 403  # a visitor's token is valid, but not for this
        async with http.get(f"{base}/metrics") as resp:
            assert "\nkefu_tagger_tagged_total 1.0\n" in await resp.text()
        async with http.get(f"{base}/v1/openapi.json") as resp:
            assert "/v1/tagger/stats" in (await resp.json())["paths"]
