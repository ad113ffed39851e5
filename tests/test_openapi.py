"""The OpenAPI document: complete, valid, and true to the running server (schemathesis)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

import kefu.plugins.rest_api
from kefu.core.kernel import load_kernel
from kefu.core.web_app import create_app
from kefu.plugins.rest_api import (
    AUTH_ENDPOINTS,
    WEB_ENDPOINTS,
    documented_endpoints,
    openapi_document,
)
from tests.chat_support import PASSWORD, add_site, app_kernel, start_client
from tests.rest_support import add_conversation

#: Examples per operation; a larger KEFU_FUZZ_EXAMPLES also randomises the run (deeper search).
DEFAULT_FUZZ_EXAMPLES = 10
FUZZ_EXAMPLES = int(os.environ.get("KEFU_FUZZ_EXAMPLES", DEFAULT_FUZZ_EXAMPLES))
#: pydantic spellings that are not JSON Schema keywords: a schema carrying one constrains nothing.
NOT_JSON_SCHEMA = {"ge", "le", "gt", "lt", "min_length", "max_length", "multiple_of"}


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


async def fetch_document(client) -> dict:
    resp = await client.get("/v1/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_the_document_is_public_and_valid_openapi_3_1(client):
    document = await fetch_document(client)
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises when invalid


#: The default plugins' kernel: its document has every plugin's endpoints (kefu_rest_endpoints).
DEFAULT_KERNEL = load_kernel(None, environ={}, entry_points=False)
ALL_ENDPOINTS = documented_endpoints(DEFAULT_KERNEL)


async def test_every_v1_route_of_the_api_and_auth_plugins_is_documented(client):
    document = await fetch_document(client)
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == {(e.method, e.path) for e in ALL_ENDPOINTS}
    assert ("POST", "/v1/conversations/{id}/transfer") in documented  # a plugin's endpoint
    served = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            served.add((route.method, path))
    # nothing documented is missing from the server (the auth plugin's routes included)
    assert documented <= served, documented - served
    for endpoint in (*AUTH_ENDPOINTS, *WEB_ENDPOINTS):
        assert (endpoint.method, endpoint.path) in served
    assert ("GET", "/v1/widget/config") in documented  # the web plugin's, for the widget


async def test_the_widget_config_is_documented_with_its_parameter_and_answers(client):
    document = await fetch_document(client)
    operation = document["paths"]["/v1/widget/config"]["get"]
    assert operation["security"] == []
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("key", "query", True)
    ]
    assert set(operation["responses"]) == {"200", "404"}  # never 400: a missing key is a 404
    assert "invalid_widget_key" in operation["responses"]["404"]["description"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    # free-form site settings: a non-string title or colour does not break the schema
    site.site.settings = {"widget": {"title": 7, "greeting": "Hi!", "color": ["red"]}}
    await kernel.storage.update_site(site.site)
    resp = await client.get(f"/v1/widget/config?key={site.site.widget_key}")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == set(schema["properties"]) and set(schema["required"]) == set(body)
    assert body["name"] == site.site.name and body["greeting"] == "Hi!" and body["color"] is None
    assert body["protocol"] == 1 and isinstance(body["agents_online"], int)
    for missing in ("/v1/widget/config", "/v1/widget/config?key=nope"):
        resp = await client.get(missing)
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "invalid_widget_key"


async def test_creating_answers_201_like_every_creation(client):
    document = await fetch_document(client)
    for path in ("/v1/sites", "/v1/agents"):
        responses = document["paths"][path]["post"]["responses"]
        assert "201" in responses and "200" not in responses, path


async def test_operations_declare_auth_errors_and_schemas(client):
    document = await fetch_document(client)
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(document).replace("'", '"'))
    assert refs and all(ref in schemas for ref in refs)
    for endpoint in ALL_ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), endpoint.operation_id
        if endpoint.auth:
            assert {"bearer": []} in operation["security"]
            assert {"401", "403"} <= set(responses)
        else:
            assert operation["security"] == []
        for code, response in responses.items():
            if code >= "400":
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse")
    assert not NOT_JSON_SCHEMA & set(schema_keywords(schemas)), "a pydantic constraint leaked"
    assert "password_hash" not in str(schemas["AgentOut"])
    assert set(schemas["AgentCreate"]["required"]) == {"email", "name", "password"}
    assert schemas["AgentCreate"]["additionalProperties"] is False


def schema_keywords(node) -> list[str]:
    """Every key of every schema object below ``node`` (property names excluded)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append(key)
            children = value.values() if key in ("properties", "$defs") else [value]
            for child in children:
                found += schema_keywords(child)
    elif isinstance(node, list):
        for child in node:
            found += schema_keywords(child)
    return found


