"""The REST API over real HTTP: auth, site isolation, permissions, pagination, validation."""

from __future__ import annotations

import pytest

from kefu.plugins.rest_api.routes import REST_ENDPOINTS
from tests.chat_support import PASSWORD, add_owner, add_site, app_kernel, login, start_client
from tests.rest_support import add_conversation, bearer, build_world


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


@pytest.fixture
async def world(client):
    return await build_world(client, app_kernel(client.app))


def concrete(path: str) -> str:
    return (
        path.replace("{site}", "demo")
        .replace("{name}", "x" * 22 + "-a.png")
        .replace("{id}", "x")
        .replace("{seq}", "1")
    )


@pytest.mark.parametrize(
    "endpoint", [e for e in REST_ENDPOINTS if e.auth], ids=lambda e: e.operation_id
)
@pytest.mark.parametrize("token", [None, "v1.forged.token", ""])
async def test_every_endpoint_needs_a_valid_token(client, endpoint, token):
    headers = {} if token is None else bearer(token)
    resp = await client.request(endpoint.method, concrete(endpoint.path), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"


# -- conversations ----------------------------------------------------------------
async def test_conversations_are_listed_only_from_the_callers_site(client, world):
    kernel = app_kernel(client.app)
    other = await add_site(kernel)
    # one visitor has at most one open conversation: each of these is another visitor's
    mine = [
        await add_conversation(kernel, world.site.site.id, f"visitor-{i}", at=1000.0 + i)
        for i in range(3)
    ]
    await add_conversation(kernel, other.site.id, "someone", at=5000.0)
    resp = await client.get("/v1/conversations", headers=world.agent())
    assert resp.status == 200
    body = await resp.json()
    assert [c["id"] for c in body["conversations"]] == [c.id for c in reversed(mine)]
    assert body["next_before"] is None
    assert all(c["site_id"] == world.site.site.id for c in body["conversations"])


async def test_conversation_pages_walk_everything_once(client, world):
    kernel = app_kernel(client.app)
    site_id = world.site.site.id
    made = [await add_conversation(kernel, site_id, f"visitor-{i}", at=100.0 + i) for i in range(7)]
    seen, before, pages = [], None, 0
    while True:
        query = {"limit": "3"} | ({"before": str(before)} if before is not None else {})
        resp = await client.get("/v1/conversations", params=query, headers=world.agent())
        body = await resp.json()
        seen += [c["id"] for c in body["conversations"]]
        pages += 1
        before = body["next_before"]
        if before is None:
            break
    assert seen == [c.id for c in reversed(made)]
    assert pages == 3


async def test_conversations_filter_by_state_and_assignee(client, world):
    kernel = app_kernel(client.app)
    site_id, me = world.site.site.id, world.site.agent.id
    queued = await add_conversation(kernel, site_id, "visitor-1", state="queued")
    mine = await add_conversation(kernel, site_id, "visitor-2", state="assigned", assignee_id=me)
    await add_conversation(kernel, site_id, "visitor-3", state="assigned", assignee_id="other")
    get = client.get
    resp = await get("/v1/conversations?state=queued", headers=world.agent())
    assert [c["id"] for c in (await resp.json())["conversations"]] == [queued.id]
    resp = await get("/v1/conversations?assignee=me", headers=world.agent())
    assert [c["id"] for c in (await resp.json())["conversations"]] == [mine.id]
    resp = await get(f"/v1/conversations?assignee={me}&state=assigned", headers=world.admin())
    assert [c["id"] for c in (await resp.json())["conversations"]] == [mine.id]


@pytest.mark.parametrize(
    "query",
    [
        "state=open",
        "limit=0",
        "limit=101",
        "limit=ten",
        "before=-1",
        "before=nan",
        "before=inf",
        "assignee=a%20b",
    ],
)
async def test_bad_conversation_queries_get_400(client, world, query):
    resp = await client.get(f"/v1/conversations?{query}", headers=world.agent())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_query"


async def test_another_sites_conversation_is_not_found(client, world):
    kernel = app_kernel(client.app)
    other = await add_site(kernel)
    theirs = await add_conversation(kernel, other.site.id, "v", messages=2)
    mine = await add_conversation(kernel, world.site.site.id, world.visitors[0].id)
    for path in (f"/v1/conversations/{theirs.id}", f"/v1/conversations/{theirs.id}/messages"):
        resp = await client.get(path, headers=world.admin())
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get(f"/v1/conversations/{mine.id}", headers=world.admin())
    assert resp.status == 200
    assert (await resp.json())["visitor_id"] == world.visitors[0].id


async def test_message_history_pages(client, world):
    kernel = app_kernel(client.app)
    conv = await add_conversation(kernel, world.site.site.id, world.visitors[0].id, messages=7)
    path = f"/v1/conversations/{conv.id}/messages"

    async def page(**query):
        resp = await client.get(path, params=query, headers=world.agent())
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return [m["seq"] for m in body["messages"]], body["has_more"]

    assert await page(limit="3") == ([5, 6, 7], True)
    assert await page(limit="3", before_seq="5") == ([2, 3, 4], True)
    assert await page(limit="3", before_seq="2") == ([1], False)
    assert await page(limit="3", after_seq="0") == ([1, 2, 3], True)
    assert await page(limit="3", after_seq="5") == ([6, 7], False)
    assert await page() == ([1, 2, 3, 4, 5, 6, 7], False)
    resp = await client.get(path, params={"after_seq": "1"}, headers=world.agent())
    first = (await resp.json())["messages"][0]
    assert first["text"] == "m2" and first["conversation_id"] == conv.id


@pytest.mark.parametrize(
    "query",
    [
        "after_seq=1&before_seq=3",
        "limit=201",
        "after_seq=-1",
        "before_seq=0",
        "after_seq=99999999999999999999",
    ],
)
async def test_bad_message_queries_get_400(client, world, query):
    kernel = app_kernel(client.app)
    conv = await add_conversation(kernel, world.site.site.id, world.visitors[0].id)
    resp = await client.get(f"/v1/conversations/{conv.id}/messages?{query}", headers=world.agent())
    assert resp.status == 400


async def test_visitors_see_only_their_own_conversations(client, world):
    kernel = app_kernel(client.app)
    site = world.site.site
    session = await client.post("/v1/visitors/session", json={"widget_key": site.widget_key})
    visitor = await session.json()
    own = await add_conversation(kernel, site.id, visitor["visitor_id"], messages=1)
    other = await add_conversation(kernel, site.id, world.visitors[1].id, messages=1)
    headers = bearer(visitor["token"])
    assert (await client.get(f"/v1/conversations/{own.id}", headers=headers)).status == 200
    resp = await client.get(f"/v1/conversations/{own.id}/messages", headers=headers)
    assert [m["seq"] for m in (await resp.json())["messages"]] == [1]
    assert (await client.get(f"/v1/conversations/{other.id}", headers=headers)).status == 403
    resp = await client.get(f"/v1/conversations/{other.id}/messages", headers=headers)
    assert resp.status == 403
    assert (await client.get("/v1/conversations", headers=headers)).status == 403
    assert (await client.get("/v1/agents", headers=headers)).status == 403


# -- visitors -------------------------------------------------------------------------
async def test_visitor_records_are_site_scoped(client, world):
    kernel = app_kernel(client.app)
    other = await add_site(kernel)
    other_token = await login(client, other.site.id, other.agent.email)
    path = f"/v1/visitors/{world.visitors[0].id}"
    resp = await client.get(path, headers=world.agent())
    assert resp.status == 200
    assert (await resp.json())["name"] == "Vera"
    resp = await client.get(path, headers=bearer(other_token))
    assert resp.status == 404


# -- agents ---------------------------------------------------------------------------
NEW_AGENT = {"email": "Carol@Example.test", "name": "Carol", "password": "s3cret-enough"}


async def test_admin_creates_an_agent_who_can_log_in(client, world):
    resp = await client.post("/v1/agents", json=NEW_AGENT, headers=world.admin())
    assert resp.status == 201, await resp.text()
    agent = await resp.json()
    assert agent["email"] == "carol@example.test" and agent["roles"] == ["agent"]
    assert "password" not in str(agent) and "hash" not in str(agent)
    stored = await app_kernel(client.app).storage.get_agent(world.site.site.id, agent["id"])
    assert stored.password_hash.startswith("scrypt$") and "s3cret" not in stored.password_hash
    token = await login(client, world.site.site.id, "carol@example.test", "s3cret-enough")
    resp = await client.get(f"/v1/agents/{agent['id']}", headers=bearer(token))
    assert resp.status == 200  # an agent reads itself
    resp = await client.get("/v1/agents", headers=world.admin())
    emails = sorted(a["email"] for a in (await resp.json())["agents"])
    assert emails == sorted([world.site.admin.email, world.site.agent.email, agent["email"]])


async def test_agents_are_managed_by_admins_only(client, world):
    resp = await client.post("/v1/agents", json=NEW_AGENT, headers=world.agent())
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert (await client.get("/v1/agents", headers=world.agent())).status == 403
    path = f"/v1/agents/{world.site.admin.id}"
    assert (await client.get(path, headers=world.agent())).status == 403
    resp = await client.patch(path, json={"name": "Mallory"}, headers=world.agent())
    assert resp.status == 403


async def test_duplicate_agent_email_is_a_conflict(client, world):
    body = {**NEW_AGENT, "email": world.site.agent.email.upper()}
    resp = await client.post("/v1/agents", json=body, headers=world.admin())
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({k: v for k, v in NEW_AGENT.items() if k != "password"}, "invalid_request"),
        ({**NEW_AGENT, "password": "short"}, "invalid_request"),
        ({**NEW_AGENT, "email": "not-an-email"}, "invalid_request"),
        ({**NEW_AGENT, "roles": ["root"]}, "invalid_request"),
        ({**NEW_AGENT, "password_hash": "x"}, "invalid_request"),
        ({**NEW_AGENT, "name": "tab\there"}, "invalid_request"),
        ([1, 2], "invalid_request"),
    ],
)
async def test_bad_agent_bodies_get_400(client, world, body, code):
    resp = await client.post("/v1/agents", json=body, headers=world.admin())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == code


