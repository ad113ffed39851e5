"""Uploads on real storage: range requests, and files deleted for good (an admin's
delete, a deleted message, an erased contact, with the files they uploaded and never
sent), with files on disk and with blobs in storage, on SQLite, PostgreSQL and MongoDB
(SecantusDB, as the storage contract starts it)."""

from __future__ import annotations

import os
import secrets

import pytest
from aiohttp import ClientPayloadError, ClientTimeout, FormData, MultipartReader, web

from kefu.core.web_app import create_app
from kefu.plugins.rest_api import ranges
from kefu.plugins.rest_api.ranges import MAX_RANGES, UNSATISFIABLE, byte_ranges
from kefu.plugins.rest_api.upload_store import open_store
from tests.chat_support import app_kernel, login, make_kernel, open_chat
from tests.conftest import service_unavailable
from tests.rest_support import bearer
from tests.storage_contract.conftest import mongo_url  # noqa: F401 (a fixture)

POSTGRES_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 2
#: A text upload longer than two download pieces, every byte's place recognisable.
TEXT = b"".join(b"%09d\n" % n for n in range(ranges.PIECE * 2 // 10 + 77))


@pytest.fixture(
    params=[
        ("files", "sqlite"),
        ("storage", "sqlite"),
        ("files", "postgres"),
        ("storage", "postgres"),
        ("files", "mongo"),
        ("storage", "mongo"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
async def client(request, aiohttp_client, tmp_path):
    store, engine = request.param
    config = f'[uploads]\nmax_bytes = 2097152\nstore = "{store}"\n'
    schema = None
    if engine == "mongo":
        url = request.getfixturevalue("mongo_url")
        config += f'[mongo]\nurl = "{url}"\ndatabase = "kefu_up_{secrets.token_hex(5)}"\n'
    if engine == "postgres":
        try:
            import asyncpg

            conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
            await conn.close()
        except (ImportError, OSError, TimeoutError) as exc:
            service_unavailable(f"PostgreSQL ({exc})")
        schema = f"kefu_up_{secrets.token_hex(5)}"
        config += f'[sql]\nurl = "{POSTGRES_DSN}"\npg_schema = "{schema}"\n'
    backend = "mongo" if engine == "mongo" else "sql"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, config, storage=backend)))
    assert open_store(app_kernel(client.app)).kind == store
    yield client
    if schema is not None:
        await client.close()
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def upload(client, token: str, data: bytes, name: str) -> dict:
    body = FormData()
    body.add_field("file", data, filename=name, content_type="application/octet-stream")
    resp = await client.post("/v1/uploads", data=body, headers=bearer(token))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def kept(client, site_id: str, stored: str) -> bool:
    """Whether any byte of the upload is left: the file on disk, or the blob's row."""
    kernel = app_kernel(client.app)
    on_disk = (kernel.data_dir / "uploads" / site_id / stored).exists()
    in_storage = await kernel.storage.blob_info(site_id, stored) is not None
    assert not (on_disk and in_storage)  # one store or the other, never both
    return on_disk or in_storage


@pytest.fixture
async def chat(client):
    return await open_chat(client)


@pytest.fixture
async def admin(client, chat):
    return bearer(await login(client, chat.site.site.id, chat.site.admin.email))


# -- Range ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-3", 10, [(0, 3)]),
        ("bytes=2-", 10, [(2, 9)]),
        ("bytes=-3", 10, [(7, 9)]),
        ("bytes=-30", 10, [(0, 9)]),
        ("bytes=4-400", 10, [(4, 9)]),
        ("bytes=9-9", 10, [(9, 9)]),
        ("BYTES=1-2", 10, [(1, 2)]),
        (" bytes=1-2 ", 10, [(1, 2)]),
        ("bytes=10-", 10, UNSATISFIABLE),
        ("bytes=10-20", 10, UNSATISFIABLE),
        ("bytes=-0", 10, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),
        ("bytes=-5", 0, UNSATISFIABLE),
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("items=0-1", 10, None),
        ("bytes=abc", 10, None),
        ("bytes=" + "9" * 40 + "-", 10, None),
        # several: in file order, overlapping and touching ones coalesced
        ("bytes=0-1,4-5", 10, [(0, 1), (4, 5)]),
        ("bytes=6-7, 0-1", 10, [(0, 1), (6, 7)]),
        ("bytes=0-4,3-6", 10, [(0, 6)]),
        ("bytes=0-2,3-5", 10, [(0, 5)]),
        ("bytes=0-1,-2", 10, [(0, 1), (8, 9)]),
        ("bytes=2-3,2-3", 10, [(2, 3)]),
        ("bytes=0-1,,4-5,", 10, [(0, 1), (4, 5)]),  # empty elements ignored
        ("bytes=0-1,20-30", 10, [(0, 1)]),  # the unsatisfiable one left out
        ("bytes=20-30,40-", 10, UNSATISFIABLE),
        ("bytes=0-1,5-2", 10, None),  # one malformed: the header is ignored
        ("bytes=0-1,x", 10, None),
        ("bytes=" + ",".join(f"{n}-{n}" for n in range(MAX_RANGES)), 20, [(0, MAX_RANGES - 1)]),
        ("bytes=" + ",".join(f"{n}-{n}" for n in range(MAX_RANGES + 1)), 20, None),  # too many
    ],
)
def test_byte_ranges(header, size, expected):
    assert byte_ranges(header, size) == expected


