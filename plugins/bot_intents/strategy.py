"""Dynamic replies: ``when:`` conditions over campaigns, segments, attributes and the clock.

A reply in a flow may list variants; each may carry ``when:`` conditions (all must
hold). The first conditional variant whose conditions hold is said; when none holds,
one of the unconditional variants is (``docs/bot.md``, "Dynamic replies")::

    say:
      - when: {campaign: black_friday, segment: vip}
        text: {en: "VIP Black Friday: 30% off with BF30.", zh: "VIP 黑五专享, 输入 BF30 立减 30%"}
      - when: {hours: "09:00-18:00", weekdays: mon-fri}
        text: "A colleague is online if you need one."
      - text: "Hello!"

The context of a turn (:class:`StrategyContext`) is built by :class:`Strategy` from the
``[bot]`` settings (``campaigns``, ``segments``, ``timezone``), the visitor's
attributes and an injectable clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

#: Keys a ``when:`` mapping may have.
CONDITION_KEYS = ("campaign", "segment", "attribute", "hours", "weekdays", "language")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_COMPARE = re.compile(r"^\s*(>=|<=|!=|>|<)\s*(.+?)\s*$")
_MAX_VALUES = 64


class ConditionError(ValueError):
    """A ``when:`` condition that cannot be read (the message says why)."""


# -- attribute matching (``attribute:`` conditions and segments) ---------------------------


def check_value_spec(spec: Any, where: str) -> None:
    """Raise :class:`ConditionError` unless ``spec`` is a valid attribute value spec."""
    if isinstance(spec, list):
        if not spec or len(spec) > _MAX_VALUES:
            raise ConditionError(f"{where}: a list of 1..{_MAX_VALUES} values")
        for item in spec:
            check_value_spec(item, where)
        return
    if isinstance(spec, dict) or spec is None:
        raise ConditionError(f"{where}: a value, a list of values or a comparison such as '>=3'")
    if isinstance(spec, str):
        found = _COMPARE.match(spec)
        if found and found[1] != "!=":
            try:
                float(found[2])
            except ValueError:
                raise ConditionError(f"{where}: {spec!r} compares with a non-number") from None


def value_matches(actual: Any, spec: Any) -> bool:
    """Does an attribute value satisfy a spec (value, list of values, '>=3', '!=x', '*')?"""
    if isinstance(spec, list):
        return any(value_matches(actual, item) for item in spec)
    if spec == "*":
        return actual not in (None, "", [], {})
    if actual is None:
        return False
    if isinstance(spec, str):
        found = _COMPARE.match(spec)
        if found:
            op, operand = found[1], found[2]
            if op == "!=":
                return str(actual) != operand
            try:
                a, b = float(actual), float(operand)
            except (TypeError, ValueError):
                return False
            return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op]
    if isinstance(spec, bool) or isinstance(actual, bool):
        return actual is spec or str(actual).lower() == str(spec).lower()
    return actual == spec or str(actual) == str(spec)


def attributes_match(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Every key of ``wanted`` matches (see :func:`value_matches`)."""
    return all(value_matches(attributes.get(k), spec) for k, spec in wanted.items())


# -- clock conditions --------------------------------------------------------------------


