"""The auth plugin over real HTTP: login, visitor sessions, tokens, passwords, permissions."""

from __future__ import annotations

import re
import time

import pytest

from kefu.core.domain import Agent, Conversation, Visitor
from kefu.core.errors import ConfigError, StartupError
from kefu.core.kernel import load_kernel
from kefu.core.types import Principal
from kefu.plugins.auth import passwords, policy, tokens
from kefu.plugins.auth.bootstrap import bootstrap_demo
from tests.chat_support import (
    PASSWORD,
    add_owner,
    add_site,
    app_kernel,
    login,
    start_client,
    visitor_session,
)


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


async def test_agent_logs_in_and_the_token_names_them(client):
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    resp = await client.post(
        "/v1/auth/login",
        json={"site_id": s.site.id, "email": s.agent.email.upper(), "password": PASSWORD},
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["agent"] == {
        "id": s.agent.id,
        "site_id": s.site.id,
        "email": s.agent.email,
        "name": "Bob",
        "roles": ["agent"],
    }
    assert body["expires_at"] > time.time() + 3600
    principal = await kernel.hooks.authenticate(None, body["token"])
    assert principal == Principal("agent", s.agent.id, s.site.id, frozenset({"agent"}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("password", "wrong"), ("email", "nobody@x.test"), ("site_id", "other-site")],
)
async def test_bad_credentials_get_401(client, field, value):
    s = await add_site(app_kernel(client.app))
    body = {"site_id": s.site.id, "email": s.agent.email, "password": PASSWORD, field: value}
    resp = await client.post("/v1/auth/login", json=body)
    assert resp.status == 401
    assert (await resp.json()) == {
        "error": {"code": "invalid_credentials", "message": "wrong site, e-mail or password"}
    }


async def test_login_is_throttled_per_address_and_email(client):
    s = await add_site(app_kernel(client.app))
    wrong = {"site_id": s.site.id, "email": s.agent.email, "password": "guess"}
    statuses = [(await client.post("/v1/auth/login", json=wrong)).status for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    right = {**wrong, "password": PASSWORD}
    resp = await client.post("/v1/auth/login", json=right)
    assert resp.status == 429  # even the right password waits: guessing must not pay off
    assert (await resp.json())["error"]["code"] == "too_many_attempts"
    assert int(resp.headers["Retry-After"]) > 0
    # another account is not locked out by someone guessing this one
    assert (await login(client, s.site.id, s.admin.email)).startswith("v1.")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"site_id": "s", "email": "a@b.c"}', "missing_field"),
        (b'{"site_id": 7, "email": "a@b.c", "password": "x"}', "invalid_field"),
    ],
)
async def test_malformed_login_bodies_get_400(client, body, code):
    resp = await client.post("/v1/auth/login", data=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


async def test_visitor_session_creates_then_keeps_the_identity(client):
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    first = await visitor_session(client, s.site.widget_key)
    assert first["site_id"] == s.site.id
    stored = await kernel.storage.get_visitor(s.site.id, first["visitor_id"])
    assert stored.referrer == "https://shop.test/" and stored.page == "/cart"
    assert stored.user_agent  # taken from the request when the body has none
    again = await visitor_session(client, s.site.widget_key, token=first["token"])
    assert again["visitor_id"] == first["visitor_id"]
    principal = await kernel.hooks.authenticate(None, again["token"])
    assert principal == Principal("visitor", first["visitor_id"], s.site.id)


async def test_a_visitor_token_of_another_site_does_not_carry_over(client):
    kernel = app_kernel(client.app)
    a, b = await add_site(kernel), await add_site(kernel)
    on_a = await visitor_session(client, a.site.widget_key)
    on_b = await visitor_session(client, b.site.widget_key, token=on_a["token"])
    assert on_b["site_id"] == b.site.id and on_b["visitor_id"] != on_a["visitor_id"]


async def test_unknown_widget_key_is_refused(client):
    resp = await client.post("/v1/visitors/session", json={"widget_key": "nope"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_widget_key"


async def test_visitor_attributes_must_be_a_small_object(client):
    s = await add_site(app_kernel(client.app))
    for attributes in ("text", {"blob": "x" * 9000}):
        resp = await client.post(
            "/v1/visitors/session",
            json={"widget_key": s.site.widget_key, "attributes": attributes},
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_field"


# -- tokens -----------------------------------------------------------------------

SECRET = b"s" * 48


def _token(**kw):
    args = {"kind": "visitor", "site_id": "a", "subject": "v1", "ttl": 60} | kw
    return tokens.issue(SECRET, **args)[0]


def test_token_round_trip():
    claims = tokens.verify(SECRET, _token(kind="agent", roles=["admin"]))
    assert (claims.kind, claims.site_id, claims.id, claims.roles) == (
        "agent",
        "a",
        "v1",
        ("admin",),
    )


def test_expired_token_is_rejected():
    assert tokens.verify(SECRET, _token(now=time.time() - 120)) is None


def test_token_of_another_install_is_rejected():
    assert tokens.verify(b"t" * 48, _token()) is None


def test_forged_site_in_payload_is_rejected():
    genuine = _token(site_id="a")
    other = _token(site_id="b")
    version, _, signature = genuine.split(".")
    forged = ".".join([version, other.split(".")[1], signature])
    assert tokens.verify(SECRET, forged) is None
    assert tokens.verify(SECRET, genuine[:-2] + ("AA" if genuine[-2:] != "AA" else "BB")) is None


@pytest.mark.parametrize("junk", ["", "x", "v1.a.b", "v2.a.b", "v1..", "a.b.c.d", "v1.!!.??"])
def test_malformed_tokens_are_rejected(junk):
    assert tokens.verify(SECRET, junk) is None


async def test_http_token_of_one_site_cannot_be_replayed_on_another(client):
    kernel = app_kernel(client.app)
    a, b = await add_site(kernel), await add_site(kernel)
    agent_token = await login(client, a.site.id, a.admin.email)
    principal = await kernel.hooks.authenticate(None, agent_token)
    assert await kernel.hooks.permits(principal, "conversation.read", a.site.id)
    assert not await kernel.hooks.permits(principal, "conversation.read", b.site.id)
    # the same agent id claimed in site b does not exist there: no principal at all
    forged, _ = tokens.issue(
        b"wrong", kind="agent", site_id=b.site.id, subject=a.admin.id, roles=["admin"], ttl=60
    )
    assert await kernel.hooks.authenticate(None, forged) is None


async def test_agent_role_changes_apply_to_issued_tokens(client):
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    token = await login(client, s.site.id, s.admin.email)
    s.admin.roles = ["agent"]
    assert await kernel.storage.update_agent(s.admin)
    assert not (await kernel.hooks.authenticate(None, token)).is_admin


# -- passwords --------------------------------------------------------------------


def test_passwords_use_a_salted_slow_hash():
    first, second = passwords.hash_password("pw"), passwords.hash_password("pw")
    assert first != second  # a fresh salt each time
    assert re.fullmatch(r"scrypt\$14\$8\$1\$[\w=-]+\$[\w=-]+", first)
    assert passwords.verify_password("pw", first) and not passwords.verify_password("px", first)
    assert not passwords.verify_password("pw", "md5$abc")
    start = time.perf_counter()
    passwords.verify_password("pw", first)
    assert time.perf_counter() - start > 0.005  # deliberately slow


async def test_stored_agent_passwords_are_never_plain(client):
    kernel = app_kernel(client.app)
    agents = await kernel.storage.list_agents("demo")
    assert agents and all(a.password_hash.startswith("scrypt$") for a in agents)


# -- permissions ------------------------------------------------------------------

ADMIN = Principal("agent", "ad", "a", frozenset({"admin", "agent"}))
OWNER = Principal("agent", "ow", "a", frozenset({"owner", "admin", "agent"}))
AGENT = Principal("agent", "ag", "a", frozenset({"agent"}))
VISITOR = Principal("visitor", "v1", "a")
MINE = Conversation(id="c1", site_id="a", visitor_id="v1")
THEIRS = Conversation(id="c2", site_id="a", visitor_id="v2")
FOREIGN = Conversation(id="c3", site_id="b", visitor_id="v1")


@pytest.mark.parametrize(
    ("principal", "action", "resource", "allowed"),
    [
        (ADMIN, "agent.create", "a", True),
        (ADMIN, "site.update", "b", False),
        (ADMIN, "conversation.read", FOREIGN, False),
        (ADMIN, "plugins.list", None, False),  # install-level (issue 13, hole 11)
        (OWNER, "plugins.list", None, True),
        (ADMIN, "sites.create", "a", False),  # issue 13, hole 1
        (OWNER, "sites.create", "a", True),
        (ADMIN, "bot.flows.shared", "a", False),
        (OWNER, "bot.flows.shared", "a", True),
        (OWNER, "conversation.read", FOREIGN, False),  # no site crossing for owners either
        (ADMIN, "agents.manage", Agent("ow", "a", "o@x", "O", "h", ["owner", "admin"]), False),
        (OWNER, "agents.manage", Agent("ow2", "a", "o@x", "O", "h", ["owner", "admin"]), True),
        (AGENT, "plugins.list", None, False),
        (AGENT, "conversation.assign", MINE, True),
        (AGENT, "message.send", THEIRS, True),
        (AGENT, "visitor.read", "a", True),
        (AGENT, "agent.create", "a", False),
        (AGENT, "message.send", FOREIGN, False),
        (VISITOR, "message.send", MINE, True),
        (VISITOR, "conversation.read", MINE, True),
        (VISITOR, "conversation.resolve", MINE, True),
        (VISITOR, "conversation.assign", MINE, False),
        (VISITOR, "conversation.transfer", MINE, False),
        (VISITOR, "message.send", THEIRS, False),
        (VISITOR, "conversation.read", FOREIGN, False),
        (VISITOR, "conversation.start", "a", True),
        (VISITOR, "conversation.start", "b", False),
        (VISITOR, "conversation.list", "a", False),
        (VISITOR, "visitor.read", Visitor(id="v1", site_id="a"), True),
        (VISITOR, "visitor.read", Visitor(id="v2", site_id="a"), False),
        (VISITOR, "plugins.list", None, False),
        (None, "conversation.read", MINE, False),
    ],
)
def test_permission_rules(principal, action, resource, allowed):
    assert policy.permits(principal, action, resource) is allowed


async def test_plugins_endpoint_is_for_owners(client):
    """Issue 13, hole 11: the install's plugins are install-level, not a tenant admin's."""
    kernel = app_kernel(client.app)
    s = await add_site(kernel)
    assert (await client.get("/-/plugins")).status == 401
    agent = await login(client, s.site.id, s.agent.email)
    admin = await login(client, s.site.id, s.admin.email)
    owner = await login(client, s.site.id, (await add_owner(kernel, s.site.id)).email)
    resp = await client.get("/-/plugins", headers={"Authorization": f"Bearer {agent}"})
    assert resp.status == 403
    resp = await client.get("/-/plugins", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 403
    resp = await client.get("/-/plugins", headers={"Authorization": f"Bearer {owner}"})
    assert resp.status == 200
    assert "auth" in {p["name"] for p in (await resp.json())["plugins"]}


# -- bootstrap and essentials -----------------------------------------------------


async def test_first_start_creates_a_demo_site_and_announces_the_password_once(client):
    kernel = app_kernel(client.app)
    site = await kernel.storage.get_site("demo")
    lines = "\n".join(kernel.announcements)
    assert site.widget_key in lines
    password = re.search(r"password '([^']+)'", lines).group(1)
    assert (await login(client, "demo", "admin@example.com", password)).startswith("v1.")
    assert not await bootstrap_demo(kernel)  # a site exists: nothing new, nothing announced
    assert "\n".join(kernel.announcements) == lines


def test_auth_cannot_be_disabled(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text('[plugins]\ndisable = ["auth"]\n')
    with pytest.raises(StartupError, match="essential"):
        load_kernel(path, environ={}, entry_points=False)


def test_auth_settings_are_validated(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text("[auth]\npassword_cost = 3\n")
    with pytest.raises(ConfigError, match="auth.password_cost"):
        load_kernel(path, environ={}, entry_points=False)
