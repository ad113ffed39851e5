"""The web plugin without a browser: security headers, CSRF, session cookies, CORS for the
widget, the WebSocket origin check, the widget's config and the admin pages' access rules."""

from __future__ import annotations

import re

import aiohttp
import orjson
import pytest

from kefu.plugins.web import security
from tests.chat_support import (
    add_owner,
    add_site,
    app_kernel,
    login,
    open_chat,
    start_client,
    visitor_session,
    ws_peer,
)
from tests.conftest import ROOT

WEB = ROOT / "plugins" / "web"
SHOP = "http://shop.test"
EVIL = "http://evil.test"
OTHER = "https://other.test"


def cookies(**values: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in values.items())}


async def signed_in(client, site, email) -> dict[str, str]:
    """Headers of a browser holding the agent's session cookie and a CSRF value."""
    token = await login(client, site.site.id, email)
    csrf = security.new_csrf(app_kernel(client.app).secret, token)  # bound to the session
    return {**cookies(kefu_session=token, kefu_csrf=csrf), "X-CSRF-Token": csrf}


def test_templates_and_scripts_have_no_inline_code_or_html_sinks():
    for template in (WEB / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"{template.name}: inline script {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{template.name}: inline handler"
        assert not re.search(r"\sstyle\s*=", text), f"{template.name}: inline style"
        assert "|safe" not in text, f"{template.name}: unescaped output"
    for script in (WEB / "static").rglob("*.js"):
        text = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{script.relative_to(WEB)} uses {sink}"


async def test_pages_carry_a_strict_content_security_policy(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)
    for path in ("/", "/console/login"):
        client.session.cookie_jar.clear()
        resp = await client.get(path)
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert re.search(r"kefu_csrf=[^;]+;.*HttpOnly", resp.headers["Set-Cookie"])
        assert "SameSite=Strict" in resp.headers["Set-Cookie"]


async def test_console_and_admin_need_a_signed_in_agent(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)
    site = await add_site(app_kernel(client.app))
    for path in ("/console", "/admin/status", "/admin/agents"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    agent = await signed_in(client, site, site.agent.email)
    assert (await client.get("/console", headers=agent)).status == 200
    assert (await client.get("/admin/status", headers=agent)).status == 403
    assert (await client.get("/admin/status.json", headers=agent)).status == 403
    admin = await signed_in(client, site, site.admin.email)
    owner_agent = await add_owner(app_kernel(client.app), site.site.id)
    owner = await signed_in(client, site, owner_agent.email)
    for path in ("/admin/status", "/admin/agents", "/admin/sites", "/admin/routing",
                 "/admin/hours", "/admin/canned", "/admin/bot", "/admin/faq",
                 "/admin/plugins"):  # fmt: skip
        install_level = path in ("/admin/routing", "/admin/plugins")
        resp = await client.get(path, headers=owner if install_level else admin)
        assert resp.status == 200, path
        assert "Content-Security-Policy" in resp.headers
        page = await resp.text()
        assert '<a href="/admin/faq" ' in page and ">FAQ</a>" in page and ">Bot</a>" in page
        # install-wide routing and plugin settings are not a tenant admin's (issue 13, hole 11)
        assert ('href="/admin/plugins"' in page) is install_level
        if install_level:
            assert (await client.get(path, headers=admin)).status == 403


async def test_session_cookie_is_httponly_strict_and_needs_the_csrf_header(
    aiohttp_client, tmp_path
):
    client = await start_client(aiohttp_client, tmp_path)
    site = await add_site(app_kernel(client.app))
    token = await login(client, site.site.id, site.agent.email)
    csrf = security.new_csrf(app_kernel(client.app).secret)
    body = {"token": token, "expires_at": 2e9}
    refused = await client.post("/console/session", json=body, headers=cookies(kefu_csrf=csrf))
    assert refused.status == 403
    forged = security.new_csrf(b"another secret that is long enough, really")
    resp = await client.post(
        "/console/session",
        json=body,
        headers={**cookies(kefu_csrf=forged), "X-CSRF-Token": forged},
    )
    assert resp.status == 403
    resp = await client.post(
        "/console/session", json=body, headers={**cookies(kefu_csrf=csrf), "X-CSRF-Token": csrf}
    )
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"kefu_session={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie


async def test_cookie_authenticated_api_writes_need_the_csrf_header(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)
    site = await add_site(app_kernel(client.app))
    admin = await signed_in(client, site, site.admin.email)
    new = {"email": "carol@shop.test", "name": "Carol", "password": "a-long-password"}
    without = {k: v for k, v in admin.items() if k != "X-CSRF-Token"}
    resp = await client.post("/v1/agents", json=new, headers=without)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    assert (await client.post("/v1/agents", json=new, headers=admin)).status == 201
    assert (await client.get("/v1/agents", headers=without)).status == 200  # reads need none


async def test_admin_forms_need_their_csrf_field(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    admin = await signed_in(client, site, site.admin.email)
    csrf = admin.pop("X-CSRF-Token")
    form = {"name": "Dee", "email": "dee@shop.test", "password": "long-enough", "capacity": "3"}
    resp = await client.post("/admin/agents", data=form, headers=admin, allow_redirects=False)
    assert resp.status == 403
    assert await kernel.storage.get_agent_by_email(site.site.id, "dee@shop.test") is None
    resp = await client.post(
        "/admin/agents", data={**form, "csrf": csrf}, headers=admin, allow_redirects=False
    )
    assert resp.status == 303
    dee = await kernel.storage.get_agent_by_email(site.site.id, "dee@shop.test")
    assert dee.capacity == 3 and dee.roles == ["agent"] and dee.password_hash.startswith("scrypt$")
    eve = {**form, "csrf": csrf, "name": "<b>Eve</b>", "email": "eve@shop.test"}
    resp = await client.post("/admin/agents", data=eve, headers=admin, allow_redirects=False)
    assert resp.status == 303
    page = await (await client.get("/admin/agents", headers=admin)).text()
    assert "&lt;b&gt;Eve&lt;/b&gt;" in page and "<b>Eve</b>" not in page  # escaped


async def test_widget_endpoints_answer_cors_for_allowed_origins_only(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path, f'[web]\nallowed_origins = ["{OTHER}"]\n')
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    site.site.settings["allowed_origins"] = [SHOP]
    await kernel.storage.update_site(site.site)
    key = site.site.widget_key
    body = orjson.dumps({"widget_key": key})
    for origin, allowed in ((SHOP, True), (EVIL, False)):
        headers = {"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"}
        resp = await client.post("/v1/visitors/session", data=body, headers=headers)
        assert resp.status == 200  # a simple request is processed; only reading is refused
        assert resp.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
        resp = await client.get(f"/v1/widget/config?key={key}", headers={"Origin": origin})
        assert resp.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    token = (await visitor_session(client, key))["token"]
    resp = await client.post(
        "/v1/poll/open", data=orjson.dumps({"token": token}), headers={"Origin": SHOP}
    )
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == SHOP
    session = (await resp.json())["session"]
    resp = await client.get(f"/v1/poll/recv?session={session}&timeout=0", headers={"Origin": SHOP})
    assert (await resp.json())["frames"][0]["op"] == "hello"
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    preflight = {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    resp = await client.options("/v1/uploads", headers=preflight)
    assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]
    resp = await client.options("/v1/uploads", headers={**preflight, "Origin": EVIL})
    assert resp.status == 403
    resp = await client.get("/static/widget/app.js", headers={"Origin": EVIL})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"  # public module files
    other = await add_site(kernel)  # no list of its own: [web] allowed_origins applies
    for origin, allowed in ((OTHER, True), (SHOP, False)):
        resp = await client.get(
            f"/v1/widget/config?key={other.site.widget_key}", headers={"Origin": origin}
        )
        assert resp.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


async def test_websocket_from_another_origin_needs_an_allowed_origin(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path, f'[web]\nallowed_origins = ["{SHOP}"]\n')
    site = await add_site(app_kernel(client.app))
    token = (await visitor_session(client, site.site.widget_key))["token"]
    peer = await ws_peer(client, token, headers={"Origin": SHOP})
    await peer.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/v1/ws?token={token}", headers={"Origin": EVIL})
    assert refused.value.status == 403
    agent_token = await login(client, site.site.id, site.agent.email)
    with pytest.raises(aiohttp.WSServerHandshakeError):  # the cookie never crosses origins
        await client.ws_connect(
            "/v1/ws", headers={"Origin": SHOP, **cookies(kefu_session=agent_token)}
        )


async def test_widget_config_and_status_follow_the_live_service(aiohttp_client, tmp_path):
    client = await start_client(aiohttp_client, tmp_path)
    site = await add_site(app_kernel(client.app))
    key = site.site.widget_key
    assert (await client.get("/v1/widget/config?key=nope")).status == 404
    config = await (await client.get(f"/v1/widget/config?key={key}")).json()
    assert config["online"] is False and config["languages"] == ["en", "zh"]
    chat = await open_chat(client, site)
    assert (await (await client.get(f"/v1/widget/config?key={key}")).json())["online"] is True
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="c1", text="hi")
    await chat.visitor.expect("ack")
    admin = await signed_in(client, site, site.admin.email)
    status = await (await client.get("/admin/status.json", headers=admin)).json()
    assert status["connections"]["visitors"] == 1 and status["connections"]["agents"] == 1
    assert status["messages"]["total_since_start"] == 1