def parse_hours(value: Any) -> tuple[tuple[int, int], ...]:
    """``"09:00-18:00"`` (or a list, or comma separated) -> minute ranges; ``22:00-06:00``
    wraps past midnight; ``24:00`` is allowed as an end."""
    items = value if isinstance(value, list) else str(value).split(",") if value else []
    if not items or not all(isinstance(i, str) for i in items):
        raise ConditionError('hours: a range such as "09:00-18:00" (or a list of them)')
    ranges = []
    for item in items:
        found = _RANGE.match(item)
        if not found:
            raise ConditionError(f'hours: {item.strip()!r} is not a range such as "09:00-18:00"')
        h1, m1, h2, m2 = (int(x) for x in found.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ConditionError(f"hours: {item.strip()!r} is not a time of day (00:00..24:00)")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ConditionError(f"hours: {item.strip()!r} is an empty range")
        ranges.append((start, end))
    return tuple(ranges)


def in_hours(ranges: tuple[tuple[int, int], ...], moment: time) -> bool:
    minute = moment.hour * 60 + moment.minute
    return any(
        (start <= minute < end) if start < end else (minute >= start or minute < end)
        for start, end in ranges
    )


def parse_weekdays(value: Any) -> frozenset[int]:
    """``mon-fri``, ``[sat, sun]``, ``"mon,wed"`` -> weekday numbers (Monday = 0)."""
    items = value if isinstance(value, list) else str(value).split(",") if value else []
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ConditionError("weekdays: names such as mon-fri or [sat, sun]")
        lo, _, hi = item.strip().lower().partition("-")
        if lo not in WEEKDAYS or (hi and hi not in WEEKDAYS):
            raise ConditionError(f"weekdays: {item.strip()!r} is not mon..sun or a range mon-fri")
        a, b = WEEKDAYS.index(lo), WEEKDAYS.index(hi or lo)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    if not days:
        raise ConditionError("weekdays: names such as mon-fri or [sat, sun]")
    return frozenset(days)


# -- conditions ---------------------------------------------------------------------------


def _names(value: Any, key: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConditionError(f"{key}: a name or a list of names")
    return tuple(items)


@dataclass(frozen=True)
class Condition:
    """A ``when:`` mapping: every given key must hold (lists inside a key mean any of)."""

    campaigns: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    hours: tuple[tuple[int, int], ...] = ()
    weekdays: frozenset[int] = frozenset()
    languages: tuple[str, ...] = ()
    line: int = 0

    def holds(self, ctx: StrategyContext, language: str | None = None) -> bool:
        if self.campaigns and not any(c in ctx.campaigns for c in self.campaigns):
            return False
        if self.segments and not any(s in ctx.segments for s in self.segments):
            return False
        if self.attributes and not attributes_match(ctx.attributes, self.attributes):
            return False
        if self.languages and (language or ctx.language) not in self.languages:
            return False
        if self.hours or self.weekdays:
            local = ctx.local_now()
            if self.hours and not in_hours(self.hours, local.time()):
                return False
            if self.weekdays and local.weekday() not in self.weekdays:
                return False
        return True


def parse_condition(value: Any, line: int = 0) -> Condition:
    """A ``when:`` mapping -> :class:`Condition`; :class:`ConditionError` says what is wrong."""
    if not isinstance(value, Mapping) or not value:
        raise ConditionError(f"when: a mapping with some of {', '.join(CONDITION_KEYS)}")
    unknown = [k for k in value if k not in CONDITION_KEYS]
    if unknown:
        raise ConditionError(
            f"when: unknown condition {unknown[0]!r} (expected {', '.join(CONDITION_KEYS)})"
        )
    kwargs: dict[str, Any] = {"line": line}
    if "campaign" in value:
        kwargs["campaigns"] = _names(value["campaign"], "campaign")
    if "segment" in value:
        kwargs["segments"] = _names(value["segment"], "segment")
    if "language" in value:
        kwargs["languages"] = _names(value["language"], "language")
    if "attribute" in value:
        attrs = value["attribute"]
        if not isinstance(attrs, Mapping) or not attrs:
            raise ConditionError("attribute: a mapping of attribute names to values")
        for name, spec in attrs.items():
            check_value_spec(spec, f"attribute {name!r}")
        kwargs["attributes"] = {str(k): v for k, v in attrs.items()}
    if "hours" in value:
        kwargs["hours"] = parse_hours(value["hours"])
    if "weekdays" in value:
        kwargs["weekdays"] = parse_weekdays(value["weekdays"])
    return Condition(**kwargs)


# -- the configured calendar and segments -------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """A named window ``[start, end)`` (timezone-aware), optionally per site and segment."""

    name: str
    start: datetime
    end: datetime
    sites: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()

    def active(self, now: datetime, site_id: str, segments: frozenset[str]) -> bool:
        if self.sites and site_id not in self.sites:
            return False
        if self.segments and not segments.intersection(self.segments):
            return False
        return self.start <= now < self.end


@dataclass(frozen=True)
class StrategyContext:
    """What a turn's conditions and experiments look at."""

    now: datetime  # timezone-aware
    timezone: ZoneInfo | Any = UTC
    site_id: str = ""
    visitor_id: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    language: str = ""
    #: experiment id -> variant already assigned to this visitor (sticky; filled as assigned)
    assignments: dict[str, str] = field(default_factory=dict)
    #: draws a variant for an experiment with ``allocation: thompson`` (None: hash)
    sampler: Callable[[Any], str] | None = None

    def local_now(self) -> datetime:
        return self.now.astimezone(self.timezone)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Strategy:
    """Campaigns, segments and the clock of one kernel (``[bot]`` settings)."""

    def __init__(
        self,
        campaigns: tuple[Campaign, ...] = (),
        segments: Mapping[str, Mapping[str, Any]] | None = None,
        timezone: str = "UTC",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.campaigns = tuple(campaigns)
        self.segments = dict(segments or {})
        self.timezone = ZoneInfo(timezone)
        self.clock = clock  # tests inject a fixed clock

    @classmethod
    def from_settings(cls, settings: Any) -> Strategy:
        campaigns = tuple(
            Campaign(c.name, c.start_at(), c.end_at(), tuple(c.sites), tuple(c.segments))
            for c in getattr(settings, "campaigns", ())
        )
        segments = {name: dict(s) for name, s in getattr(settings, "segments", {}).items()}
        return cls(campaigns, segments, getattr(settings, "timezone", "UTC"))

    def names(self) -> dict[str, set[str]]:
        """Known names, for the server's check of a flow's ``when:`` conditions."""
        return {"campaign": {c.name for c in self.campaigns}, "segment": set(self.segments)}

    def segments_of(self, attributes: Mapping[str, Any]) -> frozenset[str]:
        found = (n for n, wanted in self.segments.items() if attributes_match(attributes, wanted))
        return frozenset(found)

    def context(
        self,
        site_id: str,
        visitor_id: str,
        attributes: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> StrategyContext:
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        attributes = dict(attributes or {})
        segments = self.segments_of(attributes)
        active = frozenset(c.name for c in self.campaigns if c.active(now, site_id, segments))
        return StrategyContext(
            now=now,
            timezone=self.timezone,
            site_id=site_id,
            visitor_id=visitor_id,
            attributes=attributes,
            segments=segments,
            campaigns=active,
            **extra,
        )


# -- checks of a flow's conditions against the configured names ---------------------------


def unknown_names(
    conditions: Iterator[Condition], known: Mapping[str, set[str]]
) -> Iterator[tuple[int, str]]:
    """``(line, message)`` for campaign and segment names the config does not define."""
    for condition in conditions:
        for kind, names in (("campaign", condition.campaigns), ("segment", condition.segments)):
            defined = known.get(kind)
            if defined is None:
                continue
            for name in names:
                if name not in defined:
                    listed = ", ".join(sorted(defined)) or f"none in [bot] {kind}s"
                    yield condition.line, f"when: unknown {kind} {name!r} ({listed})"


# -- choosing the variant of a reply ------------------------------------------------------


def choose(
    response: Any,
    ctx: StrategyContext | None,
    experiments: Mapping[str, Any],
    exposures: list,
    language: str = "",
) -> Any:
    """The :class:`~.flows.Response` to say for a reply with cases, or None for nothing.

    The first case whose ``when`` holds wins; an experiment case appends
    ``(experiment, variant)`` to ``exposures`` and returns that variant's text. Without a
    context (a flow run outside the service) every ``when`` fails and experiments are
    skipped, so the defaults are said.
    """
    for case in response.cases:
        if case.when is not None and (ctx is None or not case.when.holds(ctx, language)):
            continue
        if case.experiment is None:
            return case.response
        experiment = experiments.get(case.experiment)
        if ctx is None or experiment is None:
            continue
        variant = ctx.assignments.get(experiment.id)
        if variant not in case.arms:
            if experiment.allocation == "thompson" and ctx.sampler is not None:
                variant = ctx.sampler(experiment)
            else:
                variant = experiment.assign(ctx.visitor_id)
            ctx.assignments[experiment.id] = variant
        exposures.append((experiment, variant))
        return case.arms[variant]
    return response if response.variants else None


def flow_problems(
    spec: Any, responses: Iterator[tuple[str | None, Any]], known: Mapping[str, set[str]] | None
) -> Iterator[Any]:
    """Meaning checks of a flow's dynamic replies and experiments (``FlowError`` items):
    experiments named by replies exist and their variants match, a ``state:`` conversion
    names a state, and (with ``known``, the server's config) campaigns and segments exist."""
    from kefu.plugins.bot_intents.flow_yaml import FlowError

    conditions: list[Condition] = []
    for _state, response in responses:
        for case in response.cases:
            if case.when is not None:
                conditions.append(case.when)
            if case.experiment is None:
                continue
            experiment = spec.experiments.get(case.experiment)
            if experiment is None:
                listed = ", ".join(sorted(spec.experiments)) or "none declared"
                yield FlowError(
                    case.line, f"unknown experiment {case.experiment!r} (experiments: {listed})"
                )
            elif set(case.arms) != set(experiment.names):
                yield FlowError(
                    case.line,
                    f"experiment {experiment.id!r}: the reply's variants "
                    f"{sorted(case.arms)} must be its variants {sorted(experiment.names)}",
                )
    for experiment in spec.experiments.values():
        kind, _, name = experiment.convert_on.partition(":")
        if kind == "state" and name not in spec.states:
            yield FlowError(
                experiment.line, f"experiment {experiment.id!r}: convert_on: no state {name!r}"
            )
    for line, message in unknown_names(iter(conditions), known or {}):
        yield FlowError(line, message)