async def read_parts(resp) -> list[tuple[str, str, bytes]]:
    """The parts of a multipart/byteranges answer: (Content-Type, Content-Range, bytes)."""
    parts, reader = [], MultipartReader.from_response(resp)
    while (part := await reader.next()) is not None:
        parts.append(
            (part.headers["Content-Type"], part.headers["Content-Range"], await part.read())
        )
    return parts


async def test_several_ranges_answer_multipart_byteranges(client, chat):
    body = await upload(client, chat.visitor_token, TEXT, "log.txt")
    url, size, auth = body["url"], len(TEXT), bearer(chat.agent_token)
    etag = (await client.get(url, headers=auth)).headers["ETag"]
    piece, kind = ranges.PIECE, "text/plain; charset=utf-8"

    resp = await client.get(url, headers={**auth, "Range": "bytes=0-9,20-29"})
    assert resp.status == 206
    assert resp.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert resp.headers["Accept-Ranges"] == "bytes" and "Content-Range" not in resp.headers
    assert await read_parts(resp) == [
        (kind, f"bytes 0-9/{size}", TEXT[0:10]),
        (kind, f"bytes 20-29/{size}", TEXT[20:30]),
    ]
    resp = await client.get(url, headers={**auth, "Range": "bytes=0-9,20-29"})
    raw, boundary = await resp.read(), resp.headers["Content-Type"].split("boundary=")[1]
    assert int(resp.headers["Content-Length"]) == len(raw)  # exact: nothing after the end
    assert raw.startswith(f"--{boundary}\r\n".encode())
    assert raw.endswith(f"\r\n--{boundary}--\r\n".encode())

    # out of order, overlapping, a suffix, across pieces: sorted and coalesced
    header = f"bytes=-5, {piece - 10}-{piece + 10}, 100-200, 150-300, 301-310"
    resp = await client.get(url, headers={**auth, "Range": header})
    assert resp.status == 206
    assert await read_parts(resp) == [
        (kind, f"bytes 100-310/{size}", TEXT[100:311]),
        (kind, f"bytes {piece - 10}-{piece + 10}/{size}", TEXT[piece - 10 : piece + 11]),
        (kind, f"bytes {size - 5}-{size - 1}/{size}", TEXT[size - 5 :]),
    ]

    # several that coalesce into one: a single range; past the bound: the whole file
    resp = await client.get(url, headers={**auth, "Range": "bytes=0-4,5-9"})
    assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 0-9/{size}"
    assert await resp.read() == TEXT[:10]
    many = "bytes=" + ",".join(f"{n * 10}-{n * 10 + 1}" for n in range(MAX_RANGES + 1))
    resp = await client.get(url, headers={**auth, "Range": many})
    assert resp.status == 200 and await resp.read() == TEXT

    # If-Range: the ETag keeps the ranges, anything else gets the whole file
    resp = await client.get(url, headers={**auth, "Range": "bytes=0-1,5-6", "If-Range": etag})
    assert resp.status == 206
    assert [p[2] for p in await read_parts(resp)] == [TEXT[0:2], TEXT[5:7]]
    stale = {**auth, "Range": "bytes=0-1,5-6", "If-Range": '"another"'}
    resp = await client.get(url, headers=stale)
    assert resp.status == 200 and await resp.read() == TEXT


