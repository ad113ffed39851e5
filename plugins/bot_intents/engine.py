"""Running a compiled flow: sessions and turns.

A :class:`CompiledFlow` is immutable (a checked spec, compiled regexes, a trained
classifier, the content's sha256). A :class:`Session` is one dialogue's position in
one version; it never changes version, so a flow published meanwhile does not affect
dialogues already running. Each visitor utterance is one :meth:`CompiledFlow.step`:

1. global transitions, in order; 2. the current state's transitions, in order;
3. the state's next unfilled slot (whole text, or the ``regex``'s group 1 / match),
re-asked up to ``retries`` times, then ``on_fail``; 4. with a ``clarify`` block, a
"did you mean" question when the best intents were not confident enough
(:mod:`~kefu.plugins.bot_intents.clarify`; its answer is checked first next turn);
5. the fallback reply, and a handoff once ``max_misses`` turns in a row matched nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kefu.plugins.bot_intents import clarify
from kefu.plugins.bot_intents.classifier import IntentClassifier, IntentPrediction
from kefu.plugins.bot_intents.flows import FlowSpec, Handoff, Response, Slot, State, Transition
from kefu.plugins.bot_intents.strategy import StrategyContext, choose

log = logging.getLogger(__name__)

Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_MAX_HOPS = 32  # state entries per turn (next chains); a loop is cut here
DEFAULT_FALLBACK = {"en": ("Sorry, I did not understand that.",), "zh": ("抱歉，我没有理解。",)}  # noqa: RUF001


def detect_language(text: str, default: str) -> str:
    """``zh`` for text with CJK characters, ``en`` for Latin letters, else ``default``."""
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return default


@dataclass
class Session:
    """One dialogue's place in one flow version (serialisable with :meth:`to_dict`)."""

    id: str
    flow_id: str
    version: str
    state: str
    language: str
    slots: dict[str, Any] = field(default_factory=dict)
    misses: int = 0
    retries: int = 0
    turn: int = 0
    ended: bool = False
    handed_off: bool = False
    clarify: list[str] = field(default_factory=list)  # intents a pending question offers
    clarify_misses: int = 0  # clarifying questions in a row left unanswered

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Turn:
    """What one step produced."""

    texts: tuple[str, ...]
    version: str
    state: str
    handoff: Handoff | None = None
    ended: bool = False
    matched: str | None = None  # "global", "transition", "slot", "clarify", "fallback"
    choices: tuple[str, ...] = ()  # quick replies offered with the last text (clarify)
    exposures: tuple = ()  # (Experiment, variant) of A/B variants said (strategy.choose)
    entered: tuple[str, ...] = ()  # states entered during the step, in order


class _Reply:
    """Texts and outcome being built during one step."""

    def __init__(self, flow: CompiledFlow, session: Session) -> None:
        self.flow, self.session = flow, session
        self.texts: list[str] = []
        self.handoff: Handoff | None = None
        self.choices: tuple[str, ...] = ()
        self.context: StrategyContext | None = None  # dynamic replies and A/B tests
        self.exposures: list = []
        self.entered: list[str] = []

    def say(self, response: Response | None) -> None:
        if response is None:
            return
        s = self.session
        if response.cases:  # when: conditions / experiments (strategy.py)
            experiments = self.flow.spec.experiments
            response = choose(response, self.context, experiments, self.exposures, s.language)
            if response is None:
                return
        salt = f"{s.id}:{s.turn}:{len(self.texts)}"
        self.texts.append(response.pick(s.language, salt, s.slots))


