"""The endpoint table of ``/v1``: served by :func:`to_route`, described by the OpenAPI document."""

from __future__ import annotations

from kefu.plugins.rest_api import (
    admin,
    contacts,
    conversations,
    merge,
    reads,
    search,
    uploads,
    widget,
)
from kefu.plugins.rest_api import models as m
from kefu.plugins.rest_api.endpoint import Endpoint

VISITOR_ID_PATTERN = r"^(?!session$)[A-Za-z0-9_-]{1,64}$"
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
_FILE_BODY = {
    mime: {"schema": {"type": "string", "format": "binary"}} for mime in uploads.EXTENSIONS
}
_FILE_HEADERS = {
    "Content-Disposition": {
        "schema": {"type": "string"},
        "description": "`inline` for images, PDFs and text, `attachment` otherwise.",
    },
    "X-Content-Type-Options": {"schema": {"type": "string", "const": "nosniff"}},
    "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
    "ETag": {"schema": {"type": "string"}, "description": "The upload's id (written once)."},
}
UPLOAD_FILE = {
    "parameters": [
        {
            "name": "Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "example": "bytes=0-1023"},
            "description": "Byte ranges: `bytes=a-b`, `bytes=a-` or `bytes=-n`, or up to 16 "
            "of them comma-separated (a multipart/byteranges answer). More ranges, or an "
            "`If-Range` other than the `ETag`, get the whole file (200).",
        }
    ],
    "responses": {
        "200": {
            "description": "The file, with its sniffed type.",
            "headers": _FILE_HEADERS,
            "content": _FILE_BODY,
        },
        "206": {
            "description": "The byte range asked for; several that do not coalesce into one "
            "as `multipart/byteranges` (a part per range, each with its Content-Range).",
            "headers": {
                **_FILE_HEADERS,
                "Content-Range": {"schema": {"type": "string", "example": "bytes 0-1023/52100"}},
            },
            "content": _FILE_BODY,
        },
    },
}

AUTH_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/auth/login",
        "login",
        "Log an agent in",
        "auth",
        None,
        response=m.LoginResponse,
        body=m.LoginRequest,
        errors=(401, 429),
        auth=False,
        description="Exchange an agent's e-mail and password for a bearer token "
        "(served by the auth plugin).",
    ),
    Endpoint(
        "POST",
        "/v1/visitors/session",
        "create_visitor_session",
        "Open a visitor session",
        "auth",
        None,
        response=m.VisitorSessionResponse,
        body=m.VisitorSessionRequest,
        errors=(401,),
        auth=False,
        description="The chat widget exchanges its site's widget key (and a previous visitor "
        "token, to keep the identity) for a signed visitor token (served by the auth plugin).",
    ),
)

#: Routes of the ``web`` plugin a client of the API needs, described here.
WIDGET_CONFIG = {
    # the web plugin answers a missing or unknown key alike (404), never 400
    "parameters": [
        {
            "name": "key",
            "in": "query",
            "required": True,
            "schema": {"type": "string"},
            "description": "The site's widget key (the one `/v1/visitors/session` takes).",
        }
    ],
    "responses": {
        "404": {
            "description": "No site has this widget key (`invalid_widget_key`).",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
    },
}
WEB_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/widget/config",
        "get_widget_config",
        "The chat widget's settings",
        "widget",
        None,
        response=widget.WidgetConfig,
        errors=(404,),
        auth=False,
        description="What the widget shows before a visitor session is opened: the site's "
        "title, greeting and colour, and whether a chat can be answered now (business hours, "
        "agents online, a bot). Never cached (`Cache-Control: no-store`); cross-origin reads "
        "are allowed for the origins the site allows (served by the web plugin).",
        openapi=WIDGET_CONFIG,
    ),
    Endpoint(
        "POST",
        "/v1/widget/prechat",
        "answer_prechat",
        "A visitor's pre-chat answers",
        "widget",
        None,
        response=widget.PrechatSaved,
        body=widget.PrechatAnswers,
        errors=(409,),
        description="The widget sends the answers of the site's pre-chat form with the "
        "visitor's token (`?token=`; the body may be sent as `text/plain`). Each is checked "
        "against its field (required, an e-mail, a phone number, one of the options): "
        "`400 prechat_invalid` names every field in error in `error.fields` (key -> "
        "`required`, `invalid_email`, `invalid_phone`, `not_an_option`, `too_long`). "
        "`name` and `email` fill the visitor's own, the others their attributes (`phone`, "
        "custom keys), as `kefu.identify()` does; `409 prechat_off` when the site has no "
        "enabled form (served by the web plugin).",
    ),
)

