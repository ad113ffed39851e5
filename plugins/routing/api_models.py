"""Request and response models of routing's REST endpoints (they also make its OpenAPI part)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

#: Ids in bodies, as in paths: what ``kefu.core.domain.new_id`` makes, plus short slugs.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
#: One line of printable text (no control characters).
LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
#: Free text: anything but NUL and other control characters except tab and newlines.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
WINDOW_PATTERN = r"^([01][0-9]|2[0-4]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$"
DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Department = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=LINE_PATTERN)]
Note = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=TEXT_PATTERN)]
Window = Annotated[str, StringConstraints(pattern=WINDOW_PATTERN)]
Windows = Annotated[list[Window], Field(max_length=12)]
Day = Annotated[str, StringConstraints(pattern=DATE_PATTERN)]


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer includes ``6.0``; strict validation would refuse it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeclineBody(Request):
    reason: Note | None = Field(None, description="Why, for the team (never shown to the visitor).")


class TransferBody(Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["agent_id"]}, {"required": ["department"]}]},
    )

    # not nullable: the schema's anyOf says one of them is given, and null is not given
    agent_id: Id = Field(None, description="An online agent of the site with room.")
    department: Department = Field(
        None, description="Without `agent_id`: the conversation waits for this department."
    )
    note: Note | None = Field(None, description="For the receiving agent; never for the visitor.")


class PickBody(Request):
    conversation_id: Id | None = Field(
        None, description="The waiting conversation to take; the first one you may take if absent."
    )


class PresenceBody(Request):
    status: Literal["online", "away", "offline"]
    accepting: bool | None = Field(
        None, description="Whether new chats are offered while online (default: unchanged)."
    )


class CapacityBody(Request):
    capacity: Annotated[int, BeforeValidator(_whole_number)] = Field(
        ge=0, le=100, description="Conversations the agent holds at once (0 to 100)."
    )


class BusinessHoursBody(Request):
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        "UTC", description="IANA time zone name, e.g. `Europe/Paris`."
    )
    mon: Windows = Field(default_factory=list, description="`HH:MM-HH:MM` windows; none = closed.")
    tue: Windows = Field(default_factory=list)
    wed: Windows = Field(default_factory=list)
    thu: Windows = Field(default_factory=list)
    fri: Windows = Field(default_factory=list)
    sat: Windows = Field(default_factory=list)
    sun: Windows = Field(default_factory=list)
    closed_dates: Annotated[list[Day], Field(max_length=366)] = Field(
        default_factory=list, description="Whole days closed (`YYYY-MM-DD`, local time)."
    )


# -- responses ----------------------------------------------------------------------------
class ConversationState(BaseModel):
    """Where a conversation stands after a workflow action."""

    id: str
    site_id: str
    visitor_id: str
    state: str
    assignee_id: str | None
    department: str | None
    priority: int
    tags: list[str]
    last_seq: int
    created_at: float
    updated_at: float
    resolved_at: float | None
    meta: dict[str, float] = Field(
        description="When it was queued, assigned, accepted and first answered (UNIX times)."
    )


class QueuePosition(BaseModel):
    conversation_id: str
    state: str = Field(description="Only `queued` conversations have a position.")
    position: int | None = Field(description="1 = next; counted among the same department.")
    eta_s: float | None = Field(description="Estimated wait in seconds; null when unknown.")
    available: bool = Field(description="Someone could answer (online, in business hours).")
    reason: Literal["closed", "no_agents"] | None = Field(
        description="Why nobody can answer now; the widget then offers the message form."
    )


class QueueList(BaseModel):
    waiting: list[QueuePosition] = Field(description="Routing order: priority, then oldest.")


class AgentPresence(BaseModel):
    id: str
    site_id: str
    name: str
    status: str
    capacity: int
    skills: list[str]


class Availability(BaseModel):
    open: bool = Field(description="Inside the site's business hours.")
    agents_online: int = Field(description="Agents online and accepting chats.")
    available: bool = Field(description="A new conversation could be answered now.")
    reason: Literal["closed", "no_agents"] | None


class BusinessHoursOut(BaseModel):
    source: Literal["site", "config", "none"] = Field(
        description="`site`: set here; `config`: `[routing.business_hours]`; `none`: always open."
    )
    open_now: bool
    hours: BusinessHoursBody | None
