"""The holes a security probe found (issue 13, docs/security.md "Holes found by the probe"),
one regression test or more each; revocation and identity re-checks (holes 2 and 3) are in
tests/test_security_revocation.py and tests/test_security_cluster.py."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time

import orjson
import pytest

from kefu.core.domain import Visitor
from kefu.core.storage import INSTALL
from kefu.core.web_app import create_app
from kefu.plugins.auth import tokens
from kefu.plugins.bus_memory import MemoryBus
from kefu.plugins.web import security
from tests.chat_support import (
    add_site,
    app_kernel,
    login,
    make_kernel,
    poll_peer,
    start_client,
    visitor_session,
    ws_peer,
)
from tests.rest_support import bearer
from tests.test_crash_recovery import Server

JSON = {"Content-Type": "application/json"}
OLD_SECRET = "the-previous-install-secret-0123456789abcdef"


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


# -- hole 4: long-poll memory without logging in ------------------------------------------
async def test_longpoll_sessions_outboxes_and_refs_are_bounded(aiohttp_client, tmp_path):
    """Hole 4 (fixed in issue 12's work, checked here with the probe's moves): one visitor
    token may not open thousands of sessions, an address is capped, refs are bounded."""
    extra = "[transport_longpoll]\nmax_sessions_per_principal = 3\nmax_sessions_per_address = 5\n"
    client = await start_client(aiohttp_client, tmp_path, extra)
    s = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, s.site.widget_key))["token"]
    statuses, opened = [], []
    for _ in range(6):
        resp = await client.post("/v1/poll/open", headers=bearer(token))
        statuses.append(resp.status)
        if resp.status == 200:
            opened.append((await resp.json())["session"])
    assert statuses == [200] * 3 + [429] * 3
    assert (await resp.json())["error"]["code"] == "too_many_sessions"
    for _ in range(4):  # other tokens from the same address
        other = (await visitor_session(client, s.site.widget_key))["token"]
        statuses.append((await client.post("/v1/poll/open", headers=bearer(other))).status)
    assert statuses[6:] == [200, 200, 429, 429]
    await client.post(f"/v1/poll/close?session={opened[0]}")
    peer = await poll_peer(client, (await visitor_session(client, s.site.widget_key))["token"])
    await peer.send_raw(orjson.dumps({"op": "ping", "ref": "r" * 1000}))
    await peer.send_raw(orjson.dumps({"op": "ping", "ref": "r" * 64 * 1024}))
    frames = await peer.quiet(0.3)
    assert frames[0]["code"] == "invalid_field" and frames[0]["field"] == "ref"
    assert frames[1]["code"] == "frame_too_large"
    assert "r" * 200 not in orjson.dumps(frames).decode()  # refs are never echoed unbounded


# -- hole 5: login throttling ---------------------------------------------------------------
async def test_an_account_guessed_from_many_addresses_backs_off_without_a_lockout():
    """Hole 5: 60 wrong passwords for one account over 12 addresses were all evaluated; now
    past the account's limit one attempt per back-off delay is evaluated, whatever the
    address, and its owner still gets in after the delay (no lockout)."""
    from kefu.plugins.auth.throttle import LoginThrottle

    bus = MemoryBus()
    await bus.open()
    throttle = LoginThrottle(bus.state, max_failures=5, window=300.0)
    evaluated = 0
    for attempt in range(60):
        address = f"10.0.0.{attempt % 12}"
        if await throttle.retry_after(address, "s", "victim@x") == 0:
            evaluated += 1
            await throttle.failed(address, "s", "victim@x")
    assert evaluated <= 21  # the account's 20, then one per back-off delay
    # the owner, from a fresh address: refused only until the current delay passes
    wait = await throttle.retry_after("192.0.2.1", "s", "victim@x")
    assert 0 < wait <= 30
    await bus.close()


async def test_password_spraying_from_one_address_is_limited(client):
    """Hole 5: spraying many accounts from one address was unlimited."""
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    settings = kernel.config.section("auth")
    refused = 0
    for n in range(settings.login_max_failures * 20 + 5):
        body = {"site_id": s.site.id, "email": f"user{n}@x.test", "password": "guess"}
        resp = await client.post("/v1/auth/login", json=body)
        refused += resp.status == 429
    assert refused >= 4


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy():
    """Hole 5: behind a proxy every client shared one address; a client must not pick its
    own address either."""
    from kefu.plugins.auth.throttle import client_address

    class Request:
        def __init__(self, remote: str, forwarded: str) -> None:
            self.remote, self.headers = remote, {"X-Forwarded-For": forwarded}

    assert client_address(Request("10.0.0.2", "203.0.113.9"), []) == "10.0.0.2"
    trusted = ["10.0.0.0/24"]
    assert client_address(Request("10.0.0.2", "203.0.113.9"), trusted) == "203.0.113.9"
    # a forged first hop is ignored: the right-most untrusted hop counts
    assert client_address(Request("10.0.0.2", "1.1.1.1, 203.0.113.9"), trusted) == "203.0.113.9"
    assert client_address(Request("198.51.100.7", "203.0.113.9"), trusted) == "198.51.100.7"


async def test_password_checks_are_bounded_under_a_flood(aiohttp_client, tmp_path):
    """Hole 5: scrypt work under a flood: at most login_concurrency checks at once, a
    bounded queue, the rest answered 503 busy at once."""
    extra = "login_concurrency = 1\nlogin_queue_max = 2\n"
    client = await aiohttp_client(create_app(make_kernel(tmp_path, extra)))  # in [auth]
    s = await add_site(app_kernel(client.app))
    body = {"site_id": s.site.id, "email": s.agent.email, "password": "wrong"}
    answers = await asyncio.gather(
        *(client.post("/v1/auth/login", json={**body, "email": f"{i}{s.agent.email}"})
          for i in range(12))
    )  # fmt: skip
    statuses = sorted(r.status for r in answers)
    assert 503 in statuses and statuses.count(401) >= 3
    busy = next(r for r in answers if r.status == 503)
    assert (await busy.json())["error"]["code"] == "busy" and busy.headers["Retry-After"]


# -- hole 6: slow headers ---------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    text = srv.config.read_text().replace("[server]\n", "[server]\nheader_timeout = 0.5\n")
    srv.config.write_text(text)
    yield srv
    srv.kill()


async def test_a_slow_header_client_is_disconnected(server):
    """Hole 6: a socket sending its headers slowly stayed open indefinitely."""
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    await writer.drain()
    started = time.monotonic()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the server
    assert time.monotonic() - started < 3
    # a normal request is served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()


# -- hole 7: server errors on bad input --------------------------------------------------------
VALIDATION_FIELDS = ("field", "problem", "limit")


async def expect_4xx(resp, status: int = 400) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    # the one error shape; a validation error also names its field (docs/protocol.md section 6)
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", *VALIDATION_FIELDS}
    return body["error"]["code"]


@pytest.mark.parametrize("levels", [255, 600, 1000])
async def test_deeply_nested_json_is_a_client_error(client, levels):
    """Hole 7: JSON nested 255-1,024 deep in visitor attributes and site settings was a 500."""
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    admin = await login(client, s.site.id, s.admin.email)
    key, nested = s.site.widget_key, deep(levels)
    body = f'{{"widget_key": "{key}", "attributes": {{"a": {nested}}}}}'
    assert await expect_4xx(await client.post("/v1/visitors/session", data=body, headers=JSON))
    body = f'{{"settings": {{"a": {nested}}}}}'
    resp = await client.patch(
        f"/v1/sites/{s.site.id}", data=body, headers={**bearer(admin), **JSON}
    )
    assert await expect_4xx(resp)
    # frames: an error frame, the connection stays
    token = (await visitor_session(client, s.site.widget_key))["token"]
    ws = await ws_peer(client, token)
    await ws.ws.send_str(f'{{"op": "ping", "ref": {nested}}}')
    await ws.ws.send_str(f'{{"op": "start", "meta": {{"x": {nested}}}}}')
    frames = await ws.quiet(0.3)
    assert {f["code"] for f in frames} <= {"invalid_field", "bad_frame", "bad_json"}
    assert len(frames) == 2
    await ws.send(op="ping", ref="alive")
    await ws.expect("pong", ref="alive")


async def test_bad_numbers_and_nulls_are_client_errors(client):
    """Hole 7: poll/recv?timeout=nan, /console/session with a non-number expires_at and
    PATCH /v1/agents/{id} with "roles": null were server errors."""
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    admin = await login(client, s.site.id, s.admin.email)
    token = (await visitor_session(client, s.site.widget_key))["token"]
    peer = await poll_peer(client, token)
    for value in ("nan", "inf", "-inf", "soon"):
        resp = await client.get(f"/v1/poll/recv?session={peer.session}&timeout={value}")
        assert await expect_4xx(resp) == "invalid_field"
    csrf = security.new_csrf(kernel.secret)
    headers = {"Cookie": f"kefu_csrf={csrf}", "X-CSRF-Token": csrf}
    for value in ("soon", "nan", [], {"a": 1}, True):
        resp = await client.post(
            "/console/session", json={"token": admin, "expires_at": value}, headers=headers
        )
        assert await expect_4xx(resp) == "invalid_field", value
    for field in ("roles", "name", "capacity", "skills"):
        resp = await client.patch(
            f"/v1/agents/{s.agent.id}", json={field: None}, headers=bearer(admin)
        )
        assert await expect_4xx(resp) == "invalid_request"


def test_a_token_with_a_non_finite_expiry_is_refused():
    """Hole 7: a token whose expiry is not a finite number must never verify."""
    secret = b"s" * 48
    for expiry in ("inf", "Infinity", "nan", None, True, [1e18]):
        payload = {"k": "visitor", "s": "a", "i": "v", "r": [], "e": expiry}
        signed = f"v1.{tokens._b64encode(orjson.dumps(payload))}"
        token = f"{signed}.{tokens._sign(secret, signed)}"
        assert tokens.verify(secret, token) is None, expiry
    assert tokens.verify(secret, tokens.issue(secret, kind="visitor", site_id="a",
                                              subject="v", ttl=60)[0])  # fmt: skip


# -- hole 8: canned-reply quotas ---------------------------------------------------------------
async def test_an_agent_cannot_fill_the_site_canned_replies(client):
    """Hole 8: a non-admin agent filled the site's quota and grew the site record to 2 MB."""
    from kefu.plugins.agent_tools.canned import MAX_AGENT_REPLIES

    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    agent = bearer(await login(client, s.site.id, s.agent.email))
    admin = bearer(await login(client, s.site.id, s.admin.email))
    before = len(orjson.dumps((await kernel.storage.get_site(s.site.id)).settings))
    text = "x" * 3900
    for n in range(MAX_AGENT_REPLIES):
        body = {"shortcut": f"r{n}", "text": text}
        resp = await client.post("/v1/canned_replies", json=body, headers=agent)
        assert resp.status == 201, await resp.text()
    resp = await client.post(
        "/v1/canned_replies", json={"shortcut": "one-more", "text": "x"}, headers=agent
    )
    assert await expect_4xx(resp, 409) == "too_many_replies"
    after = len(orjson.dumps((await kernel.storage.get_site(s.site.id)).settings))
    assert after == before  # private replies are kept apart from the site record
    # the site's own replies are unaffected, and another agent sees none of them
    resp = await client.post(
        "/v1/canned_replies", json={"shortcut": "hi", "text": "Hi", "scope": "site"}, headers=admin
    )
    assert resp.status == 201
    listed = (await (await client.get("/v1/canned_replies", headers=admin)).json())["replies"]
    assert [r["shortcut"] for r in listed] == ["hi"]
    mine = (await (await client.get("/v1/canned_replies", headers=agent)).json())["replies"]
    assert len(mine) == MAX_AGENT_REPLIES + 1
    # the agent's own still expand, can be changed and deleted
    own = next(r for r in mine if r["shortcut"] == "r0")
    resp = await client.patch(
        f"/v1/canned_replies/{own['id']}", json={"text": "Thanks {visitor.name}"}, headers=agent
    )
    assert resp.status == 200
    assert (await client.delete(f"/v1/canned_replies/{own['id']}", headers=agent)).status == 204


