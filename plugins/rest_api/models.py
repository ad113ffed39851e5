"""Request and response models of the REST API.

They validate what comes in and shape what goes out, and the OpenAPI
document is generated from them, so the description cannot drift from
the behaviour. Request models forbid unknown fields; response models read
the domain records of :mod:`kefu.core.domain` directly (``from_attributes``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from kefu.core.domain import CONVERSATION_STATES
from kefu.core.jsonlimits import MAX_DEPTH, too_deep

#: Ids in paths and filters: what :func:`kefu.core.domain.new_id` makes, plus short slugs.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
#: Printable text: no C0/C1 control characters (they break logs, UIs and some databases).
#: Patterns spell their classes out: ``\s`` differs between Python and JSON Schema (ECMA).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: Printable text with at least one character that is not a space.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"
MAX_SEQ = 2**31 - 1
MAX_JSON_OBJECT_BYTES = 16 * 1024

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAME_PATTERN)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
#: ``owner`` is install-level (creates sites, changes shared bot flows); only owners grant it.
Role = Literal["agent", "supervisor", "admin", "owner"]
Skill = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
State = Literal[CONVERSATION_STATES]  # type: ignore[valid-type]


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form settings: bounded size and no NUL characters (databases refuse them)."""
    if too_deep(value):  # orjson cannot even encode past 254 levels
        raise ValueError(f"nests deeper than {MAX_DEPTH} levels")
    encoded = orjson.dumps(value)
    if len(encoded) > MAX_JSON_OBJECT_BYTES:
        raise ValueError(f"at most {MAX_JSON_OBJECT_BYTES} bytes once encoded")
    if b"\\u0000" in encoded:
        raise ValueError("must not contain NUL characters")
    return value


#: JSON Schema of a JSON value without NUL characters (recursive, so it lives in components).
NUL_FREE = {"pattern": "^[^\\x00]*$"}
JSON_VALUE_SCHEMA = {
    "description": "Any JSON value whose strings and keys hold no NUL character.",
    "anyOf": [
        {"type": "string", **NUL_FREE},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {
            "type": "object",
            "propertyNames": NUL_FREE,
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
    ],
}
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_json_object),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": NUL_FREE,
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
            "description": f"Free-form JSON object, at most {MAX_JSON_OBJECT_BYTES} bytes encoded.",
        }
    ),
]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes ``6.0``; strict validation would refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Concurrent conversations an agent takes; an integer in a strictly validated JSON body
#: (``true`` is not one, ``6.0`` is).
Capacity = Annotated[
    int,
    Field(ge=0, le=100, description="Concurrent conversations."),
    BeforeValidator(_whole_number),
]


