"""Uploads over real HTTP: content sniffing, the allow-list, the size limit, site scoping."""

from __future__ import annotations

import pytest
from aiohttp import FormData

from kefu.core.errors import ConfigError
from kefu.plugins.rest_api.upload_store import open_store
from kefu.plugins.rest_api.uploads import sniff
from tests.chat_support import (
    add_site,
    app_kernel,
    login,
    make_kernel,
    open_chat,
    start_client,
)
from tests.rest_support import bearer, build_world

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 100
GIF = b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 50
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
TEXT = "Order #42: délivré ✓\r\n\tthanks\n".encode()


@pytest.fixture(params=["files", "storage"])
async def client(request, aiohttp_client, tmp_path):
    """Every test below runs with files in the data dir and with blobs in storage."""
    config = f'[uploads]\nmax_bytes = 4096\nstore = "{request.param}"\n'
    return await start_client(aiohttp_client, tmp_path, config)


async def stored_bytes(client, site_id: str, stored: str) -> bytes | None:
    """What the configured store holds under that name (a file, or a blob)."""
    kernel = app_kernel(client.app)
    path = kernel.data_dir / "uploads" / site_id / stored
    if open_store(kernel).kind == "files":
        return path.read_bytes() if path.exists() else None
    assert not path.exists()  # in storage: no file anywhere
    found = await kernel.storage.get_blob(site_id, stored)
    return found[1] if found else None


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


def form(data: bytes, filename: str = "f.bin", field: str = "file") -> FormData:
    body = FormData()
    body.add_field(field, data, filename=filename, content_type="application/octet-stream")
    return body


async def upload(client, world, data: bytes, filename: str = "f.bin"):
    return await client.post("/v1/uploads", data=form(data, filename), headers=world.agent())


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
        (TEXT, "text/plain"),
        (b"MZ\x90\x00", None),
        (b"\x7fELF\x02\x01", None),
        (b"PK\x03\x04", None),
        (b"<html>\x00</html>", None),
        (b"\xff\xfe\x00\x00", None),
        (b"", None),
    ],
)
def test_sniffing_decides_by_content(data, mime):
    assert sniff(data) == mime


async def test_image_round_trip(client, world):
    resp = await upload(client, world, PNG, "../../My Photo (1).PNG")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["mime"] == "image/png" and body["size"] == len(PNG)
    assert body["name"] == "My_Photo_1.png"
    site_id = world.site.site.id
    assert body["url"].startswith(f"/v1/uploads/{site_id}/") and body["url"].endswith(body["name"])
    assert await stored_bytes(client, site_id, body["url"].rsplit("/", 1)[1]) == PNG
    resp = await client.get(body["url"], headers=world.admin())
    assert resp.status == 200
    assert await resp.read() == PNG
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"] == 'inline; filename="My_Photo_1.png"'
    assert "sandbox" in resp.headers["Content-Security-Policy"]


async def test_text_named_html_is_stored_and_served_as_plain_text(client, world):
    resp = await upload(client, world, b"<script>alert(1)</script>", "evil.html")
    body = await resp.json()
    assert resp.status == 201 and body["mime"] == "text/plain" and body["name"] == "evil.txt"
    resp = await client.get(body["url"], headers=world.agent())
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    # shown in the browser as text (a file card opens it in a tab), never run
    assert resp.headers["Content-Disposition"] == 'inline; filename="evil.txt"'
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"MZ\x90\x00" + b"\x00" * 64, "setup.exe"),
        (b"\x7fELF\x02\x01\x01", "photo.png"),
        (b"PK\x03\x04" + b"\x00" * 30, "doc.pdf"),
        (b"GIF8" + b"\x00" * 10, "a.gif"),
        (b"<svg onload=alert(1)>\x00", "logo.svg"),
        (b"", "empty.txt"),
    ],
)
async def test_files_outside_the_allow_list_are_refused(client, world, data, name):
    resp = await upload(client, world, data, name)
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_type"
    assert not (app_kernel(client.app).data_dir / "uploads").exists()
    assert not getattr(app_kernel(client.app).storage, "_blobs", {})  # no blob either