class CompiledFlow:
    """An immutable, runnable flow version."""

    def __init__(
        self,
        spec: FlowSpec,
        sha256: str,
        patterns: Mapping[str, re.Pattern],
        classifier: IntentClassifier | None,
        source: str = "",
    ) -> None:
        self.spec = spec
        self.sha256 = sha256
        self.patterns = dict(patterns)
        self.classifier = classifier
        self.source = source
        self.created_at = time.time()

    @property
    def id(self) -> str:
        return self.spec.id

    def __repr__(self) -> str:
        return f"<CompiledFlow {self.spec.id}@{self.sha256[:12]}>"

    # -- sessions ---------------------------------------------------------------------
    async def start(
        self,
        session_id: str,
        actions: Mapping[str, Action] | None = None,
        text: str = "",
        context: StrategyContext | None = None,
        language: str | None = None,
    ) -> tuple[Session, Turn]:
        """A new session on this version, entering the start state (its greeting), in the
        language of ``text``, else ``language`` (the visitor's), else the flow's."""
        language = detect_language(text, language or self.spec.language)
        session = Session(session_id, self.spec.id, self.sha256, self.spec.start, language)
        reply = _Reply(self, session)
        reply.context = context
        await self._enter(reply, self.spec.start, actions or {})
        return session, self._turn(reply, "start")

    async def step(
        self,
        session: Session,
        text: str,
        actions: Mapping[str, Action] | None = None,
        context: StrategyContext | None = None,
    ) -> Turn:
        """Answer one utterance; ``session`` must belong to this version."""
        if session.version != self.sha256:
            raise ValueError(f"session {session.id} runs version {session.version[:12]}")
        classifier = self.classifier
        if classifier is not None and classifier.encoder is not None and classifier.dense:
            # The embedding pass takes milliseconds of CPU: it runs in a worker thread
            # (NumPy releases the GIL) and the turn below reads its cached result.
            await asyncio.get_running_loop().run_in_executor(None, self.classifier.predict, text)
        actions = actions or {}
        session.turn += 1
        session.language = detect_language(text, session.language)
        reply = _Reply(self, session)
        reply.context = context
        if session.ended or session.handed_off:  # a finished dialogue starts over
            session.ended = session.handed_off = False
            session.misses = 0
            await self._enter(reply, self.spec.start, actions)
            reply.texts.clear()
            reply.exposures.clear()
        prediction: list[IntentPrediction | None] = []
        state = self.spec.states[session.state]
        chosen = clarify.resolve(self, session, state, text)  # the answer to "did you mean"
        if chosen is not None:
            session.misses = 0
            reply.say(chosen.say)
            await self._follow(reply, chosen.goto, chosen.handoff, actions)
            return self._turn(reply, "clarify")
        for where, transitions in (("global", self.spec.global_transitions),
                                   ("transition", state.transitions)):  # fmt: skip
            for transition in transitions:
                if self._matches(transition, text, prediction):
                    session.misses = 0
                    reply.say(transition.say)
                    await self._follow(reply, transition.goto, transition.handoff, actions)
                    return self._turn(reply, where)
        slot = self._pending(state, session)
        if slot is not None:
            value = self._extract(slot, text)
            if value is not None:
                session.slots[slot.name] = value
                session.retries = session.misses = 0
                await self._continue(reply, state, actions)
                return self._turn(reply, "slot")
            session.retries += 1
            if session.retries <= slot.retries:
                reply.say(slot.prompt)
                return self._turn(reply, "slot")
            if slot.on_fail_goto or slot.on_fail_handoff:
                await self._follow(reply, slot.on_fail_goto, slot.on_fail_handoff, actions)
                return self._turn(reply, "slot")
        if clarify.ask(self, reply, state, text, prediction):
            return self._turn(reply, "clarify")
        return self._turn(self._fallback(reply), "fallback")

    # -- internals ---------------------------------------------------------------------
    def _turn(self, reply: _Reply, matched: str) -> Turn:
        s = reply.session
        texts, choices = tuple(reply.texts), reply.choices
        turn = Turn(texts, self.sha256, s.state, reply.handoff, s.ended, matched, choices)
        if reply.exposures or reply.entered:
            turn = replace(turn, exposures=tuple(reply.exposures), entered=tuple(reply.entered))
        return turn

    def _fallback(self, reply: _Reply) -> _Reply:
        session, fallback = reply.session, self.spec.fallback
        session.misses += 1
        if fallback.handoff is not None and session.misses >= fallback.max_misses:
            reply.say(fallback.say)
            self._hand_off(reply, fallback.handoff)
            return reply
        reply.say(fallback.say or Response(DEFAULT_FALLBACK))
        state = self.spec.states[session.state]
        slot = self._pending(state, session)
        if slot is not None:
            reply.say(slot.prompt)
        return reply

    def _matches(self, t: Transition, text: str, prediction: list) -> bool:
        if t.kind == "keyword":
            folded = text.casefold()
            return any(k in folded for k in t.keywords)
        if t.kind == "regex":
            return self.patterns[t.regex].search(text) is not None
        if self.classifier is None:
            return False
        if not prediction:
            prediction.append(self.classifier.predict(text))
        found = prediction[0]
        if found.ranking and found.ranking[0][0] == self.classifier.oos_label:
            return t.intent == self.classifier.oos_label  # the flow's out-of-scope examples won
        wanted = self.spec.threshold if t.min_confidence is None else t.min_confidence
        return found.best == t.intent and found.confidence >= wanted

    def _extract(self, slot: Slot, text: str) -> str | None:
        text = text.strip()
        if slot.regex is None:
            return text or None
        match = self.patterns[slot.regex].search(text)
        if match is None:
            return None
        return match.group(1) if match.re.groups else match.group(0)

    @staticmethod
    def _pending(state: State, session: Session) -> Slot | None:
        return next((s for s in state.slots if s.name not in session.slots), None)

    async def _follow(
        self, reply: _Reply, goto: str | None, handoff: Handoff | None, actions: Mapping
    ) -> None:
        if handoff is not None:
            self._hand_off(reply, handoff)
        elif goto is not None:
            await self._enter(reply, goto, actions)

    def _hand_off(self, reply: _Reply, handoff: Handoff) -> None:
        reply.handoff = handoff
        reply.session.handed_off = True
        reply.session.misses = 0

    async def _enter(self, reply: _Reply, name: str, actions: Mapping, hops: int = 0) -> None:
        session = reply.session
        state = self.spec.states[name]
        session.state, session.retries = name, 0
        reply.entered.append(name)
        for slot in state.slots:  # a state entered again asks again
            session.slots.pop(slot.name, None)
        reply.say(state.say)
        if state.handoff is not None:
            self._hand_off(reply, state.handoff)
            return
        await self._continue(reply, state, actions, hops)

    async def _continue(self, reply: _Reply, state: State, actions: Mapping, hops: int = 0) -> None:
        session = reply.session
        pending = self._pending(state, session)
        if pending is not None:
            reply.say(pending.prompt)
            return
        if state.action is not None:
            await self._act(reply, state, actions)
        reply.say(state.then)
        if state.end:
            session.ended = True
        elif state.next is not None:
            if hops >= _MAX_HOPS:
                log.warning("flow %s: more than %d states in one turn", self, _MAX_HOPS)
                return
            await self._enter(reply, state.next, actions, hops + 1)

    async def _act(self, reply: _Reply, state: State, actions: Mapping) -> None:
        session = reply.session
        action = actions.get(state.action)
        if action is None:
            log.warning("flow %s: action %r is not installed", self, state.action)
            return
        context = {
            "slots": dict(session.slots),
            "state": state.name,
            "flow_id": self.spec.id,
            "version": self.sha256,
            "language": session.language,
            "session_id": session.id,
        }
        try:
            result = await action(context)
        except Exception:
            log.exception("flow %s: action %r failed", self, state.action)
            return
        if isinstance(result, Mapping):
            session.slots.update({str(k): v for k, v in result.items()})