async def test_downloads_answer_ranges(client, chat):
    body = await upload(client, chat.visitor_token, TEXT, "log.txt")
    url, size, auth = body["url"], len(TEXT), bearer(chat.agent_token)

    resp = await client.get(url, headers=auth)
    assert resp.status == 200 and await resp.read() == TEXT
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert int(resp.headers["Content-Length"]) == size
    assert "Content-Range" not in resp.headers
    etag = resp.headers["ETag"]

    piece = ranges.PIECE
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=10-": (10, size - 1),
        "bytes=-5": (size - 5, size - 1),
        f"bytes=-{size + 10}": (0, size - 1),
        "bytes=5-99999999": (5, size - 1),
        f"bytes={piece - 10}-{piece + 10}": (piece - 10, piece + 10),  # across two pieces
        f"bytes={size - 1}-": (size - 1, size - 1),
    }
    for header, (first, last) in cases.items():
        resp = await client.get(url, headers={**auth, "Range": header})
        assert resp.status == 206, header
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert int(resp.headers["Content-Length"]) == last - first + 1
        assert await resp.read() == TEXT[first : last + 1], header

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
        resp = await client.get(url, headers={**auth, "Range": header})
        assert resp.status == 416, header
        assert resp.headers["Content-Range"] == f"bytes */{size}"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert (await resp.json())["error"]["code"] == "range_not_satisfiable"

    # a malformed range, another unit: the whole file (several ranges: the test below)
    for header in ("bytes=9-2", "items=0-5", "bytes=0-1,9-2"):
        resp = await client.get(url, headers={**auth, "Range": header})
        assert resp.status == 200, header
        assert await resp.read() == TEXT

    resp = await client.get(url, headers={**auth, "Range": "bytes=3-5", "If-Range": etag})
    assert resp.status == 206 and await resp.read() == TEXT[3:6]
    stale = {**auth, "Range": "bytes=3-5", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"}
    resp = await client.get(url, headers=stale)
    assert resp.status == 200 and await resp.read() == TEXT

    # an image too, by ?token= (an <img> or <video> asks for ranges without a header)
    png = await upload(client, chat.visitor_token, PNG, "p.png")
    resp = await client.get(
        png["url"], params={"token": chat.agent_token}, headers={"Range": "bytes=0-7"}
    )
    assert resp.status == 206 and await resp.read() == PNG[:8]
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


# -- deleting ------------------------------------------------------------------------------
async def test_an_admin_deletes_an_upload(client, chat, admin):
    site_id = chat.site.site.id
    body = await upload(client, chat.visitor_token, PDF, "d.pdf")
    other = await upload(client, chat.visitor_token, PNG, "keep.png")
    assert await kept(client, site_id, body["id"])

    agent = bearer(chat.agent_token)
    assert (await client.delete(body["url"], headers=agent)).status == 403
    assert (await client.delete(body["url"], headers=bearer(chat.visitor_token))).status == 403
    assert await kept(client, site_id, body["id"])

    resp = await client.delete(body["url"], headers=admin)
    assert resp.status == 204, await resp.text()
    assert (await client.get(body["url"], headers=agent)).status == 404
    resp = await client.get(body["url"], headers={**agent, "Range": "bytes=0-3"})
    assert resp.status == 404
    assert not await kept(client, site_id, body["id"])
    assert (await client.delete(body["url"], headers=admin)).status == 404
    # the other upload is untouched
    assert await kept(client, site_id, other["id"])
    assert await (await client.get(other["url"], headers=agent)).read() == PNG


async def send_file(chat, cid: str, upload_body: dict, *, by: str = "visitor") -> dict:
    peer = chat.visitor if by == "visitor" else chat.agent
    other = chat.agent if by == "visitor" else chat.visitor
    kind = "image" if upload_body["mime"].startswith("image/") else "file"
    await peer.send(
        op="send",
        conversation_id=chat.conversation_id,
        cid=cid,
        type=kind,
        attachment={"id": upload_body["id"]},
    )
    ack = await peer.expect("ack", cid=cid)
    await other.expect("message", cid=cid)
    return ack


async def test_deleting_a_message_deletes_its_upload(client, chat, admin):
    site_id = chat.site.site.id
    photo = await upload(client, chat.visitor_token, PNG, "photo.png")
    doc = await upload(client, chat.visitor_token, PDF, "doc.pdf")
    sent = await send_file(chat, "c1", photo)
    await send_file(chat, "c2", doc)
    seq = sent["seq"]

    url = f"/v1/conversations/{chat.conversation_id}/messages/{seq}"
    resp = await client.delete(url, headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["attachment"] is None
    assert (await client.get(photo["url"], headers=admin)).status == 404
    assert not await kept(client, site_id, photo["id"])
    # the other message's file stays
    assert await kept(client, site_id, doc["id"])
    assert (await client.get(doc["url"], headers=admin)).status == 200
    records = await app_kernel(client.app).storage.list_records(site_id, "audit.message_delete")
    assert [r.data["uploads_deleted"] for r in records] == [1]


async def test_erasing_a_contact_deletes_their_uploads_sent_or_not(client, chat, admin):
    kernel = app_kernel(client.app)
    site_id = chat.site.site.id
    theirs = [
        await upload(client, chat.visitor_token, PNG, "me.png"),
        await upload(client, chat.visitor_token, PDF, "id-card.pdf"),
    ]
    for n, body in enumerate(theirs):
        await send_file(chat, f"v{n}", body)
    from_agent = await upload(client, chat.agent_token, PDF, "invoice.pdf")
    await send_file(chat, "a0", from_agent, by="agent")
    # another visitor's file, in another conversation: not theirs to erase
    other_chat = await open_chat(client, chat.site)
    stranger = await upload(client, other_chat.visitor_token, PNG, "stranger.png")
    await send_file(other_chat, "s0", stranger)
    # uploaded and never sent: no message names them, the upload records its uploader
    unsent = [
        await upload(client, chat.visitor_token, PNG, "never-sent.png"),
        await upload(client, chat.visitor_token, PDF, "passport.pdf"),
    ]
    strangers_unsent = await upload(client, other_chat.visitor_token, PNG, "theirs.png")
    agents_unsent = await upload(client, chat.agent_token, PDF, "draft.pdf")

    conversation = await kernel.storage.get_conversation(site_id, chat.conversation_id)
    resp = await client.delete(f"/v1/visitors/{conversation.visitor_id}", headers=admin)
    assert resp.status == 200, await resp.text()
    erased = await resp.json()
    assert erased["uploads_deleted"] == 5 and erased["messages_removed"] >= 3

    for body in (*theirs, from_agent, *unsent):
        assert (await client.get(body["url"], headers=admin)).status == 404, body["name"]
        assert not await kept(client, site_id, body["id"]), body["name"]
    for body in (stranger, strangers_unsent, agents_unsent):  # someone else's
        assert await kept(client, site_id, body["id"]), body["name"]
    records = await kernel.storage.list_records(site_id, "audit.erasure")
    assert [r.data["uploads"] for r in records] == [5]
    # nothing names the erased visitor's uploads any more (the files store's owner records)
    assert not await kernel.storage.list_records(
        site_id, "upload.owner", prefix="visitor:" + conversation.visitor_id
    )


async def test_a_file_gone_while_sent_ends_the_connection_short(aiohttp_client):
    """A download whose file is deleted between two pieces must not look whole."""
    data = b"x" * (ranges.PIECE * 2)

    async def read(offset: int, length: int) -> bytes | None:
        return data[offset : offset + length] if offset == 0 else None  # gone after one piece

    async def handler(request: web.Request) -> web.StreamResponse:
        return await ranges.send(request, len(data), read, {"Content-Type": "text/plain"})

    app = web.Application()
    app.router.add_get("/f", handler)
    client = await aiohttp_client(app)
    resp = await client.get("/f", timeout=ClientTimeout(total=10))  # a hang fails too
    assert resp.status == 200 and resp.headers["Content-Length"] == str(len(data))
    with pytest.raises(ClientPayloadError):
        await resp.read()


async def test_erasing_a_contact_deletes_the_uploads_of_contacts_merged_into_it(
    client, chat, admin
):
    """A contact merged into another (and one merged into that first) hands its unsent
    uploads on: erasing the kept contact deletes them too; other contacts' stay."""
    kernel, site_id = app_kernel(client.app), chat.site.site.id
    kept_id = (await kernel.storage.get_conversation(site_id, chat.conversation_id)).visitor_id
    key = chat.site.site.widget_key
    sessions = [
        await (await client.post("/v1/visitors/session", json={"widget_key": key})).json()
        for _ in range(3)
    ]
    first, second, _ = sessions
    uploads = [await upload(client, s["token"], PNG, f"u{n}.png") for n, s in enumerate(sessions)]
    for into, merged in ((first, second), ({"visitor_id": kept_id}, first)):  # a chain
        resp = await client.post(
            f"/v1/visitors/{into['visitor_id']}/merge",
            json={"merge_id": merged["visitor_id"]},
            headers=admin,
        )
        assert resp.status == 200, await resp.text()
    resp = await client.delete(f"/v1/visitors/{kept_id}", headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["uploads_deleted"] == 2
    for body in uploads[:2]:
        assert not await kept(client, site_id, body["id"]), body["name"]
    assert await kept(client, site_id, uploads[2]["id"])  # the stranger's
    assert not await kernel.storage.list_records(site_id, "upload.merged")
