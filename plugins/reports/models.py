"""The shapes of ``/v1/reports`` (pydantic: validation and the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: The tables ``/v1/reports/{table}.csv`` serves.
TABLES = ("days", "hours", "agents", "departments", "conversations")
Table = Literal["days", "hours", "agents", "departments", "conversations"]


def _iso_day(value: Any) -> Any:
    """Only ``YYYY-MM-DD``: pydantic alone would also take a number as a UNIX time."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    raise ValueError("a day is written YYYY-MM-DD")


Day = Annotated[dt.date, BeforeValidator(_iso_day)]


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: Day | None = Field(
        None, description="First day (YYYY-MM-DD, in `tz`); default: six days before `until`."
    )
    until: Day | None = Field(
        None, description="Last day, included (YYYY-MM-DD, in `tz`); default: today."
    )
    tz: str = Field(
        "UTC",
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$",
        description="IANA time zone the days and hours are counted in (`Asia/Shanghai`).",
    )


class Spread(BaseModel):
    count: int
    median_s: float | None
    p90_s: float | None
    average_s: float | None


class Csat(BaseModel):
    ratings: int
    average: float | None = Field(description="Mean score (1-5).")
    satisfied_pct: float | None = Field(description="Share of ratings of 4 or 5 (of 5).")


class BotFigures(BaseModel):
    handled: int = Field(description="Conversations a bot answered in.")
    contained: int = Field(description="Of those, the ones no human took part in.")
    handed_off: int
    containment_pct: float | None


class Summary(BaseModel):
    conversations: int
    resolved: int
    first_response: Spread
    resolution: Spread
    csat: Csat
    bot: BotFigures


class Figures(BaseModel):
    conversations: int
    resolved: int
    first_response_median_s: float | None
    first_response_p90_s: float | None
    resolution_median_s: float | None
    resolution_p90_s: float | None
    ratings: int
    csat_pct: float | None
    bot_handled: int
    bot_contained: int
    containment_pct: float | None


class DayRow(Figures):
    date: str


class HourRow(BaseModel):
    hour: int
    conversations: int


class AgentRow(Figures):
    agent_id: str
    name: str


class DepartmentRow(Figures):
    department: str = Field(description='"" for conversations of no department.')


class Report(BaseModel):
    since: str
    until: str
    tz: str
    truncated: bool = Field(description="More conversations than `[reports] max_conversations`.")
    summary: Summary
    days: list[DayRow]
    hours: list[HourRow]
    agents: list[AgentRow]
    departments: list[DepartmentRow]
