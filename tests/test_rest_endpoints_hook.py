"""``kefu_rest_endpoints``: a plugin's JSON endpoint is served like the REST API's own (auth,
validation, errors) and listed in ``/v1/openapi.json``; two claims of one path fail start-up."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from kefu.core.errors import ApiError, StartupError
from kefu.core.types import RestEndpoint
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from tests.chat_support import add_site, app_kernel, login, make_kernel


class Shout(BaseModel):
    text: str


async def shout(call):
    if not call.body.text.strip():
        raise ApiError(400, "blank", "say something")
    await call.require("conversation.list", call.site_id)
    return Shout(text=call.body.text.upper())


class Shouter:
    @hookimpl
    def kefu_rest_endpoints(self, kernel):
        return [
            RestEndpoint(
                "POST", "/v1/shout", "shout", "Shout", "examples", shout, response=Shout, body=Shout
            )
        ]


async def test_a_plugin_endpoint_is_served_validated_and_documented(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path, extra_plugins=(("shouter", Shouter()),))
    client = await aiohttp_client(create_app(kernel))
    site = await add_site(app_kernel(client.app))
    auth = {"Authorization": f"Bearer {await login(client, site.site.id, site.agent.email)}"}
    resp = await client.post("/v1/shout", json={"text": "hi"}, headers=auth)
    assert (resp.status, await resp.json()) == (200, {"text": "HI"})
    resp = await client.post("/v1/shout", json={"text": " "}, headers=auth)
    assert (resp.status, (await resp.json())["error"]["code"]) == (400, "blank")
    resp = await client.post("/v1/shout", json={"text": 5}, headers=auth)
    assert (await resp.json())["error"]["code"] == "invalid_request"
    assert (await client.post("/v1/shout", json={"text": "hi"})).status == 401
    document = await (await client.get("/v1/openapi.json")).json()
    operation = document["paths"]["/v1/shout"]["post"]
    assert operation["operationId"] == "shout" and {"400", "401", "403"} <= set(
        operation["responses"]
    )


def test_two_plugins_claiming_one_path_fail_naming_both(tmp_path):
    kernel = make_kernel(tmp_path, extra_plugins=(("one", Shouter()), ("two", Shouter())))
    with pytest.raises(StartupError, match="POST /v1/shout.*'one'.*'two'|'two'.*'one'"):
        create_app(kernel)
