"""The gRPC transport over TLS: TLS 1.3 minimum, mutual TLS with client certificates mapped
to a service identity and its permissions; certificates are made here with ``cryptography``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kefu.core.web_app import create_app
from kefu.plugins.transport_grpc import client as grpc_client
from kefu.plugins.transport_grpc.client import Closed, open_stream
from tests.chat_support import add_site, app_kernel, make_kernel, visitor_session, ws_peer

SITE = "grpc-tls-site"
SERVICE = "orders.shop.test"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A throw-away CA that signs server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool) -> tuple[bytes, bytes]:
        """``(certificate PEM, key PEM)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        else:
            names = [x509.DNSName(common_name)]
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = Authority("kefu test CA"), Authority("rogue CA")
    server_cert, server_key = ca.issue("localhost", server=True)
    files = {"ca": ca.pem, "server.pem": server_cert, "server.key": server_key}
    for label, authority, name in (
        ("service", ca, SERVICE),
        ("stranger", ca, "someone.else.test"),
        ("rogue", rogue, SERVICE),
    ):
        files[f"{label}.pem"], files[f"{label}.key"] = authority.issue(name, server=False)
    paths = {}
    for name, data in files.items():
        path = Path(folder, name)
        path.write_bytes(data)
        paths[name] = path
    return {"files": files, "paths": paths, "authority": ca}


def tls_config(pki: dict, require: bool = True) -> str:
    p = pki["paths"]
    return (
        "[transport_grpc]\nenabled = true\nport = 0\n"
        f'tls_cert = "{p["server.pem"]}"\ntls_key = "{p["server.key"]}"\n'
        f'client_ca = "{p["ca"]}"\nrequire_client_cert = {str(require).lower()}\n'
        "[[transport_grpc.services]]\n"
        f'name = "{SERVICE}"\nsite_id = "{SITE}"\n'
        'actions = ["message.send", "conversation.read", "message.read"]\n'
    )


def tls_channel(pki: dict, port: int, who: str | None) -> grpc.aio.Channel:
    f = pki["files"]
    return grpc_client.channel(
        f"127.0.0.1:{port}",
        root_certificates=f["ca"],
        certificate_chain=f[f"{who}.pem"] if who else None,
        private_key=f[f"{who}.key"] if who else None,
        server_name="localhost",
    )


def grpc_port(client) -> int:
    return app_kernel(client.app).existing_plugin_state("transport_grpc").port


@pytest.fixture
async def client(aiohttp_client, tmp_path, pki):
    return await aiohttp_client(create_app(make_kernel(tmp_path, tls_config(pki))))


async def test_service_certificate_posts_system_messages_to_its_site(client, pki):
    kernel = app_kernel(client.app)
    site = await add_site(kernel, SITE)
    other = await add_site(kernel)
    token = (await visitor_session(client, site.site.widget_key))["token"]
    visitor = await ws_peer(client, token)
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    foreign_token = (await visitor_session(client, other.site.widget_key))["token"]
    foreign = await ws_peer(client, foreign_token)
    await foreign.send(op="start")
    foreign_id = (await foreign.expect("started"))["conversation"]["id"]

    async with tls_channel(pki, grpc_port(client), "service") as ch:
        service = await open_stream(ch, None)  # the certificate is the credential
        assert service.hello["principal"] == {"kind": "system", "id": SERVICE, "site": SITE}
        await service.send(
            op="send", conversation_id=conversation_id, cid="order-42", text="Order shipped"
        )
        ack = await service.expect("ack", cid="order-42")
        got = await visitor.expect("message", cid="order-42")
        assert got["seq"] == ack["seq"] and got["sender"] == {"kind": "system", "id": SERVICE}
        await service.send(op="send", conversation_id=conversation_id, cid="order-42", text="x")
        assert (await service.expect("ack", cid="order-42"))["duplicate"] is True
        page = await grpc_client.history(ch, None, conversation_id)
        assert [m.sender_kind for m in page.messages][-1] == "system"
        # its own site only; and it does not start conversations
        await service.send(op="send", conversation_id=foreign_id, cid="o2", text="nope", ref=1)
        assert (await service.expect("error", ref=1))["code"] == "conversation_not_found"
        await service.send(op="start", ref=2)
        assert (await service.expect("error", ref=2))["code"] == "forbidden"
        await service.close()

        # a visitor token over the same mutual-TLS channel acts as the visitor
        as_visitor = await open_stream(ch, token)
        assert as_visitor.hello["principal"]["kind"] == "visitor"
        await as_visitor.close()
    assert [f for f in await foreign.quiet(0.05) if f["op"] == "message"] == []


@pytest.mark.parametrize("who", ["rogue", None])
async def test_wrong_or_missing_client_certificate_is_refused(client, pki, who):
    async with tls_channel(pki, grpc_port(client), who) as ch:
        with pytest.raises(Closed) as refused:
            await asyncio.wait_for(open_stream(ch, None), 10)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE


