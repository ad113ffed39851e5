"""The chat widget's models: a site's ``settings.widget`` as the REST API validates it, the
site patch that carries it, and the widget's config and pre-chat answers (served by the
``web`` plugin, described here).

``PATCH /v1/sites/{id}`` takes the settings as ``widget`` (or inside ``settings``) and *Admin
-> Widget* saves through it; the ``web`` plugin serves them to the widget
(``GET /v1/widget/config``) and checks a visitor's pre-chat answers against the fields
(``POST /v1/widget/prechat``). docs/ui.md, "The pre-chat form".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationError, model_validator

from kefu.core.errors import ApiError
from kefu.plugins.rest_api.endpoint import validation_details
from kefu.plugins.rest_api.models import NAME_PATTERN, JsonObject, Name, Request

#: Answers that fill the visitor's own fields, with the input type each must have;
#: any other key is a custom attribute of the visitor (``attributes[key]``).
PROFILE_KEYS = {"name": "text", "email": "email", "phone": "tel"}
#: Attributes the widget sets itself: a pre-chat field may not take them over.
RESERVED_KEYS = frozenset({"language"})
MAX_FIELDS = 10
MAX_OPTIONS = 20

FieldKey = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$"),
    Field(description="`name`, `email`, `phone`, or a custom attribute's key (a-z, 0-9, _)."),
]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAME_PATTERN)]
#: Printable text that may hold line breaks (a greeting of two lines).
LONG_TEXT_PATTERN = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$"


class Labels(Request):
    en: Label = Field(description="Shown to visitors in English (and when `zh` is unset).")
    zh: Label | None = Field(None, description="Shown to visitors in Chinese.")


class PrechatOption(Request):
    value: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAME_PATTERN)]
    label: Labels | None = Field(None, description="Shown instead of `value` when set.")


class PrechatField(Request):
    key: FieldKey
    type: Literal["text", "email", "tel", "select"] = "text"
    label: Labels
    required: bool = False
    options: list[PrechatOption] = Field(
        default_factory=list,
        max_length=MAX_OPTIONS,
        description="The choices of a `select` (at least one); ignored for other types.",
    )

    @model_validator(mode="after")
    def _fits_its_key(self) -> PrechatField:
        wanted = PROFILE_KEYS.get(self.key)
        if wanted is not None and self.type != wanted:
            raise ValueError(f"the {self.key!r} field is of type {wanted!r}")
        if self.key in RESERVED_KEYS:
            raise ValueError(f"{self.key!r} is set by the widget itself")
        if self.type == "select" and not self.options:
            raise ValueError("a select field needs at least one option")
        if self.type != "select":
            self.options = []
        return self


class PrechatSettings(Request):
    enabled: bool = Field(
        False, description="Ask the fields before a visitor's first message (unless identified)."
    )
    fields: list[PrechatField] = Field(default_factory=list, max_length=MAX_FIELDS)

    @model_validator(mode="after")
    def _keys_once(self) -> PrechatSettings:
        keys = [f.key for f in self.fields]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"each field key once: {', '.join(twice)}")
        if self.enabled and not self.fields:
            raise ValueError("an enabled pre-chat form needs at least one field")
        return self


class WidgetSettings(Request):
    """A site's ``settings.widget``."""

    title: (
        Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=NAME_PATTERN)] | None
    ) = Field(None, description="The panel's title (default: the site's name).")
    greeting: (
        Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=LONG_TEXT_PATTERN)]
        | None
    ) = Field(None, description="The first line of the panel (default: the widget's own).")
    greeting_zh: (
        Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=LONG_TEXT_PATTERN)]
        | None
    ) = Field(
        None,
        description="The greeting of a widget in Chinese (default: `greeting`, else the "
        "widget's own Chinese one).",
    )
    color: Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")] | None = Field(
        None, description="The accent colour, `#rrggbb`."
    )
    prechat: PrechatSettings | None = None


class SitePatch(Request):
    name: Name | None = None
    settings: JsonObject | None = Field(
        None, description="Replaces the settings object (its `widget`, if any, is checked)."
    )
    widget: WidgetSettings | None = Field(
        None, description="Replaces `settings.widget` only; the other settings stay."
    )
    rotate_widget_key: bool = Field(
        False, description="Issue a new widget key; the old one stops working."
    )


# -- the widget's config and pre-chat answers (served by the web plugin) --------------
class TeamMember(BaseModel):
    id: str
    name: str
    avatar: str | None = Field(None, description="URL of the agent's picture, if they set one.")


class PrechatForm(BaseModel):
    enabled: bool = Field(description="Ask these fields before the first message.")
    fields: list[PrechatField] = Field(description="Empty when not `enabled`.")


class WidgetConfig(BaseModel):
    site_id: str
    name: str = Field(description="The site's `settings.widget.title`, else the site's name.")
    greeting: str | None = Field(description="The site's `settings.widget.greeting`.")
    greeting_zh: str | None = Field(
        description="The site's `settings.widget.greeting_zh`: what a widget in Chinese shows "
        "instead of `greeting`.",
    )
    color: str | None = Field(description="The site's `settings.widget.color` (CSS colour).")
    languages: list[str] = Field(description="Languages the widget has texts for.")
    protocol: int = Field(description="The client protocol version (docs/protocol.md).")
    open_hours: bool = Field(description="Within the site's business hours now.")
    agents_online: int = Field(ge=0, description="Agents online in the site now.")
    online: bool = Field(
        description="`open_hours` and at least one agent online: a chat can be answered now."
    )
    bot: bool = Field(
        description="A bot answers the site's new conversations (even when nobody is online)."
    )
    team: list[TeamMember] = Field(
        description="The site's agents as visitors see them: the widget names a message's "
        "author with it (also after a reload, when only the sender's id is in the frame).",
    )
    prechat: PrechatForm = Field(
        description="The site's pre-chat form (`settings.widget.prechat`): the widget asks "
        "it before a visitor's first message unless `kefu.identify()` told who they are."
    )


Answer = Annotated[str, StringConstraints(max_length=1000)]


class PrechatAnswers(BaseModel):
    answers: dict[FieldKey, Answer] = Field(
        description="Field key -> the visitor's answer; keys the form does not have are "
        "ignored, an empty answer leaves that detail as it was.",
        max_length=MAX_FIELDS * 2,
    )


class PrechatSaved(BaseModel):
    visitor_id: str
    saved: list[str] = Field(description="The keys whose answers were stored.")


def checked(widget: Any) -> dict[str, Any]:
    """``widget`` as stored once valid (unset keys left out); 400 ``invalid_request``."""
    try:
        settings = WidgetSettings.model_validate(widget, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["settings", "widget", *(str(p) for p in first["loc"])])
        details = validation_details(exc, ("settings", "widget"))
        raise ApiError(400, "invalid_request", f"{where}: {first['msg']}", **details) from None
    return settings.model_dump(mode="json", exclude_none=True)


def with_widget(settings: dict[str, Any], widget: Any | None) -> dict[str, Any]:
    """``settings`` with its ``widget`` checked (and replaced by ``widget`` when given)."""
    settings = dict(settings)
    if widget is not None:
        settings["widget"] = widget
    if "widget" in settings:
        settings["widget"] = checked(settings["widget"])
    return settings