async def test_the_size_limit_is_enforced(client, world):
    limit = 4096
    ok = TEXT + b"a" * (limit - len(TEXT))
    assert (await upload(client, world, ok, "ok.txt")).status == 201
    resp = await upload(client, world, ok + b"a", "big.txt")
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"
    big = PNG + b"\x00" * (1024 * 1024)  # refused from Content-Length, before reading
    resp = await upload(client, world, big, "big.png")
    assert resp.status == 413


async def test_allowed_types_come_from_the_config(aiohttp_client, tmp_path):
    client = await start_client(
        aiohttp_client, tmp_path, '[uploads]\nallowed_types = ["image/png"]\n'
    )
    world = await build_world(client, app_kernel(client.app))
    assert (await upload(client, world, PNG)).status == 201
    assert (await upload(client, world, PDF)).status == 415


def test_unknown_types_in_the_config_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="uploads.allowed_types"):
        make_kernel(tmp_path, '[uploads]\nallowed_types = ["text/html"]\n')


async def test_malformed_upload_requests(client, world):
    resp = await client.post("/v1/uploads", data=form(PNG, field="other"), headers=world.agent())
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "missing_file"
    resp = await client.post("/v1/uploads", json={"file": "x"}, headers=world.agent())
    assert resp.status == 415
    resp = await client.post("/v1/uploads", data=form(PNG))
    assert resp.status == 401


async def test_uploads_are_served_only_inside_their_site(client, world):
    body = await (await upload(client, world, PNG, "a.png")).json()
    other = await add_site(app_kernel(client.app))
    other_token = await login(client, other.site.id, other.admin.email)
    assert (await client.get(body["url"], headers=bearer(other_token))).status == 404
    assert (await client.get(body["url"])).status == 401
    # an <img> tag cannot send a header: the token may come as ?token=
    resp = await client.get(body["url"], params={"token": world.agent_token})
    assert resp.status == 200
    session = await client.post(
        "/v1/visitors/session", json={"widget_key": world.site.site.widget_key}
    )
    visitor = await session.json()
    assert (await client.get(body["url"], headers=bearer(visitor["token"]))).status == 200
    # the visitor can upload too (attachments in the chat)
    resp = await client.post(
        "/v1/uploads", data=form(GIF, "g.gif"), headers=bearer(visitor["token"])
    )
    assert resp.status == 201


@pytest.mark.parametrize(
    "path",
    [
        "/v1/uploads/{site}/..%2F..%2Fsecret",
        "/v1/uploads/{site}/{stored}.exe",
        "/v1/uploads/{site}/aaaaaaaaaaaaaaaaaaaaaa-missing.png",
        "/v1/uploads/{site}/%2e%2e",
    ],
)
async def test_bad_upload_names_are_not_found(client, world, path):
    body = await (await upload(client, world, PNG, "a.png")).json()
    stored = body["url"].rsplit("/", 1)[1]
    url = path.format(site=world.site.site.id, stored=stored)
    resp = await client.get(url, headers=world.agent())
    assert resp.status == 404


# -- attachments in chat messages ------------------------------------------------------
async def send_attachment(chat, cid: str, attachment: dict, kind: str = "image") -> dict:
    await chat.visitor.send(
        op="send", conversation_id=chat.conversation_id, cid=cid, type=kind, attachment=attachment
    )
    return await chat.visitor.expect("error", cid=cid) if cid.startswith("bad") else None