async def test_certificate_without_a_service_needs_a_token(client, pki):
    async with tls_channel(pki, grpc_port(client), "stranger") as ch:
        stream = await open_stream(ch, None, hello=False)
        assert (await stream.receive())["code"] == "invalid_token"
        with pytest.raises(Closed) as ended:
            await stream.receive()
        assert ended.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_tls12_only_client_is_refused_and_tls13_accepted(client, pki):
    port = grpc_port(client)
    paths = pki["paths"]

    def context(max_version):
        ctx = ssl.create_default_context(cafile=str(paths["ca"]))
        ctx.load_cert_chain(str(paths["service.pem"]), str(paths["service.key"]))
        ctx.maximum_version = max_version
        ctx.set_alpn_protocols(["h2"])
        return ctx

    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # the server drops it
        await asyncio.open_connection(
            "127.0.0.1", port, ssl=context(ssl.TLSVersion.TLSv1_2), server_hostname="localhost"
        )
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context(ssl.TLSVersion.TLSv1_3), server_hostname="localhost"
    )
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.version() == "TLSv1.3" and ssl_object.selected_alpn_protocol() == "h2"
    writer.close()


async def test_the_inner_port_refuses_calls_that_bypass_tls(client, pki):
    transport = app_kernel(client.app).existing_plugin_state("transport_grpc")
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    async with grpc_client.channel(f"127.0.0.1:{transport.front.inner_port}") as ch:
        with pytest.raises(Closed) as refused:
            await open_stream(ch, token)
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_tls12_client_is_accepted_when_the_minimum_is_12(aiohttp_client, tmp_path, pki):
    config = tls_config(pki, require=False).replace(
        "enabled = true\n", 'enabled = true\ntls_min_version = "1.2"\n'
    )
    client = await aiohttp_client(create_app(make_kernel(tmp_path, config)))
    ctx = ssl.create_default_context(cafile=str(pki["paths"]["ca"]))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection(
        "127.0.0.1", grpc_port(client), ssl=ctx, server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
    aiohttp_client, tmp_path, pki
):
    folder = tmp_path / "tls"
    folder.mkdir()
    for name in ("server.pem", "server.key", "ca"):
        (folder / name).write_bytes(pki["files"][name])
    config = tls_config(pki, require=False)
    for name in ("server.pem", "server.key"):
        config = config.replace(str(pki["paths"][name]), str(folder / name))
    client = await aiohttp_client(create_app(make_kernel(tmp_path, config)))
    front = app_kernel(client.app).existing_plugin_state("transport_grpc").front
    assert front._watcher is not None  # checked every tls_reload_interval_s (5 s)

    async def served_serial() -> int:
        ctx = ssl.create_default_context(cafile=str(pki["paths"]["ca"]))
        ctx.set_alpn_protocols(["h2"])
        _, writer = await asyncio.open_connection(
            "127.0.0.1", front.port, ssl=ctx, server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    first = await served_serial()
    assert first == x509.load_pem_x509_certificate(pki["files"]["server.pem"]).serial_number
    assert front.reload_if_changed() is False  # nothing changed
    new_cert, new_key = pki["authority"].issue("localhost", server=True)
    (folder / "server.key.new").write_bytes(new_key)
    (folder / "server.pem.new").write_bytes(new_cert)
    (folder / "server.key.new").replace(folder / "server.key")  # renamed in, as a deploy would
    (folder / "server.pem.new").replace(folder / "server.pem")
    assert front.reload_if_changed() is True
    assert await served_serial() == x509.load_pem_x509_certificate(new_cert).serial_number != first


async def test_terminal_chat_over_mutual_tls_as_the_service(client, pki):
    kernel = app_kernel(client.app)
    site = await add_site(kernel, SITE)
    visitor = await ws_peer(client, (await visitor_session(client, site.site.widget_key))["token"])
    await visitor.send(op="start")
    conversation_id = (await visitor.expect("started"))["conversation"]["id"]
    p = pki["paths"]
    args = argparse.Namespace(
        target=f"127.0.0.1:{grpc_port(client)}", token=None, conversation=conversation_id,
        ca=str(p["ca"]), cert=str(p["service.pem"]), key=str(p["service.key"]),
        server_name="localhost",
    )  # fmt: skip
    lines: asyncio.Queue = asyncio.Queue()
    shown: list[str] = []
    chat = asyncio.create_task(grpc_client.terminal_chat(args, lines, shown.append))
    lines.put_nowait("Your order has shipped\n")
    got = await visitor.expect("message", within=10)
    assert (got["text"], got["sender"]) == (
        "Your order has shipped",
        {"kind": "system", "id": SERVICE},
    )
    lines.put_nowait("")
    assert await asyncio.wait_for(chat, 10) == 0