# -- hole 9: CSRF bound to the session ---------------------------------------------------------
async def test_a_csrf_value_of_another_session_is_refused(client):
    """Hole 9: a valid CSRF value worked with any session cookie."""
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    victim = await login(client, s.site.id, s.admin.email)
    attacker = await login(client, s.site.id, s.agent.email)
    theirs = security.new_csrf(kernel.secret, attacker)  # obtained for their own session
    planted = {"Cookie": f"kefu_session={victim}; kefu_csrf={theirs}", "X-CSRF-Token": theirs}
    new = {"email": "mallory@x.test", "name": "Mallory", "password": "a-long-password"}
    resp = await client.post("/v1/agents", json=new, headers=planted)
    assert await expect_4xx(resp, 403) == "csrf_failed"
    unbound = security.new_csrf(kernel.secret)  # a signed-out value
    planted = {"Cookie": f"kefu_session={victim}; kefu_csrf={unbound}", "X-CSRF-Token": unbound}
    assert (await client.post("/v1/agents", json=new, headers=planted)).status == 403
    mine = security.new_csrf(kernel.secret, victim)
    own = {"Cookie": f"kefu_session={victim}; kefu_csrf={mine}", "X-CSRF-Token": mine}
    assert (await client.post("/v1/agents", json=new, headers=own)).status == 201
    # a page rendered for the session issues a value bound to it
    resp = await client.get("/console", headers={"Cookie": f"kefu_session={victim}"})
    issued = resp.cookies["kefu_csrf"].value
    assert security.csrf_valid(kernel.secret, issued, issued, victim)
    assert not security.csrf_valid(kernel.secret, issued, issued, attacker)


