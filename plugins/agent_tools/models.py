"""Request and response models of the agent tools' REST endpoints and frames.

Frames are validated with the same models as request bodies (:func:`parse`), so
both refuse the same input with the same message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from kefu.core.errors import ApiError
from kefu.plugins.agent_tools.canned import SHORTCUT_PATTERN

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
#: One line of printable text (no control characters), not blank.
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
#: Free text: no control characters but tab and line breaks.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=TEXT_PATTERN)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=LINE_PATTERN)]
Tags = Annotated[list[Tag], Field(max_length=20)]
Shortcut = Annotated[str, StringConstraints(pattern=SHORTCUT_PATTERN)]
Line = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LINE_PATTERN)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes ``4.0``; strict validation would refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse(model: type[BaseModel], frame: dict[str, Any]) -> Any:
    """A frame's fields (all but ``op`` and ``ref``) as ``model``; refusals name the field."""
    fields = {k: v for k, v in frame.items() if k not in ("op", "ref")}
    try:
        return model.model_validate(fields, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or None
        code = "missing_field" if error["type"] == "missing" else "invalid_field"
        raise ApiError(400, code, f"{field}: {error['msg']}", field=field) from None


# -- bodies (and frames) ------------------------------------------------------------------
class NoteBody(Request):
    text: Text


class NoteFrame(NoteBody):
    conversation_id: Id


class TagsBody(Request):
    add: Tags = Field(default_factory=list, description="Added (lower-cased) if missing.")
    remove: Tags = Field(default_factory=list, description="Removed if present.")


class TagsFrame(TagsBody):
    conversation_id: Id


class RatingBody(Request):
    score: Annotated[int, BeforeValidator(_whole_number)] = Field(
        ge=1, le=5, description="1 (bad) to 5 (good)."
    )
    comment: Annotated[str, StringConstraints(max_length=2000, pattern=TEXT_PATTERN)] | None = None


class RatingFrame(RatingBody):
    conversation_id: Id


class CannedCreate(Request):
    shortcut: Shortcut = Field(description="Typed as `/shortcut`; lower case, digits, - and _.")
    text: Text = Field(description="May hold `{visitor.name}`, `{agent.name}`, `{site.name}`.")
    scope: Literal["agent", "site"] = Field(
        "agent", description="`site` replies are shared and managed by admins."
    )


class CannedPatch(Request):
    shortcut: Shortcut | None = None
    text: Text | None = None


class OfflineBody(Request):
    email: Email
    text: Text
    name: Line | None = None
    department: Line | None = Field(None, description="The department the message is for.")
    cid: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Client id: sending the form again with it stores it once."
    )


class OfflineQuery(BaseModel):
    limit: int = Field(50, ge=1, le=100, description="Page size.")


class WelcomeBody(Request):
    text: Annotated[str, StringConstraints(max_length=4000, pattern=TEXT_PATTERN)] | None = Field(
        description='The site\'s own message ("" for none), or null for the configured one.'
    )
    text_zh: Annotated[str, StringConstraints(max_length=4000, pattern=TEXT_PATTERN)] | None = (
        Field(
            None,
            description="The site's message for visitors whose widget is in Chinese (their "
            '`language` attribute); null or "": `text` for them too.',
        )
    )


# -- responses ----------------------------------------------------------------------------
class NoteOut(BaseModel):
    id: str
    agent_id: str
    text: str
    source: str = Field(description="`agent`, or `transfer` for a transfer's note.")
    created_at: float


class NoteList(BaseModel):
    notes: list[NoteOut] = Field(description="Oldest first.")


class TagList(BaseModel):
    tags: list[str]


class RatingOut(BaseModel):
    score: int
    scale: int
    comment: str | None
    rated_at: float


class CannedOut(BaseModel):
    id: str
    shortcut: str
    text: str
    scope: str
    agent_id: str | None
    created_at: float
    updated_at: float


class CannedList(BaseModel):
    replies: list[CannedOut] = Field(description="The site's, then your own.")


class OfflineOut(BaseModel):
    conversation_id: str
    seq: int
    created: bool = Field(description="A new conversation was started for it.")


class OfflineMessage(BaseModel):
    conversation_id: str
    visitor_id: str
    state: str
    assignee_id: str | None
    department: str | None
    name: str | None
    email: str | None
    text: str | None
    seq: int | None
    at: float | None


class OfflineList(BaseModel):
    messages: list[OfflineMessage] = Field(description="Newest first.")


class WelcomeOut(BaseModel):
    text: str
    text_zh: str = Field("", description='What a Chinese visitor gets ("": `text`).')
    source: Literal["site", "config"]
