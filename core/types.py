"""Domain types shared by the kernel and every plugin."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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
class VisitorIdentity:
    """Who a visitor is on the company's own site, as ``kefu_auth_visitor_identity`` found.

    ``visitor_id`` is the visitor (contact) the session continues as: for a verified
    ``user_id`` the one already linked to it (so the same user on two devices is one
    contact), else the visitor the session had. ``verified`` is False for a claim a site
    accepts without a valid signature (shown as unverified in the console).
    """

    user_id: str
    visitor_id: str
    verified: bool


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
    """A message pipeline step; lower ``priority`` runs first.

    ``wants(message)``, when given, is a cheap synchronous test: a message it returns
    False for skips this step (no call, no await), and a message no step wants skips the
    pipeline altogether. Leave it None to see every message."""

    name: str
    priority: int
    process: Callable[[Any, dict[str, Any]], Awaitable[Any]]
    wants: Callable[[Any], bool] | None = None


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
class RestEndpoint:
    """A JSON endpoint a plugin contributes to the REST API (``kefu_rest_endpoints``).

    The REST API plugin serves it (bearer-token auth unless ``auth`` is False, query
    and body validated with the pydantic models ``query`` and ``body``, the
    ``response`` model serialised with ``status``) and documents it in
    ``/v1/openapi.json``. ``handler(call)`` is async and receives the validated
    request: ``call.kernel``, ``call.principal``, ``call.params`` (path
    parameters, each matching ``path_patterns`` or an id pattern), ``call.query``,
    ``call.body``, ``call.site_id`` and ``await call.require(action, resource)``.
    It returns a ``response`` instance (None for 204) or raises
    :class:`kefu.core.errors.ApiError`; ``errors`` lists the error statuses it may
    answer besides the ones validation and auth imply.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Callable[[Any], Awaitable[Any]]
    response: type | None = None
    status: int = 200
    query: type | None = None
    body: type | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    description: str = ""
    path_patterns: dict[str, str] = field(default_factory=dict)
    #: OpenAPI fragments merged into the operation, for a body or response that is not
    #: JSON (``{"responses": {"200": {"content": {"text/csv": ...}}}}``); the handler
    #: then returns an ``aiohttp.web.StreamResponse`` of its own.
    openapi: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KnowledgeAnswer:
    """A passage of a help article that answers a question (``kefu_bot_knowledge``).

    ``text`` is the passage, ``article_id``/``title`` name the article to cite and
    ``score`` is the retriever's (comparable only within one knowledge base).
    """

    text: str
    article_id: str
    title: str
    score: float
    lang: str = "en"


@runtime_checkable
class TextEncoder(Protocol):
    """Sentence vectors for texts of one language (``kefu_bot_text_encoders``).

    A plugin that holds an embedding model offers it through this interface; another one
    (the knowledge base) ranks with it without importing the first. ``encode`` is
    blocking CPU work (call it in an executor, never on the event loop) and may load the
    model on its first call.
    """

    #: what it is, for logs and docs (``"all-MiniLM-L6-v2"``)
    name: str
    #: the language of the texts it is for: ``"en"`` or ``"zh"``
    lang: str
    #: the cosine at or below which two texts are not related (unrelated texts of a mean
    #: word-vector model score far higher than those of a trained sentence encoder)
    floor: float
    #: two plugins offer the same language: the lower priority is used (built-in: 100)
    priority: int

    def encode(self, texts: Sequence[str]) -> Any:
        """A float32 array ``(len(texts), dim)`` of L2-normalised rows (a row of zeros: no
        vector for that text), or None when it cannot encode now (shed under pressure,
        the model failed to load): the caller does without."""


@dataclass(frozen=True, slots=True)
class GeneratedAnswer:
    """An answer a generative provider composed from passages (``kefu_bot_generate``).

    ``text`` is the answer with its ``[n]`` citation markers; ``cited`` the 0-based
    indexes of the passages it cites; ``refused`` says the passages do not answer the
    question (the bot hands over; ``text`` is then not shown); ``tokens`` what the
    answer cost (prompt and completion), for metrics.
    """

    text: str
    cited: tuple[int, ...] = ()
    refused: bool = False
    reason: str | None = None
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class BotReply:
    """What a bot answers: texts to send and an optional handoff to humans."""

    texts: tuple[str, ...] = ()
    handoff: bool = False
    handoff_reason: str | None = None
    department: str | None = None
    choices: tuple[str, ...] = ()  # quick replies offered with the last text


@dataclass(frozen=True, slots=True)
class DegradableFeature:
    """A feature that can be shed under pressure (``kefu_degradation_features``).

    ``level`` is the pressure level (1..3) at which it is shed unless the config says
    otherwise (``[degradation.features]``); within a level lower ``priority`` is shed
    first and restored last. ``set_enabled(False)`` is called when it is shed,
    ``set_enabled(True)`` when it is restored; it must be cheap and must not block.
    """

    name: str
    priority: int
    set_enabled: Callable[[bool], Any]
    level: int = 1
    description: str = ""


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