# -- hole 10: file permissions -----------------------------------------------------------------
async def test_data_files_are_private(aiohttp_client, tmp_path):
    """Hole 10: kefu.db and uploads/ were created world-readable under the usual umask."""
    old = os.umask(0o022)
    try:
        client = await aiohttp_client(create_app(make_kernel(tmp_path, storage="sql")))
        s = await add_site(app_kernel(client.app))
        token = await login(client, s.site.id, s.agent.email)
        png = (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
            b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01"
            b"\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
        )
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("file", png, filename="a.png", content_type="image/png")
        resp = await client.post("/v1/uploads", data=form, headers=bearer(token))
        assert resp.status == 201, await resp.text()
    finally:
        os.umask(old)
    data = tmp_path / "data"

    def mode(path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data) == 0o700
    assert mode(data / "kefu.db") == 0o600
    for path in (data / "uploads").rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert mode(data / "uploads") == 0o700


# -- hole 11: install-level details and logs -----------------------------------------------------
async def test_failed_logins_do_not_log_email_addresses(client, caplog):
    """Hole 11: failed logins logged e-mail addresses at INFO."""
    s = await add_site(app_kernel(client.app))
    caplog.set_level(logging.INFO)
    body = {"site_id": s.site.id, "email": "Secret.Person@Example.test", "password": "nope"}
    assert (await client.post("/v1/auth/login", json=body)).status == 401
    text = caplog.text.lower()
    assert "failed login" in text and "secret.person" not in text


