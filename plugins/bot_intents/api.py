"""Admin REST endpoints of the bot's flows: list versions, read one, activate one, roll back.

Admins (``sites.manage``) see only flows that serve their site, and change only flows
that serve nothing but their site: a flow shared with other sites (``sites: ["*"]`` or a
list of several) is install-level, changed only by an owner (``bot.flows.shared``).
File paths and the load errors of flow files are install-level details (``install.read``):
site admins see file names and no load errors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

from kefu.core.errors import ApiError
from kefu.core.types import RestEndpoint

SHA = r"[0-9a-f]{64}"
FLOW_ID = r"[A-Za-z0-9_.-]{1,64}"


class FlowVersionView(BaseModel):
    sha256: str
    active: bool
    created_at: float
    source: str
    states: int
    intents: int
    activated_by: str | None = None  # file, api, rollback: what last activated it
    activated_at: float | None = None
    loaded: bool = True  # compiled in memory (kept versions compile on first use)


class FlowView(BaseModel):
    id: str
    active: str | None
    sites: list[str] = ["*"]
    versions: list[FlowVersionView]


class FlowList(BaseModel):
    flows: list[FlowView]
    rejected: int
    errors: dict[str, str]
    rejections: dict[str, int] = {}  # refusals per file


class FlowSource(BaseModel):
    flow_id: str
    sha256: str
    source: str
    text: str


async def admin_service(call: Any, service_of: Callable[[Any], Any]) -> Any:
    """The running bot service, for an admin of the call's site (403/503 otherwise)."""
    await call.require("sites.manage", call.site_id)
    found = service_of(call.kernel)
    if found is None:
        raise ApiError(503, "unavailable", "the bot is not running")
    return found


def is_shared(sites: Any, site_id: str) -> bool:
    """A flow serving other sites too: changing it is install-level."""
    return not sites or any(s != site_id for s in sites)


async def require_flow_change(call: Any, sites: Any) -> None:
    """403 unless the caller may change a flow serving ``sites`` (see the module docstring)."""
    if is_shared(sites, call.site_id):
        await call.require("bot.flows.shared", call.site_id)


async def sees_install(call: Any) -> bool:
    return await call.kernel.hooks.permits(call.principal, "install.read", None)


def file_name(source: str) -> str:
    """What a site admin sees of a flow's source: the file name, not where it lives."""
    return PurePath(source).name if "/" in source or "\\" in source else source


def make_endpoints(service_of: Callable[[Any], Any]) -> list[RestEndpoint]:
    async def service(call: Any) -> Any:
        return await admin_service(call, service_of)

    def visible(
        svc: Any, site_id: str, flow_id: str | None = None, install: bool = False
    ) -> list[dict]:
        flows = []
        for flow in svc.registry.describe():
            if flow_id is not None and flow["id"] != flow_id:
                continue
            if "*" in flow["sites"] or site_id in flow["sites"]:
                if not install:
                    for version in flow["versions"]:
                        version["source"] = file_name(version["source"])
                flows.append(flow)
        return flows

    async def list_flows(call: Any) -> FlowList:
        svc = await service(call)
        stats = svc.registry.stats
        install = await sees_install(call)
        return FlowList(
            flows=visible(svc, call.site_id, install=install),
            rejected=stats.rejected if install else 0,
            errors=stats.last_error if install else {},
            rejections=stats.rejections if install else {},
        )

    async def one(svc: Any, call: Any) -> FlowView:
        install = await sees_install(call)
        found = visible(svc, call.site_id, call.params["flow_id"], install)
        if not found:
            raise ApiError(404, "not_found", "no such flow for your site")
        return FlowView(**found[0])

    async def activate(call: Any) -> FlowView:
        svc = await service(call)
        await require_flow_change(call, (await one(svc, call)).sites)
        try:
            await svc.activate(call.params["flow_id"], call.params["sha256"])
        except KeyError:
            raise ApiError(404, "not_found", "no such version of this flow") from None
        return await one(svc, call)

    async def rollback(call: Any) -> FlowView:
        svc = await service(call)
        await require_flow_change(call, (await one(svc, call)).sites)
        try:
            await svc.rollback(call.params["flow_id"])
        except KeyError:
            raise ApiError(409, "no_earlier_version", "nothing was active before") from None
        return await one(svc, call)

    async def version_source(call: Any) -> FlowSource:
        svc = await service(call)
        flow = await one(svc, call)
        sha = call.params["sha256"]
        found = next((v for v in flow.versions if v.sha256 == sha), None)
        text = None if found is None else await svc.registry.source_text(sha)
        if text is None:
            raise ApiError(404, "not_found", "no such version of this flow")
        return FlowSource(
            flow_id=flow.id, sha256=sha, source=found.source, text=text.decode("utf-8")
        )

    patterns = {"flow_id": FLOW_ID, "sha256": SHA}
    base = "/v1/bot/flows"
    return [
        RestEndpoint(
            "GET", base, "list_bot_flows", "Bot flows and their versions", "bot", list_flows,
            response=FlowList, errors=(503,),
            description="Every kept version with its sha256; `errors` holds the last refusal "
            "per flow file (a refused file never becomes active).",
        ),
        RestEndpoint(
            "GET", f"{base}/{{flow_id}}/versions/{{sha256}}", "get_bot_flow_version",
            "The YAML source of a kept version", "bot", version_source, response=FlowSource,
            errors=(404, 503), path_patterns=patterns,
            description="`text` is the exact content whose sha256 names the version.",
        ),
        RestEndpoint(
            "POST", f"{base}/{{flow_id}}/versions/{{sha256}}/activate", "activate_bot_flow",
            "Activate a kept version of a flow", "bot", activate, response=FlowView,
            errors=(404, 503), path_patterns=patterns,
            description="New conversations start on it; running ones keep their version.",
        ),
        RestEndpoint(
            "POST", f"{base}/{{flow_id}}/rollback", "rollback_bot_flow",
            "Activate the version active before the current one", "bot", rollback,
            response=FlowView, errors=(404, 409, 503), path_patterns=patterns,
        ),
    ]  # fmt: skip