async def test_body_format_errors(client, world):
    headers = world.admin()
    resp = await client.post(
        "/v1/agents", data=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    resp = await client.post(
        "/v1/agents",
        data=b"email=a",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415
    big = {**NEW_AGENT, "skills": ["x" * 60] * 2000}
    resp = await client.post("/v1/agents", json=big, headers=headers)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"


async def test_patch_agent_changes_only_given_fields_and_rehashes(client, world):
    target = world.site.agent
    path = f"/v1/agents/{target.id}"
    body = {"name": "Robert", "password": "new-password-1", "skills": ["billing"]}
    resp = await client.patch(path, json=body, headers=world.admin())
    assert resp.status == 200, await resp.text()
    agent = await resp.json()
    assert (agent["name"], agent["skills"], agent["capacity"]) == ("Robert", ["billing"], 5)
    resp = await client.post(
        "/v1/auth/login",
        json={"site_id": world.site.site.id, "email": target.email, "password": PASSWORD},
    )
    assert resp.status == 401
    assert await login(client, world.site.site.id, target.email, "new-password-1")


async def test_admin_cannot_demote_itself_and_other_sites_agents_are_not_found(client, world):
    path = f"/v1/agents/{world.site.admin.id}"
    resp = await client.patch(path, json={"roles": ["agent"]}, headers=world.admin())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "cannot_demote_self"
    other = await add_site(app_kernel(client.app))
    for method in ("GET", "PATCH"):
        resp = await client.request(
            method, f"/v1/agents/{other.admin.id}", json={"name": "x"}, headers=world.admin()
        )
        assert resp.status == 404


# -- sites --------------------------------------------------------------------------
async def test_sites_show_only_the_callers_site(client, world):
    other = await add_site(app_kernel(client.app))
    resp = await client.get("/v1/sites", headers=world.admin())
    sites = (await resp.json())["sites"]
    assert [s["id"] for s in sites] == [world.site.site.id]
    assert sites[0]["widget_key"] == world.site.site.widget_key
    assert (await client.get(f"/v1/sites/{other.site.id}", headers=world.admin())).status == 404
    resp = await client.patch(
        f"/v1/sites/{other.site.id}", json={"name": "pwned"}, headers=world.admin()
    )
    assert resp.status == 404
    assert (await client.get("/v1/sites", headers=world.agent())).status == 403


async def test_rotating_the_widget_key_retires_the_old_one(client, world):
    site = world.site.site
    resp = await client.patch(
        f"/v1/sites/{site.id}",
        json={"rotate_widget_key": True, "name": "Shop"},
        headers=world.admin(),
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "Shop" and body["widget_key"] != site.widget_key
    old = await client.post("/v1/visitors/session", json={"widget_key": site.widget_key})
    assert old.status == 401
    new = await client.post("/v1/visitors/session", json={"widget_key": body["widget_key"]})
    assert new.status == 200


async def test_a_new_site_gets_its_own_admin(client, world):
    """Creating sites is install-level (issue 13, hole 1): an owner may, a site's admin not."""
    kernel = app_kernel(client.app)
    owner = await add_owner(kernel, world.site.site.id)
    owner_headers = bearer(await login(client, world.site.site.id, owner.email))
    body = {
        "name": "Second shop",
        "settings": {"greeting": "hi"},
        "admin": {"email": "boss@second.test", "name": "Boss", "password": "boss-password"},
    }
    refused = await client.post("/v1/sites", json=body, headers=world.admin())
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden"
    resp = await client.post("/v1/sites", json=body, headers=owner_headers)
    assert resp.status == 201, await resp.text()
    site = await resp.json()
    assert site["admin"]["roles"] == ["admin", "agent"] and site["settings"] == {"greeting": "hi"}
    token = await login(client, site["id"], "boss@second.test", "boss-password")
    resp = await client.get("/v1/sites", headers=bearer(token))
    assert [s["id"] for s in (await resp.json())["sites"]] == [site["id"]]
    # the creator does not administer the new tenant
    assert (await client.get(f"/v1/sites/{site['id']}", headers=world.admin())).status == 404
    resp = await client.post("/v1/sites", json={"name": "x"}, headers=world.agent())
    assert resp.status == 403
    resp = await client.post(
        "/v1/sites", json={"name": "x", "settings": {"k": "a\u0000b"}}, headers=owner_headers
    )
    assert resp.status == 400