# -- secret rotation --------------------------------------------------------------------------
async def test_tokens_of_the_previous_secret_work_for_the_grace_period(aiohttp_client, tmp_path):
    """Secret rotation: a new secret signs, the previous one verifies for the grace period."""
    from kefu.plugins.auth.rotation import KIND as ROTATION_KIND
    from kefu.plugins.auth.rotation import fingerprint

    old = OLD_SECRET.encode()
    extra = f'previous_secrets = ["{OLD_SECRET}"]\nrotation_grace_s = 3600\n'  # in [auth]
    kernel = make_kernel(tmp_path, extra)
    client = await aiohttp_client(create_app(kernel))
    s = await add_site(kernel)
    await kernel.storage.upsert_visitor(Visitor("v1", s.site.id))
    visitor_old, _ = tokens.issue(old, kind="visitor", site_id=s.site.id, subject="v1", ttl=600)
    principal = await kernel.hooks.authenticate(None, visitor_old)
    assert principal is not None and principal.id == "v1"  # still accepted
    resp = await client.post(
        "/v1/visitors/session", json={"widget_key": s.site.widget_key, "token": visitor_old}
    )
    renewed = await resp.json()
    assert renewed["visitor_id"] == "v1"  # the identity is kept
    assert tokens.verify(kernel.secret, renewed["token"])  # new tokens: the new secret
    assert tokens.verify(old, renewed["token"]) is None
    # the grace period counts from the first start that listed it: move that back
    name = fingerprint(old)
    assert await kernel.storage.get_record(INSTALL, ROTATION_KIND, name) is not None
    await kernel.storage.put_record(
        INSTALL, ROTATION_KIND, name, {"first_seen": time.time() - 7200}
    )
    await kernel.hooks.config_changed("auth", None, None)
    assert await kernel.hooks.authenticate(None, visitor_old) is None
    # a secret never listed was never accepted
    stranger, _ = tokens.issue(b"z" * 48, kind="visitor", site_id=s.site.id, subject="v", ttl=60)
    assert await kernel.hooks.authenticate(None, stranger) is None