async def test_query_parameters_come_from_the_models(client):
    document = await fetch_document(client)
    parameters = {p["name"]: p for p in document["paths"]["/v1/conversations"]["get"]["parameters"]}
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 50,
    }
    assert parameters["state"]["schema"]["enum"] == ["bot", "queued", "assigned", "resolved"]
    assert all(not p["required"] for p in parameters.values())


# -- schemathesis against the running server, over a real socket ----------------------
class ServerThread:
    """A kefu server on its own event loop in a thread, so sync clients can call it."""

    def __init__(self, tmp_path, backend: str) -> None:
        self.tmp_path = tmp_path
        self.backend = backend
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self):
        self.thread.start()
        return self.run(self._start())

    async def _start(self):
        config = self.tmp_path / "kefu.toml"
        config.write_text(
            f'[server]\ndata_dir = "{self.tmp_path / "data"}"\nreload = false\n'
            f'[storage]\nbackend = "{self.backend}"\n[auth]\npassword_cost = 10\n',
            encoding="utf-8",
        )
        kernel = load_kernel(config, environ={}, entry_points=False)
        self.runner = web.AppRunner(create_app(kernel))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        site = await add_site(kernel, "fuzz")
        other = await add_site(kernel, "elsewhere")
        await add_conversation(kernel, site.site.id, "v1", messages=3)
        await add_conversation(kernel, other.site.id, "v2", messages=3)
        return site

    def stop(self) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module", params=["memory", "sql"])
def live_server(request, tmp_path_factory):
    """The server on the in-memory backend and on the embedded default (SQLite)."""
    server = ServerThread(tmp_path_factory.mktemp("schemathesis"), request.param)
    site = server.start()
    login = {"site_id": site.site.id, "email": site.admin.email, "password": PASSWORD}
    resp = requests.post(f"{server.base_url}/v1/auth/login", json=login, timeout=10)
    resp.raise_for_status()
    server.token = resp.json()["token"]
    yield server
    server.stop()


# The document is static: load it in-process so the tests are generated at collection;
# test_the_served_document_is_the_generated_one ties it to what the server serves.
schema = schemathesis.openapi.from_dict(json.loads(openapi_document(DEFAULT_KERNEL)))


def test_the_served_document_is_the_generated_one(live_server):
    served = requests.get(f"{live_server.base_url}/v1/openapi.json", timeout=10)
    assert served.json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=FUZZ_EXAMPLES == DEFAULT_FUZZ_EXAMPLES,
)
def test_the_running_api_conforms_to_its_document(case, live_server):
    excluded = []
    if case.operation.path == "/v1/uploads":
        # random bytes fit `format: binary` but are refused (415) by content sniffing,
        # a rule a schema cannot express; tests/test_uploads.py covers accepted files
        excluded.append(positive_data_acceptance)
    if case.operation.path == "/v1/business_hours" and case.method == "PUT":
        # a window's start must come before its end and the time zone must exist: rules a
        # schema cannot express; tests/test_routing_live.py covers valid and invalid hours
        excluded.append(positive_data_acceptance)
    if case.operation.path == "/v1/sites/{id}" and case.method == "PATCH":
        # a pre-chat form's keys are unique, a select has options, `email` is of type email:
        # rules a schema cannot express; tests/test_widget_prechat.py covers them
        excluded.append(positive_data_acceptance)
    if case.operation.path.startswith("/v1/reports"):
        # since must not come after until, a range is at most 366 days and tz must name a
        # zone that exists: rules a schema cannot express; tests/test_reports.py covers them
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        base_url=live_server.base_url,
        excluded_checks=excluded,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=10,
    )


# -- docs/api.md ---------------------------------------------------------------------
API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
REST_API_SOURCE = Path(kefu.plugins.rest_api.__file__).parent
#: Plugins that contribute endpoints through kefu_rest_endpoints: their codes are documented too.
ENDPOINT_SOURCES = [
    REST_API_SOURCE,
    *(
        REST_API_SOURCE.parent / p
        for p in (
            "routing",
            "agent_tools",
            "webhooks",
            "email_notify",
            "agent_bot",
            "visitor_identity",
            "reports",
        )
    ),
]


def test_api_md_has_a_heading_for_every_endpoint():
    headings = [line for line in API_MD.read_text().splitlines() if line.startswith("#")]
    missing = [
        f"{e.method} {e.path}"
        for e in ALL_ENDPOINTS
        if not any(f"`{e.method} {e.path}`" in h for h in headings)
    ]
    assert not missing, f"docs/api.md has no heading for {missing}"


def test_api_md_lists_every_error_code_the_api_returns():
    text = API_MD.read_text()
    codes = set()
    for source in (path for folder in ENDPOINT_SOURCES for path in folder.glob("*.py")):
        codes |= set(re.findall(r'ApiError\(\s*\d+,\s*"(\w+)"', source.read_text()))
    assert len(codes) >= 8
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert not missing, f"docs/api.md does not document error codes {missing}"