REST_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/conversations",
        "list_conversations",
        "List conversations",
        "conversations",
        conversations.list_conversations,
        response=m.ConversationPage,
        query=m.ConversationQuery,
        description="Newest activity first. Visitors only see their own conversations.",
    ),
    Endpoint(
        "GET",
        "/v1/conversations/{id}",
        "get_conversation",
        "Get a conversation",
        "conversations",
        conversations.get_conversation,
        response=m.ConversationOut,
    ),
    Endpoint(
        "GET",
        "/v1/conversations/{id}/messages",
        "list_messages",
        "Page through a conversation's messages",
        "conversations",
        conversations.list_messages,
        response=m.MessagePage,
        query=m.MessageQuery,
        description="Without `after_seq` or `before_seq`: the latest page. With `before_seq`: "
        "the page just before it (scrolling back). With `after_seq`: what came after it "
        "(catching up). Messages are always oldest first.",
    ),
    Endpoint(
        "GET",
        "/v1/visitors/{id}",
        "get_visitor",
        "Get a visitor",
        "visitors",
        conversations.get_visitor,
        response=m.VisitorOut,
        # POST /v1/visitors/session (auth plugin) is a sibling: "session" is never an id.
        path_patterns={"id": VISITOR_ID_PATTERN},
        route_path="/v1/visitors/{id:(?!session$)[^{}/]+}",
    ),
    Endpoint(
        "GET",
        "/v1/agents",
        "list_agents",
        "List the site's agents",
        "agents",
        admin.list_agents,
        response=m.AgentList,
    ),
    Endpoint(
        "POST",
        "/v1/agents",
        "create_agent",
        "Create an agent",
        "agents",
        admin.create_agent,
        response=m.AgentOut,
        status=201,
        body=m.AgentCreate,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/v1/agents/{id}",
        "get_agent",
        "Get an agent",
        "agents",
        admin.get_agent,
        response=m.AgentOut,
        description="Admins read any agent of their site; an agent reads itself.",
    ),
    Endpoint(
        "PATCH",
        "/v1/agents/{id}",
        "update_agent",
        "Update an agent",
        "agents",
        admin.patch_agent,
        response=m.AgentOut,
        body=m.AgentPatch,
        description="Only the fields given change. A new `password` is hashed.",
    ),
    Endpoint(
        "GET",
        "/v1/sites",
        "list_sites",
        "List sites",
        "sites",
        admin.list_sites,
        response=m.SiteList,
        description="The caller's own site: no request crosses sites.",
    ),
    Endpoint(
        "POST",
        "/v1/sites",
        "create_site",
        "Create a site",
        "sites",
        admin.create_site,
        response=m.SiteCreated,
        status=201,
        body=m.SiteCreate,
        errors=(409,),
        description="A new tenant with its own widget key, optionally with its first admin.",
    ),
    Endpoint(
        "GET",
        "/v1/sites/{id}",
        "get_site",
        "Get a site",
        "sites",
        admin.get_site,
        response=m.SiteOut,
    ),
    Endpoint(
        "PATCH",
        "/v1/sites/{id}",
        "update_site",
        "Update a site",
        "sites",
        admin.patch_site,
        response=m.SiteOut,
        body=widget.SitePatch,
    ),
    Endpoint(
        "POST",
        "/v1/uploads",
        "create_upload",
        "Upload a file",
        "uploads",
        uploads.create_upload,
        response=m.UploadOut,
        status=201,
        errors=(400, 413, 415),
        description="A `file` part of a multipart body. Its type is found from its content "
        "and must be in the `[uploads] allowed_types` list; its size is limited by "
        "`[uploads] max_bytes`.",
        openapi=UPLOAD_BODY,
    ),
    Endpoint(
        "GET",
        "/v1/uploads/{site}/{name}",
        "get_upload",
        "Download an uploaded file",
        "uploads",
        uploads.get_upload,
        path_patterns={"name": uploads.STORED_NAME_PATTERN},
        errors=(416,),
        description="Only for callers of the same site; a token can be given as `?token=` "
        "where a header cannot be set (an `<img>` tag).",
        openapi=UPLOAD_FILE,
    ),
    Endpoint(
        "DELETE",
        "/v1/uploads/{site}/{name}",
        "delete_upload",
        "Delete an uploaded file",
        "uploads",
        uploads.delete_upload,
        status=204,
        path_patterns={"name": uploads.STORED_NAME_PATTERN},
        description="Admins of the site (action `upload.delete`). The bytes are deleted from "
        "the store for good; a message that carried the file keeps its attachment, which "
        "then answers 404.",
    ),
    # search, filters, saved views (issue 14): plugins/rest_api/search.py
    *search.ENDPOINTS,
    # contacts and data rights, message delete (issue 14): plugins/rest_api/contacts.py
    *contacts.ENDPOINTS,
    *merge.ENDPOINTS,
    # agents' read marks, the lists' unread counts (issue 14): plugins/rest_api/reads.py
    *reads.ENDPOINTS,
)
