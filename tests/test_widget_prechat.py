"""The pre-chat form over HTTP (issue 14): an admin saves the widget settings through
``PATCH /v1/sites/{id}`` (checked there), the widget config serves the form, and the
server checks a visitor's answers (``POST /v1/widget/prechat``) before storing them on the
profile. The browser side is tests/test_web_prechat.py."""

from __future__ import annotations

import orjson
import pytest

from kefu.plugins.web import security
from tests.chat_support import add_site as new_site
from tests.chat_support import app_kernel, login, start_client, visitor_session
from tests.rest_support import bearer

FIELDS = [
    {
        "key": "name",
        "type": "text",
        "label": {"en": "Your name", "zh": "您的称呼"},
        "required": True,
    },
    {"key": "email", "type": "email", "label": {"en": "E-mail"}, "required": True},
    {"key": "phone", "type": "tel", "label": {"en": "Phone"}},
    {
        "key": "topic",
        "type": "select",
        "label": {"en": "Topic", "zh": "主题"},
        "required": True,
        "options": [{"value": "sales", "label": {"en": "Sales", "zh": "销售"}}, {"value": "help"}],
    },
]


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


@pytest.fixture
async def site(client):
    kernel = app_kernel(client.app)
    site = await new_site(kernel)
    site.token = await login(client, site.site.id, site.admin.email)
    return site


async def patch_widget(client, site, widget, **extra):
    return await client.patch(
        f"/v1/sites/{site.site.id}", json={"widget": widget, **extra}, headers=bearer(site.token)
    )


async def test_admin_saves_the_widget_settings_and_the_config_serves_them(client, site):
    kernel = app_kernel(client.app)
    site.site.settings = {"allowed_origins": ["https://shop.test"], "business_hours": {"x": 1}}
    await kernel.storage.update_site(site.site)
    widget = {"title": "Help", "greeting": "Hi!\nAsk us.", "color": "#aa3300"}
    widget["greeting_zh"] = "您好\n请问"
    widget["prechat"] = {"enabled": True, "fields": FIELDS}
    resp = await patch_widget(client, site, widget)
    assert resp.status == 200, await resp.text()
    settings = (await resp.json())["settings"]
    # only the widget changed; the select keeps its options, the others have none
    assert settings["allowed_origins"] == ["https://shop.test"] and settings["business_hours"]
    assert settings["widget"]["prechat"]["fields"][3]["options"][1] == {"value": "help"}
    assert settings["widget"]["prechat"]["fields"][0]["options"] == []
    config = await (await client.get(f"/v1/widget/config?key={site.site.widget_key}")).json()
    assert (config["name"], config["greeting"], config["color"]) == (
        "Help",
        "Hi!\nAsk us.",
        "#aa3300",
    )
    assert config["greeting_zh"] == "您好\n请问"  # the widget in Chinese shows it
    assert config["prechat"]["enabled"] is True
    assert [f["key"] for f in config["prechat"]["fields"]] == ["name", "email", "phone", "topic"]
    assert config["prechat"]["fields"][0]["label"] == {"en": "Your name", "zh": "您的称呼"}
    stored = await kernel.storage.get_site(site.site.id)
    assert stored.settings["widget"]["prechat"]["enabled"] is True
    # off: the config says so and serves no fields
    widget["prechat"]["enabled"] = False
    assert (await patch_widget(client, site, widget)).status == 200
    config = await (await client.get(f"/v1/widget/config?key={site.site.widget_key}")).json()
    assert config["prechat"] == {"enabled": False, "fields": []}


@pytest.mark.parametrize(
    ("widget", "words"),
    [
        ({"color": "red"}, "widget.color"),
        ({"prechat": {"enabled": True, "fields": []}}, "at least one field"),
        ({"prechat": {"fields": [FIELDS[0], FIELDS[0]]}}, "each field key once: name"),
        ({"prechat": {"fields": [{**FIELDS[1], "type": "text"}]}}, "of type 'email'"),
        ({"prechat": {"fields": [{**FIELDS[3], "options": []}]}}, "at least one option"),
        ({"prechat": {"fields": [{"key": "Bad Key", "label": {"en": "x"}}]}}, "key"),
        ({"prechat": {"fields": [{"key": "language", "label": {"en": "x"}}]}}, "set by the widget"),
        ({"prechat": {"fields": [{"key": "plan", "label": {"en": ""}}]}}, "label.en"),
        ({"prechat": {"fields": [{"key": "plan", "type": "date", "label": {"en": "x"}}]}}, "type"),
    ],
)
async def test_a_bad_widget_setting_is_refused_with_where_it_is(client, site, widget, words):
    resp = await patch_widget(client, site, widget)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request" and words in error["message"], error


async def test_settings_replaced_whole_are_checked_too(client, site):
    bad = {"settings": {"widget": {"prechat": {"enabled": True, "fields": []}}}}
    resp = await client.patch(f"/v1/sites/{site.site.id}", json=bad, headers=bearer(site.token))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith("settings.widget")
    good = {"settings": {"widget": {"title": "Shop"}, "other": 1}}
    resp = await client.patch(f"/v1/sites/{site.site.id}", json=good, headers=bearer(site.token))
    assert resp.status == 200
    assert (await resp.json())["settings"] == {"widget": {"title": "Shop"}, "other": 1}


async def test_an_agent_may_not_change_the_widget(client, site):
    token = await login(client, site.site.id, site.agent.email)
    resp = await client.patch(
        f"/v1/sites/{site.site.id}", json={"widget": {"title": "x"}}, headers=bearer(token)
    )
    assert resp.status == 403