async def test_a_message_attachment_must_be_an_upload_of_the_site(client):
    kernel = app_kernel(client.app)
    chat = await open_chat(client)
    visitor = bearer(chat.visitor_token)
    png = await (await client.post("/v1/uploads", data=form(PNG, "p.png"), headers=visitor)).json()
    pdf = await (await client.post("/v1/uploads", data=form(PDF, "d.pdf"), headers=visitor)).json()
    other = await add_site(kernel)
    other_token = await login(client, other.site.id, other.agent.email)
    foreign = await client.post("/v1/uploads", data=form(PNG, "x.png"), headers=bearer(other_token))
    foreign_url = (await foreign.json())["url"]

    claimed = {"url": "https://cdn.test" + png["url"], "mime": "image/gif", "size": 1, "x": "y"}
    await chat.visitor.send(
        op="send", conversation_id=chat.conversation_id, cid="ok", type="image", attachment=claimed
    )
    await chat.visitor.expect("ack", cid="ok")
    delivered = await chat.agent.expect("message")
    assert delivered["attachment"] == {
        "id": png["id"],
        "url": png["url"],
        "name": "p.png",
        "size": len(PNG),
        "mime": "image/png",
    }
    await chat.visitor.send(
        op="send",
        conversation_id=chat.conversation_id,
        cid="by-id",
        type="file",
        attachment={"id": pdf["id"]},
    )
    await chat.visitor.expect("ack", cid="by-id")
    assert (await chat.agent.expect("message"))["attachment"]["mime"] == "application/pdf"

    bad = [
        {"url": "https://evil.test/malware.exe"},
        {"url": foreign_url},
        {"url": png["url"].replace(".png", ".exe")},
        {"url": f"/v1/uploads/{chat.site.site.id}/aaaaaaaaaaaaaaaaaaaaaa-gone.png"},
        {"id": "../../secret"},
        {"url": pdf["url"]},  # a pdf cannot be an image message
    ]
    for n, attachment in enumerate(bad):
        error = await send_attachment(chat, f"bad{n}", attachment)
        assert (error["code"], error["reason"]) == ("rejected", "invalid_attachment"), attachment
    assert await chat.agent.quiet(0.1) == []
    stored = await kernel.storage.list_messages(chat.site.site.id, chat.conversation_id)
    assert [m.cid for m in stored] == ["ok", "by-id"]


# -- where the files are kept ------------------------------------------------------------
async def test_auto_keeps_files_on_one_machine_storage(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)  # memory storage: not shared
    assert open_store(app_kernel(client.app)).kind == "files"


async def test_a_configured_dir_holds_the_files(aiohttp_client, tmp_path):
    shared = tmp_path / "shared-uploads"
    client = await start_client(aiohttp_client, tmp_path, f'[uploads]\ndir = "{shared}"\n')
    world = await build_world(client, app_kernel(client.app))
    body = await (await upload(client, world, PDF, "d.pdf")).json()
    site_id = world.site.site.id
    assert (shared / site_id / body["id"]).read_bytes() == PDF
    assert not (app_kernel(client.app).data_dir / "uploads").exists()
    assert (shared / site_id).stat().st_mode & 0o777 == 0o700
    resp = await client.get(body["url"], headers=world.agent())
    assert resp.status == 200 and await resp.read() == PDF


async def test_storage_serves_files_stored_before_the_switch(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path, '[uploads]\nstore = "storage"\n')
    kernel = app_kernel(client.app)
    world = await build_world(client, kernel)
    old = "aaaaaaaaaaaaaaaaaaaaaa-old.png"
    folder = kernel.data_dir / "uploads" / world.site.site.id
    folder.mkdir(parents=True)
    (folder / old).write_bytes(PNG)
    resp = await client.get(f"/v1/uploads/{world.site.site.id}/{old}", headers=world.agent())
    assert resp.status == 200 and await resp.read() == PNG
    assert await open_store(kernel).size(world.site.site.id, old) == len(PNG)


async def test_store_storage_needs_a_backend_that_keeps_blobs(tmp_path):
    from kefu.plugins.storage_memory import MemoryStorage

    class NoBlobs:  # a third-party backend without the BlobStore capability
        name = "noblobs"

        def __getattr__(self, name):
            if "blob" in name:
                raise AttributeError(name)
            return getattr(MemoryStorage(), name)

    kernel = make_kernel(tmp_path, '[uploads]\nstore = "storage"\n')
    kernel.storage = NoBlobs()
    with pytest.raises(ConfigError, match="cannot keep files"):
        open_store(kernel)
