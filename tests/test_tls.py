"""TLS on the real port (core/tls.py): TLS 1.3 minimum on HTTPS and WSS, certificates
reloaded from disk without a restart, mutual TLS, HSTS, ``kefu run``; the
certificates are made in the test."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kefu.core import server, tls
from kefu.core.config import ServerSettings
from kefu.core.errors import ConfigError
from kefu.core.kernel import Kernel, load_kernel
from kefu.core.web_app import create_app
from tests.chat_support import add_site, make_kernel, visitor_session, ws_peer
from tests.test_cli import free_port, start_run, wait_for_healthz
from tests.tls_support import client_context, issue, make_ca, serial_of, write_pair

ROOT = Path(__file__).resolve().parent.parent
TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture
def pki(tmp_path):
    ca = make_ca()
    leaf = issue(ca)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_pair(leaf, cert, key)
    return ca, leaf, cert, key


def tls_config(cert: Path, key: Path, extra: str = "") -> str:
    return f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n{extra}'


def tls_kernel(tmp_path: Path, server_toml: str) -> Kernel:
    """A memory-storage kernel (tests/chat_support.py) with these ``[server]`` lines."""
    make_kernel(tmp_path)  # writes kefu.toml
    path = tmp_path / "kefu.toml"
    path.write_text(path.read_text().replace("[server]\n", server_toml, 1))
    return load_kernel(path, environ={}, entry_points=False)


async def start_https(tmp_path: Path, server_toml: str):
    """The app on a real TLS socket, through the server's own context (core/server.py)."""
    kernel = tls_kernel(tmp_path, server_toml)
    runner = web.AppRunner(create_app(kernel))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server._ssl_context(kernel))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return kernel, runner, f"https://127.0.0.1:{port}"


async def handshake(base: str, ctx: ssl.SSLContext) -> tuple[str, int]:
    """The protocol version negotiated and the serial number of the certificate served."""
    host, port = base.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    try:
        tls_object = writer.get_extra_info("ssl_object")
        return tls_object.version(), serial_of(tls_object.getpeercert(binary_form=True))
    finally:
        writer.close()


async def peer_serial(base: str, ctx: ssl.SSLContext) -> int:
    return (await handshake(base, ctx))[1]


async def test_tls12_client_refused_tls13_accepted_on_https_and_wss(tmp_path, pki):
    ca, _, cert, key = pki
    kernel, runner, base = await start_https(tmp_path, tls_config(cert, key))
    try:
        fixture = await add_site(kernel)
        assert (await handshake(base, client_context(ca)))[0] == "TLSv1.3"
        old = aiohttp.ClientSession(
            base, connector=aiohttp.TCPConnector(ssl=client_context(ca, TLS12))
        )
        new = aiohttp.ClientSession(
            base, connector=aiohttp.TCPConnector(ssl=client_context(ca, TLS13))
        )
        async with old, new:
            # asyncio drops the connection without flushing OpenSSL's protocol_version alert;
            # the same client is admitted with tls_min_version = "1.2" (test below)
            with pytest.raises(aiohttp.ClientConnectorError):
                await old.get("/healthz")
            async with new.get("/healthz") as resp:
                assert resp.status == 200
                assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
            session = await visitor_session(new, fixture.site.widget_key)
            with pytest.raises(aiohttp.ClientConnectorError):
                await old.ws_connect(f"/v1/ws?token={session['token']}")
            peer = await ws_peer(new, session["token"])  # WSS: hello over TLS 1.3
            await peer.close()
    finally:
        await runner.cleanup()


