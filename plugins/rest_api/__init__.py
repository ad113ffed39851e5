"""The REST API (``/v1/...``): conversations, messages, visitors, agents, sites, uploads.

JSON over HTTP with bearer-token auth (tokens come from the auth plugin's
``POST /v1/auth/login`` and ``POST /v1/visitors/session``). Every query is
made inside the caller's site. ``GET /v1/openapi.json`` describes every
endpoint, generated from the same table and models that serve them, plus
the endpoints other plugins contribute through ``kefu_rest_endpoints``
(served and documented the same way).
Settings: ``[uploads]`` (see :class:`~kefu.plugins.rest_api.uploads.UploadSettings`).
"""

from __future__ import annotations

import functools
import weakref

import orjson
from aiohttp import web

from kefu.core import __version__
from kefu.core.kernel import Kernel
from kefu.core.types import DegradableFeature
from kefu.hooks import hookimpl
from kefu.plugins.rest_api.attachments import PROCESSOR
from kefu.plugins.rest_api.conversations import SHED_PAGE, history_pages
from kefu.plugins.rest_api.endpoint import Call, Endpoint, contributed, to_route
from kefu.plugins.rest_api.openapi import build_document
from kefu.plugins.rest_api.routes import AUTH_ENDPOINTS, REST_ENDPOINTS, WEB_ENDPOINTS
from kefu.plugins.rest_api.upload_store import open_store
from kefu.plugins.rest_api.uploads import UploadSettings

#: The document of each kernel, built once (the endpoint table is fixed at start-up).
_DOCUMENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def plugin_endpoints(kernel: Kernel | None) -> tuple[Endpoint, ...]:
    """The endpoints other plugins contribute through ``kefu_rest_endpoints``."""
    if kernel is None:
        return ()
    return tuple(contributed(e) for e in kernel.hooks.rest_endpoints())


def documented_endpoints(kernel: Kernel | None = None) -> tuple[Endpoint, ...]:
    """Every endpoint of the document: this plugin's, the auth plugin's, other plugins'."""
    return (*ALL_ENDPOINTS, *plugin_endpoints(kernel))


def openapi_document(kernel: Kernel | None = None) -> bytes:
    """The OpenAPI document; with a kernel, other plugins' endpoints are in it too."""
    if kernel is None:
        return _builtin_document()
    document = _DOCUMENTS.get(kernel)
    if document is None:
        endpoints = documented_endpoints(kernel)
        document = _DOCUMENTS[kernel] = orjson.dumps(build_document(endpoints, version=__version__))
    return document


@functools.cache
def _builtin_document() -> bytes:
    return orjson.dumps(build_document(ALL_ENDPOINTS, version=__version__))


async def serve_openapi(call: Call) -> web.Response:
    return web.Response(body=openapi_document(call.kernel), content_type="application/json")


OPENAPI_ENDPOINT = Endpoint(
    "GET",
    "/v1/openapi.json",
    "get_openapi",
    "This document",
    "meta",
    serve_openapi,
    auth=False,
    openapi={
        "responses": {
            "200": {
                "description": "The OpenAPI 3.1 document.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        }
    },
)
SERVED_ENDPOINTS = (*REST_ENDPOINTS, OPENAPI_ENDPOINT)
#: Described here, served by other plugins (auth, web); then this plugin's own.
ALL_ENDPOINTS = (*AUTH_ENDPOINTS, *WEB_ENDPOINTS, *SERVED_ENDPOINTS)


@hookimpl
def kefu_config_schema():
    return {"uploads": UploadSettings}


@hookimpl
def kefu_startup(kernel):
    open_store(kernel)  # [uploads] store and dir are read once, here


@hookimpl
def kefu_routes(kernel):
    served = (*SERVED_ENDPOINTS, *plugin_endpoints(kernel))
    return [to_route(endpoint) for endpoint in served]


#: Actions of contacts.py any agent of the site may do (``contact.delete`` is left to the
#: auth plugin: admins only).
AGENT_CONTACT_ACTIONS = frozenset(
    {"contact.list", "contact.update", "contact.export", "contact.merge"}
)


@hookimpl(tryfirst=True)
def kefu_auth_permits(kernel, principal, action, resource):
    """``upload.create``, the action this plugin introduces: any agent or visitor of the site
    may attach files to a chat. Other actions are left to the auth plugin."""
    if principal is None:
        return None
    if action in AGENT_CONTACT_ACTIONS:  # contacts.py: agents of the site (erasure: admins)
        site = resource if isinstance(resource, str) else getattr(resource, "site_id", None)
        return principal.kind == "agent" and site == principal.site_id
    if action != "upload.create":
        return None
    return isinstance(resource, str) and resource == principal.site_id


@hookimpl
def kefu_degradation_features(kernel):
    pages = history_pages(kernel)

    def set_enabled(enabled: bool) -> None:
        pages.shed = not enabled

    return [
        DegradableFeature(
            "history_pages",
            60,
            set_enabled,
            1,
            f"message history pages of {SHED_PAGE} at most (the page says its limit)",
        )
    ]


@hookimpl
def kefu_pipeline_processors(kernel):
    return [PROCESSOR]