class Request(BaseModel):
    """Base of request bodies: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class Record(BaseModel):
    """Base of responses built from domain records."""

    model_config = ConfigDict(from_attributes=True)


# -- errors -------------------------------------------------------------------
class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable code, e.g. `not_found`.")
    message: str = Field(description="Human-readable explanation.")
    field: str | None = Field(
        None, description="The field at fault (`invalid_request`, `invalid_query`, ...)."
    )
    problem: str | None = Field(
        None, description="What is wrong with it: the validator's type, e.g. `string_too_long`."
    )
    limit: float | None = Field(None, description="The bound it broke, e.g. the most characters.")


class ErrorResponse(BaseModel):
    """The one error shape of every HTTP API."""

    error: ErrorBody


# -- queries ------------------------------------------------------------------
class ConversationQuery(BaseModel):
    state: State | None = Field(None, description="Only conversations in this state.")
    assignee: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = Field(
        None, description="Only conversations assigned to this agent id (`me`: the caller)."
    )
    limit: int = Field(50, ge=1, le=100, description="Page size.")
    before: float | None = Field(
        None,
        ge=0,
        le=1e11,
        allow_inf_nan=False,
        description="Only conversations updated before this UNIX time (the previous "
        "page's `next_before`).",
    )


class MessageQuery(BaseModel):
    after_seq: int | None = Field(
        None, ge=0, le=MAX_SEQ, description="Messages with a greater `seq`, oldest first."
    )
    before_seq: int | None = Field(
        None, ge=1, le=MAX_SEQ, description="The page of messages just before this `seq`."
    )
    limit: int = Field(50, ge=1, le=200, description="Page size.")


# -- records ------------------------------------------------------------------
class SiteOut(Record):
    id: str
    name: str
    widget_key: str = Field(description="Public key the chat widget uses to open a session.")
    created_at: float
    settings: dict[str, Any]


class AgentOut(Record):
    id: str
    site_id: str
    email: str
    name: str
    roles: list[str]
    capacity: int
    skills: list[str]
    status: str
    created_at: float
    disabled: bool = Field(False, description="Cannot sign in (`POST /v1/agents/{id}/disable`).")


class VisitorOut(Record):
    id: str
    site_id: str
    name: str | None
    email: str | None
    referrer: str | None
    user_agent: str | None
    page: str | None
    attributes: dict[str, Any]
    created_at: float
    last_seen_at: float


class ConversationOut(Record):
    id: str
    site_id: str
    visitor_id: str
    state: str
    assignee_id: str | None
    department: str | None
    priority: int
    last_seq: int
    tags: list[str]
    meta: dict[str, Any]
    created_at: float
    updated_at: float
    resolved_at: float | None
    read_seq: int | None = Field(
        None, description="Agents: the caller's read mark (0: never read); null for visitors."
    )
    unread: int | None = Field(
        None,
        description="Agents: messages after `read_seq` in a conversation assigned to the "
        "caller and not resolved, else 0; null for visitors.",
    )


class MessageOut(Record):
    site_id: str
    conversation_id: str
    seq: int
    cid: str
    sender_kind: str
    sender_id: str
    type: str
    text: str
    attachment: dict[str, Any] | None
    meta: dict[str, Any]
    created_at: float


class ConversationPage(BaseModel):
    conversations: list[ConversationOut]
    next_before: float | None = Field(
        description="Pass as `before` for the next (older) page; null on the last page."
    )


class MessagePage(BaseModel):
    messages: list[MessageOut] = Field(description="Oldest first.")
    has_more: bool = Field(
        description="More messages exist in the paging direction (older for `before_seq` "
        "and the default latest page, newer for `after_seq`)."
    )
    limit: int = Field(
        description="The page size served: the `limit` asked, or at most 20 while the "
        "server is under pressure (degradation level 1: smaller history pages; "
        "`has_more` says whether to ask for the next)."
    )


class AgentList(BaseModel):
    agents: list[AgentOut]


class SiteList(BaseModel):
    sites: list[SiteOut]


class UploadOut(BaseModel):
    id: str = Field(description="The stored file; a message attachment may give it or the url.")
    url: str = Field(description="Where the file is served (needs a token of the same site).")
    name: str = Field(description="The sanitised original file name.")
    size: int = Field(description="Bytes.")
    mime: str = Field(description="The type found by inspecting the content.")


# -- admin bodies ---------------------------------------------------------------
class AgentCreate(Request):
    email: Email
    name: Name
    password: Password
    roles: list[Role] = Field(default_factory=lambda: ["agent"], min_length=1, max_length=4)
    capacity: Capacity = 5
    skills: list[Skill] = Field(default_factory=list, max_length=50)


class AgentPatch(Request):
    name: Name | None = None
    password: Password | None = None
    roles: list[Role] | None = Field(None, min_length=1, max_length=4)
    capacity: Capacity | None = None
    skills: list[Skill] | None = Field(None, max_length=50)


class SiteAdmin(Request):
    email: Email
    name: Name
    password: Password


class SiteCreate(Request):
    name: Name
    settings: JsonObject = Field(default_factory=dict)
    admin: SiteAdmin | None = Field(
        None, description="The new site's first admin agent (it can then log in to it)."
    )


class SiteCreated(SiteOut):
    admin: AgentOut | None = None


# -- auth endpoints (served by the auth plugin, described here) -------------------
AuthField = Annotated[str, StringConstraints(max_length=2048)]


class LoginRequest(BaseModel):
    site_id: AuthField
    email: AuthField = Field(description="Compared case-insensitively.")
    password: AuthField


class AgentSummary(BaseModel):
    id: str
    site_id: str
    email: str
    name: str
    roles: list[str]


class LoginResponse(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    expires_at: float
    agent: AgentSummary


class VisitorSessionRequest(BaseModel):
    widget_key: AuthField
    token: AuthField | None = Field(
        None, description="A previous visitor token of the same site, to keep the identity."
    )
    name: AuthField | None = None
    email: Annotated[str, StringConstraints(max_length=2048, pattern="@")] | None = None
    user_id: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ]
        | None
    ) = Field(
        None,
        description="Who the visitor is on the company's site (no control characters): "
        "verified with `user_hash`, the visitor continues as that user's contact.",
    )
    user_hash: AuthField | None = Field(
        None,
        description="`hex(HMAC-SHA256(identity secret, user_id))`, computed by the company's "
        "backend (docs/security.md, signed visitor identity). Refusals: `identity_unsigned`, "
        "`identity_invalid`, `identity_not_configured` (401).",
    )
    referrer: AuthField | None = None
    page: AuthField | None = None
    user_agent: AuthField | None = Field(None, description="Defaults to the `User-Agent` header.")
    attributes: dict[str, Any] | None = Field(
        None, description="Merged into the visitor's; 8 KiB at most."
    )


class SessionIdentity(BaseModel):
    user_id: str
    verified: bool = Field(description="False: an unverified claim the site accepts.")


class VisitorSessionResponse(BaseModel):
    token: str
    expires_at: float
    visitor_id: str
    site_id: str
    identity: SessionIdentity | None = Field(
        None, description="The identity claimed with `user_id`, as checked; null without one."
    )