async def test_min_version_12_admits_a_tls12_client(tmp_path, pki):
    ca, _, cert, key = pki
    _, runner, base = await start_https(
        tmp_path, tls_config(cert, key, 'tls_min_version = "1.2"\n')
    )
    try:
        ctx = client_context(ca, TLS12)
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(ssl=ctx)) as c:
            async with c.get("/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_certificate_replaced_on_disk_is_served_without_restart(tmp_path, pki):
    ca, leaf, cert, key = pki
    toml = tls_config(cert, key, "tls_reload_interval_s = 0.1\n")
    kernel, runner, base = await start_https(tmp_path, toml)
    ctx = client_context(ca, TLS13)
    try:
        assert await peer_serial(base, ctx) == leaf.cert.serial_number
        async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(ssl=ctx)) as open_:
            async with open_.get("/healthz") as resp:  # a kept-alive connection from before
                assert resp.status == 200
            renewed = issue(ca)
            write_pair(renewed, cert, key)
            deadline = time.monotonic() + 10
            while (serial := await peer_serial(base, ctx)) != renewed.cert.serial_number:
                assert serial == leaf.cert.serial_number
                assert time.monotonic() < deadline, "the renewed certificate was never served"
                await asyncio.sleep(0.05)
            assert tls.server_tls(kernel).generation == 2
            async with open_.get("/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


async def test_half_written_pair_keeps_the_chain_in_use(tmp_path, pki):
    ca, leaf, cert, key = pki
    server_tls = tls.ServerTLS(str(cert), str(key), reload_interval=0)
    seen = []
    server_tls.subscribe(seen.append)
    listener = await asyncio.start_server(
        lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_tls.context
    )
    base = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    ctx = client_context(ca, TLS13)
    try:
        renewed = issue(ca)
        cert.write_bytes(renewed.cert_pem)  # the key is still the old one: mismatch
        assert not server_tls.reload_if_changed()
        assert server_tls.material().cert_chain == leaf.cert_pem
        # a failed load straight into the live context would break every new handshake
        assert await peer_serial(base, ctx) == leaf.cert.serial_number
        key.write_bytes(renewed.key_pem)
        assert server_tls.reload_if_changed()
        assert server_tls.material().cert_chain == renewed.cert_pem
        assert await peer_serial(base, ctx) == renewed.cert.serial_number
        assert [m.generation for m in seen] == [2]
        assert not server_tls.reload_if_changed()  # nothing changed since
    finally:
        listener.close()


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path, pki):
    ca, _, cert, key = pki
    client_ca = make_ca("clients CA")
    (tmp_path / "clients.pem").write_bytes(client_ca.cert_pem)
    toml = tls_config(cert, key, f'tls_client_ca = "{tmp_path / "clients.pem"}"\n')
    _, runner, base = await start_https(tmp_path, toml)
    client_cert = (tmp_path / "client.pem", tmp_path / "client.key")
    write_pair(issue(client_ca, "agent-laptop", client=True), *client_cert)
    stranger = (tmp_path / "stranger.pem", tmp_path / "stranger.key")
    write_pair(issue(make_ca("other"), "stranger", client=True), *stranger)
    try:
        for ctx, ok in (
            (client_context(ca), False),
            (client_context(ca, cert=stranger), False),
            (client_context(ca, cert=client_cert), True),
        ):
            conn = aiohttp.TCPConnector(ssl=ctx)
            async with aiohttp.ClientSession(base, connector=conn) as c:
                if ok:
                    async with c.get("/healthz") as resp:
                        assert resp.status == 200
                else:
                    # TLS 1.3 sends the refusal after the handshake: it shows on first read
                    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                        async with c.get("/healthz") as resp:
                            await resp.read()
    finally:
        await runner.cleanup()


def test_settings_are_checked(tmp_path, pki):
    _, _, cert, key = pki
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        tls_kernel(tmp_path, f'[server]\ntls_cert = "{cert}"\n')
    with pytest.raises(ConfigError, match="tls_client_ca needs tls_cert"):
        tls_kernel(tmp_path, f'[server]\ntls_client_ca = "{cert}"\n')
    kernel = tls_kernel(tmp_path, tls_config(tmp_path / "nope.pem", key))
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        tls.server_tls(kernel)


def test_hsts_only_behind_tls(tmp_path):
    assert tls.hsts_value(ServerSettings()) is None
    proxied = ServerSettings(public_url="https://chat.example.com")
    assert tls.hsts_value(proxied) == "max-age=31536000"  # TLS ends at the proxy in front
    assert tls.hsts_value(ServerSettings(public_url="https://x", hsts=False)) is None
    assert tls.hsts_value(ServerSettings(public_url="https://x", hsts_max_age=0)) is None


def test_kefu_run_serves_https_with_the_configured_certificate(tmp_path, pki):
    ca, _, cert, key = pki
    port = free_port()
    config = tmp_path / "kefu.toml"
    config.write_text(tls_config(cert, key, f'data_dir = "{tmp_path / "data"}"\n'))
    proc = start_run(config, port, tmp_path)
    try:
        url = f"https://127.0.0.1:{port}/healthz"
        with wait_for_healthz(proc, url, client_context(ca, TLS13)) as r:
            assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert f"serving on https://127.0.0.1:{port}/" in output
    assert proc.returncode == 0, output


def test_the_hardened_example_config_checks_and_turns_the_defences_on():
    environ = {
        "KEFU_SECRET": "s" * 40,
        "KEFU_DATABASE_URL": "postgresql://kefu@127.0.0.1/kefu",
        "KEFU_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    kernel = load_kernel(ROOT / "examples" / "config" / "hardened.toml", environ=environ)
    server_settings = kernel.config.server
    assert server_settings.tls_cert and server_settings.tls_min_version == "1.3"
    assert tls.hsts_value(server_settings) == "max-age=31536000"
    assert not kernel.config.section("auth").bootstrap_demo
    assert kernel.config.section("auth_oidc").jwks_url.startswith("https://")
    assert kernel.config.section("web").allowed_origins != ["*"]
