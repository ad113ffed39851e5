"""The ``[routing]`` section of kefu.toml and per-site business hours.

Example::

    [routing]
    policy = "weighted"            # weighted | round_robin | least_open | manual | a plugin's
    [routing.weights]              # live reloadable; a factor left out keeps its default
    load = 3.0
    returning_visitor = 1.0
    [routing.business_hours."*"]   # every site without its own entry
    timezone = "Europe/Paris"
    mon = ["09:00-12:30", "13:30-18:00"]
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import Field, ValidationError, field_validator

from kefu.core.config import Section

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Key of ``Site.settings`` holding the site's own business hours (they beat the config).
SITE_HOURS_KEY = "business_hours"


@functools.lru_cache(maxsize=256)
def _parse_window(text: str) -> tuple[int, int]:
    """``"09:00-18:00"`` -> minutes since midnight ``(540, 1080)``; an end may be ``24:00``."""
    try:
        start, end = (part.strip() for part in text.split("-"))
        minutes = []
        for value in (start, end):
            hours, mins = value.split(":")
            minutes.append(int(hours) * 60 + int(mins))
    except ValueError:
        raise ValueError(f"{text!r} is not a time window like '09:00-18:00'") from None
    first, last = minutes
    if not (0 <= first < last <= 24 * 60):
        raise ValueError(f"{text!r}: the start must come before the end, within one day")
    return first, last


class BusinessHours(Section):
    """Weekly opening hours of one site in its own time zone; no window on a day = closed."""

    timezone: str = "UTC"
    mon: list[str] = []
    tue: list[str] = []
    wed: list[str] = []
    thu: list[str] = []
    fri: list[str] = []
    sat: list[str] = []
    sun: list[str] = []
    #: Whole days closed (holidays), as ``YYYY-MM-DD`` in the site's time zone.
    closed_dates: list[dt.date] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator(*DAYS)
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for window in value:
            _parse_window(window)
        return value

    def is_open(self, ts: float) -> bool:
        """Whether the site is open at UNIX time ``ts``."""
        local = dt.datetime.fromtimestamp(ts, ZoneInfo(self.timezone))
        if local.date() in self.closed_dates:
            return False
        minute = local.hour * 60 + local.minute
        windows = getattr(self, DAYS[local.weekday()])
        return any(start <= minute < end for start, end in map(_parse_window, windows))


Weight = Annotated[float, Field(ge=0, le=1000)]


class RoutingSettings(Section):
    """Which selector routes, the weighted policy's weights, business hours, queue estimates."""

    #: The selector, by the name a plugin registered it under (``kefu_routing_policies``).
    policy: str = "weighted"
    #: Weight of each factor of the ``weighted`` policy, by factor name; live reloadable.
    weights: dict[str, Weight] = {}
    #: Business hours by site id; ``"*"`` applies to sites without an entry. No entry: always open.
    business_hours: dict[str, BusinessHours] = {}
    #: Handle time assumed for the wait estimate until real resolutions were observed.
    default_handle_time_s: float = Field(300.0, gt=0)
    #: Every N seconds: release unanswered assignments that are due, pass where anyone
    #: waits (0 = never; deadlines are also kept by a timer).
    sweep_interval_s: float = Field(5.0, ge=0)
    #: Rebuild each site's routing indexes from storage this often, a safety net for
    #: changes no event or bus message told of (0 = only at start-up).
    rebuild_interval_s: float = Field(300.0, ge=0)
    #: With several processes on one bus, one process at a time runs a site's passes,
    #: holding a lease in the bus's shared state for this long (renewed by each pass and
    #: every third of it while the site has work); the others keep their indexes fresh
    #: and, with conversations waiting, try to take it every third of it: a killed
    #: holder is replaced within about 4/3 of this. 0: every process passes (the
    #: storage's compare-and-set claims keep that correct, at more conflicts).
    lease_ttl_s: float = Field(3.0, ge=0)
    #: Lines longer than 200 are told their positions at most this often.
    queue_notice_interval_s: float = Field(1.0, ge=0)
    #: Seconds an assigned agent has to accept or answer before the conversation goes to
    #: someone else, who is not offered it again (0 = never reassign).
    answer_timeout_s: float = Field(120.0, ge=0)
    #: Seconds after an online agent's last connection closed before they are set away.
    away_grace_s: float = Field(30.0, ge=0)
    #: The wait estimate sent to visitors is rounded up to this step; smaller changes are
    #: not sent again.
    eta_step_s: float = Field(10.0, gt=0)

    def hours_for(self, site_id: str) -> BusinessHours | None:
        """The business hours that apply to ``site_id``; None means always open."""
        return self.business_hours.get(site_id) or self.business_hours.get("*")


@functools.lru_cache(maxsize=1024)
def _parse_hours(encoded: bytes) -> BusinessHours | None:
    try:
        return BusinessHours.model_validate(orjson.loads(encoded))
    except ValidationError as exc:
        log.warning("ignored invalid business hours in site settings: %s", exc)
        return None


def site_hours(settings: dict[str, Any]) -> BusinessHours | None:
    """The business hours a site's settings hold (``business_hours``), None if none or invalid."""
    value = settings.get(SITE_HOURS_KEY)
    if not isinstance(value, dict):
        return None
    return _parse_hours(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
