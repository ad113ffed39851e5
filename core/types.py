"""Domain types shared by the kernel and every plugin."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """A domain event passed to :func:`kefu.hooks.events.kefu_event`."""

    type: str
    site_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a visitor, an agent or an admin, always inside one site."""

    kind: str  # "visitor" | "agent" | "system"
    id: str
    site_id: str
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """Describes a transport for introspection: its name and endpoint."""

    name: str
    path: str
    description: str = ""


class PipelineReject(Exception):
    """Raised by a pipeline processor to refuse a message before it is stored."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Processor:
    """A message pipeline step; lower ``priority`` runs first."""

    name: str
    priority: int
    process: Callable[[Any, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RoutingFilter:
    """An eligibility filter: ``accepts(conversation, agent) -> bool`` (may be async)."""

    name: str
    accepts: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class WeightFactor:
    """A term of the weighted routing score: ``score(conversation, agent) -> float in 0..1``."""

    name: str
    score: Callable[..., Any]
    default_weight: float = 1.0
    description: str = ""


@dataclass(frozen=True, slots=True)
class BotReply:
    """What a bot answers: texts to send and an optional handoff to humans."""

    texts: tuple[str, ...] = ()
    handoff: bool = False
    handoff_reason: str | None = None
    department: str | None = None


@dataclass(frozen=True, slots=True)
class DegradableFeature:
    """A feature that can be shed under pressure; lower ``priority`` is shed first."""

    name: str
    priority: int
    set_enabled: Callable[[bool], Any]


@dataclass(frozen=True, slots=True)
class PressureReading:
    """One pressure source's current reading, 0 (idle) to 1 (saturated)."""

    source: str
    value: float


@dataclass(frozen=True, slots=True)
class CliCommand:
    """A ``kefu`` sub-command contributed by a plugin.

    ``configure(parser)`` adds arguments to an :class:`argparse.ArgumentParser`;
    ``run(args) -> int`` executes it and returns the exit code.
    """

    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