async def post_answers(client, token, answers, *, raw=None):
    data = raw if raw is not None else orjson.dumps({"answers": answers})
    # the widget sends text/plain (no CORS preflight)
    return await client.post(
        f"/v1/widget/prechat?token={token}", data=data, headers={"Content-Type": "text/plain"}
    )


async def test_the_answers_are_checked_by_the_server_then_stored_on_the_profile(client, site):
    kernel = app_kernel(client.app)
    visitor = await visitor_session(client, site.site.widget_key)
    assert (await post_answers(client, visitor["token"], {"name": "Li"})).status == 409  # off
    await patch_widget(client, site, {"prechat": {"enabled": True, "fields": FIELDS}})

    resp = await post_answers(
        client, visitor["token"], {"name": "Li Lei", "email": "li@", "phone": "12"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "prechat_invalid"
    assert error["fields"] == {
        "email": "invalid_email",
        "phone": "invalid_phone",
        "topic": "required",
    }
    assert "email: not an e-mail address" in error["message"]
    resp = await post_answers(
        client, visitor["token"], {"name": "Li", "email": "li@shop.cn", "topic": "refunds"}
    )
    assert (await resp.json())["error"]["fields"] == {"topic": "not_an_option"}
    resp = await post_answers(client, visitor["token"], {"name": "  ", "email": "li@shop.cn"})
    assert (await resp.json())["error"]["fields"] == {"name": "required", "topic": "required"}
    stored = await kernel.storage.get_visitor(site.site.id, visitor["visitor_id"])
    assert stored.name is None and stored.email is None  # nothing of a refused form is kept

    answers = {
        "name": " Li Lei ",
        "email": "li@shop.cn",
        "phone": "+86 138 0013 8000",
        "topic": "sales",
        "unknown": "ignored",
    }
    resp = await post_answers(client, visitor["token"], answers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {
        "visitor_id": visitor["visitor_id"],
        "saved": ["name", "email", "phone", "topic"],
    }
    stored = await kernel.storage.get_visitor(site.site.id, visitor["visitor_id"])
    assert (stored.name, stored.email) == ("Li Lei", "li@shop.cn")
    assert stored.attributes["phone"] == "+86 138 0013 8000"
    assert stored.attributes["topic"] == "sales" and "unknown" not in stored.attributes
    # what the agent's visitor panel reads
    resp = await client.get(f"/v1/visitors/{stored.id}", headers=bearer(site.token))
    body = await resp.json()
    assert body["name"] == "Li Lei" and body["attributes"]["topic"] == "sales"


async def test_only_the_visitor_with_a_good_body_answers(client, site):
    await patch_widget(client, site, {"prechat": {"enabled": True, "fields": FIELDS[:1]}})
    visitor = await visitor_session(client, site.site.widget_key)
    assert (await post_answers(client, "nope", {"name": "x"})).status == 401
    assert (await post_answers(client, site.token, {"name": "x"})).status == 403  # an agent
    for raw in (b"{", b"[]", b'{"answers": {"name": 5}}', b'{"answers": []}'):
        resp = await post_answers(client, visitor["token"], None, raw=raw)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_request"
    resp = await post_answers(client, visitor["token"], None, raw=b" " * (17 * 1024))
    assert resp.status == 413
    long = await post_answers(client, visitor["token"], {"name": "x" * 201})
    assert (await long.json())["error"]["fields"] == {"name": "too_long"}


async def test_another_origin_may_read_the_answer_when_the_site_allows_it(client, site):
    await patch_widget(client, site, {"prechat": {"enabled": True, "fields": FIELDS[:1]}})
    visitor = await visitor_session(client, site.site.widget_key)
    resp = await client.post(
        f"/v1/widget/prechat?token={visitor['token']}",
        data=orjson.dumps({"answers": {"name": "Ann"}}),
        headers={"Origin": "https://shop.test", "Content-Type": "text/plain"},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.test"


async def test_the_sites_form_keeps_the_widget_settings(client, site):
    """The Sites form once wrote ``settings.widget`` whole from its title and greeting boxes:
    a colour or pre-chat form saved on Admin > Widget would have been lost at its next save."""
    widget = {"title": "Help", "color": "#aa3300", "prechat": {"enabled": True, "fields": FIELDS}}
    assert (await patch_widget(client, site, widget)).status == 200
    csrf = security.new_csrf(app_kernel(client.app).secret, site.token)
    headers = {"Cookie": f"kefu_session={site.token}; kefu_csrf={csrf}"}
    form = {"csrf": csrf, "name": "Renamed shop", "allowed_origins": "https://shop.test"}
    resp = await client.post("/admin/sites", data=form, headers=headers, allow_redirects=False)
    assert resp.status == 303
    stored = await app_kernel(client.app).storage.get_site(site.site.id)
    assert stored.name == "Renamed shop"
    assert stored.settings["allowed_origins"] == ["https://shop.test"]
    assert stored.settings["widget"]["color"] == "#aa3300"
    assert stored.settings["widget"]["prechat"]["enabled"] is True
    page = await (await client.get("/admin/widget", headers=headers)).text()
    assert 'id="widget-form"' in page and f'data-site="{site.site.id}"' in page


async def test_the_console_reads_the_labels_even_when_the_form_is_off(client, site):
    widget = {"prechat": {"enabled": False, "fields": FIELDS}}
    assert (await patch_widget(client, site, widget)).status == 200
    agent = await login(client, site.site.id, site.agent.email)
    resp = await client.get("/console/prechat.json", headers={"Cookie": f"kefu_session={agent}"})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    fields = (await resp.json())["fields"]
    assert [f["key"] for f in fields] == ["name", "email", "phone", "topic"]
    assert fields[3]["options"][0]["label"] == {"en": "Sales", "zh": "销售"}
    assert (await client.get("/console/prechat.json")).status == 401
