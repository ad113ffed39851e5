"""Every documented protocol behaviour that tests/protocol_checks.py checks (a client written
from docs/protocol.md alone), through ``kefu run --config examples/config/cluster.toml`` as is:
two workers on PostgreSQL and Redis, the secret from ``KEFU_SERVER__SECRET`` (a fresh schema
and key prefix keep the run apart). A chat's visitor and agent are put on different workers
(found from /proc), long-poll requests open a new TCP connection each so both workers answer
them, and the run ends with SIGTERM: a WebSocket gets the fatal ``shutdown`` frame and 1001, a
``recv`` in flight ``410 shutdown`` (docs/protocol.md section 2). The figures are printed and
recorded in docs/scaling.md. About 30 s on the shared 2-core box."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import aiohttp
import orjson
import pytest

from kefu.core.plugins import DEFAULT_PLUGINS
from tests.cluster_support import ROOT, children, free_port, pg_fetch, socket_owner
from tests.conftest import service_unavailable
from tests.protocol_checks import CHECKS, Ctx, Peer, open_poll, run_checks

pytestmark = [pytest.mark.needs_service, pytest.mark.timeout(120)]

CLUSTER_TOML = ROOT / "examples" / "config" / "cluster.toml"
#: What the first start prints of the demo site (docs/protocol.md section 1).
WANTED = ("widget key", "password")


def _port_of(peer: Peer) -> int:
    conn = peer.ws._response.connection  # the client end of the TCP connection
    assert conn is not None and conn.transport is not None
    return conn.transport.get_extra_info("sockname")[1]


def _spawn(tmp_path, tag: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        "KEFU_SERVER__SECRET": secrets.token_urlsafe(40),
        "KEFU_SERVER__PORT": str(port),
        "KEFU_SERVER__DATA_DIR": str(tmp_path / "data"),
        "KEFU_SQL__PG_SCHEMA": f"kefu_docs_{tag}",
        "KEFU_BUS_REDIS__PREFIX": f"kefu-docs-{tag}:",
        "KEFU_AUTH__PASSWORD_COST": "10",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(CLUSTER_TOML)],
        stdout=(tmp_path / "stdout.log").open("w"), stderr=(tmp_path / "stderr.log").open("w"),
        stdin=subprocess.DEVNULL, cwd=tmp_path, env=env,
    )  # fmt: skip


async def _start(tmp_path, tag: str, port: int) -> tuple[subprocess.Popen, str, str]:
    """``kefu run`` with the cluster example; the demo site's widget key and password."""
    proc, out = _spawn(tmp_path, tag, port), tmp_path / "stdout.log"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:
            err = (tmp_path / "stderr.log").read_text()[-3000:]
            assert proc.poll() is None, err
            assert time.monotonic() < deadline, err
            banner = out.read_text()
            key, password = (re.search(rf"{w} '([^']+)'", banner) for w in WANTED)
            if "serving on" in banner and key and password and len(children(proc.pid)) >= 2:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            return proc, key[1], password[1]
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.1)


async def _shutdown(ctx: Ctx, proc: subprocess.Popen) -> list[str]:
    """SIGTERM: the documented goodbyes (docs/protocol.md "When the server stops")."""
    failed = []
    ws_peer = await ctx.connect((await ctx.visitor())["token"])
    poll, _ = await open_poll(ctx, (await ctx.visitor())["token"])
    await poll.frames_until("hello")
    # four recvs in flight, each on its own TCP connection: held by the session's worker,
    # or relayed to it by the other one (both stop at once)
    in_flight = [asyncio.ensure_future(poll.call("GET", "recv", timeout="20")) for _ in range(4)]
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        frame = orjson.loads((await ws_peer.ws.receive(timeout=10)).data)
        assert frame["op"] == "error" and frame["code"] == "shutdown" and frame["fatal"], frame
        msg = await ws_peer.ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert msg.extra == "shutdown", msg
    except Exception as exc:
        failed.append(f"2 SIGTERM: WebSocket fatal shutdown then 1001: {exc!r}")
    try:
        answers = await asyncio.wait_for(asyncio.gather(*in_flight), 15)
        codes = [(status, (out.get("error") or {}).get("code")) for status, out in answers]
        assert codes == [(410, "shutdown")] * 4, answers
    except Exception as exc:
        failed.append(f"2 SIGTERM: every recv in flight answers 410 shutdown: {exc!r}")
    await ws_peer.close()
    return failed


async def test_documented_protocol_behaviour_through_the_cluster_example(tmp_path):
    if "kefu.plugins.bus_redis" not in DEFAULT_PLUGINS:
        pytest.skip("the Redis bus plugin is not built in")
    import redis

    try:
        await pg_fetch("SELECT 1")
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except Exception as exc:  # the driver's, the network's, the server's
        service_unavailable(f"PostgreSQL and Redis ({exc})")
    tag, port = secrets.token_hex(4), free_port()
    began = time.monotonic()
    proc, widget_key, password = await _start(tmp_path, tag, port)
    started_in = time.monotonic() - began
    workers = children(proc.pid)
    apart: list[tuple[int | None, ...]] = []

    async def worker_of(peer: Peer) -> int | None:
        owner = await asyncio.to_thread(socket_owner, workers, port, _port_of(peer))
        apart.append((owner,))
        return owner

    try:
        async with aiohttp.ClientSession() as http:
            ctx = Ctx(
                f"http://127.0.0.1:{port}", widget_key, "demo", "admin@example.com", password,
                http, worker_of,
            )  # fmt: skip
            failed = await run_checks(ctx)
            failed += await _shutdown(ctx, proc)
        assert proc.wait(30) == 0, (tmp_path / "stderr.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await pg_fetch(f'DROP SCHEMA IF EXISTS "kefu_docs_{tag}" CASCADE')
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(f"kefu-docs-{tag}:*"):
            client.delete(key)
    total = len(CHECKS) + 2
    seen = {owner for (owner,) in apart if owner is not None}
    print(
        f"\ncluster.toml: {total - len(failed)} of {total} documented-behaviour checks passed "
        f"(2 workers, {len(seen)} seen holding connections; started in {started_in:.1f} s, "
        f"{time.monotonic() - began:.1f} s in all)"
    )
    for line in failed:
        print("FAILED", line)
    assert len(seen) == 2, apart
    assert not failed, "\n".join(failed)
