"""Clarifying questions: a low-confidence input asks which intent was meant.

A flow (or one state) with a ``clarify:`` block does not fall straight to the fallback
when no transition matched: if the classifier's best in-scope intents reach
``min_confidence`` (but not their transitions' threshold) and are accepted by the
state's or the global transitions, the bot asks "Did you mean: 1) A, 2) B?" (each
intent's ``title``, per language) and offers the titles as ``choices`` (quick replies).
The visitor's next message resolves it when it is a number of the list, a title (any
language), the intent's name, or a yes when there was one candidate; the transition
accepting that intent then fires as if it had matched. Anything else is handled like
any message. After ``max_attempts`` unanswered questions in a row, the next ambiguous
input hands off (``then: handoff``) or gets the fallback (``then: fallback``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kefu.plugins.bot_intents.flow_yaml import FlowError, line_of
from kefu.plugins.bot_intents.flows import PLACEHOLDER, FlowSpec, Handoff, Response, State

if TYPE_CHECKING:
    from kefu.plugins.bot_intents.engine import CompiledFlow, Session, _Reply
    from kefu.plugins.bot_intents.flows import Transition, _Parser

THEN = ("handoff", "fallback")
DEFAULT_ASK = Response({"en": ("Did you mean: {choices}?",), "zh": ("您是想问：{choices}？",)})  # noqa: RUF001
DEFAULT_GIVE_UP = Response(
    {"en": ("Let me connect you with a colleague.",), "zh": ("我为您转接人工客服。",)}
)
DEFAULT_HANDOFF = Handoff("clarification failed")
_SEPARATOR = {"zh": "；", "": ", "}  # noqa: RUF001
_YES = {
    "y", "yes", "yeah", "yep", "yup", "ok", "okay", "sure", "right", "correct", "exactly",
    "是", "是的", "对", "对的", "嗯", "好", "好的", "没错", "就是",
}  # fmt: skip
_CN_NUMBERS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_TRIM = re.compile(r"^[\s#№(（]+|[\s.。!！?？,，、:：)）]+$")  # noqa: RUF001


@dataclass(frozen=True)
class Clarify:
    """The ``clarify`` block of a flow or a state."""

    min_confidence: float = 0.15
    max_candidates: int = 3
    max_attempts: int = 2
    then: str = "handoff"  # "handoff" | "fallback"
    say: Response | None = None  # "{choices}" is the numbered list of titles
    give_up: Response | None = None  # said before the handoff of ``then: handoff``
    handoff: Handoff | None = None  # default: the fallback's handoff, else DEFAULT_HANDOFF
    line: int = 0


KEYS = {"min_confidence", "max_candidates", "max_attempts", "then", "say", "give_up", "handoff"}


def parse_clarify(p: _Parser, value: Any, where: str, line: int) -> Clarify | bool | None:
    """A ``clarify`` value: a mapping (``{}`` for the defaults), or ``false`` (states only)."""
    if value is False:
        return False
    if value is None or value is True:
        return Clarify(line=line)
    found = p.mapping(value, where, KEYS, line)
    if found is None:
        return None
    line = line_of(found, line)

    def integer(key: str, default: int, lo: int, hi: int) -> int:
        number = found.get(key, default)
        if isinstance(number, bool) or not isinstance(number, int) or not lo <= number <= hi:
            p.fail(found.line_of(key), f"{where}.{key} must be an integer in {lo}..{hi}")
            return default
        return number

    minimum = found.get("min_confidence", 0.15)
    minimum = p.number(minimum, f"{where}.min_confidence", found.line_of("min_confidence"), 0, 1)
    then = found.get("then", "handoff")
    if then not in THEN:
        p.fail(found.line_of("then"), f"{where}.then must be handoff or fallback")
        then = "handoff"

    def response(key: str) -> Response | None:
        if key not in found:
            return None
        return p.response(found[key], f"{where}.{key}", found.line_of(key))

    handoff = None
    if "handoff" in found:
        handoff = p.handoff(found["handoff"], f"{where}.handoff", found.line_of("handoff"))
    return Clarify(
        0.15 if minimum is None else float(minimum),
        integer("max_candidates", 3, 1, 3),
        integer("max_attempts", 2, 1, 10),
        then,
        response("say"),
        response("give_up"),
        handoff,
        line,
    )


def clarify_of(spec: FlowSpec, state: State) -> Clarify | None:
    """The block that applies in ``state``: its own, none (``false``), or the flow's."""
    own = getattr(state, "clarify", None)
    if own is False:
        return None
    return own if isinstance(own, Clarify) else getattr(spec, "clarify", None)


def problems(spec: FlowSpec) -> Iterator[FlowError]:
    """Meaning checks: clarify needs intent transitions and a minimum below the threshold."""
    blocks = [("clarify", spec.clarify)] if isinstance(spec.clarify, Clarify) else []
    blocks += [
        (f"state {s.name!r}.clarify", s.clarify)
        for s in spec.states.values()
        if isinstance(s.clarify, Clarify)
    ]
    transitions = [
        *spec.global_transitions,
        *(t for s in spec.states.values() for t in s.transitions),
    ]
    uses_intents = any(t.kind == "intent" for t in transitions)
    slots = {slot.name for state in spec.states.values() for slot in state.slots}
    for where, block in blocks:
        if not uses_intents:
            yield FlowError(block.line, f"{where}: the flow has no intent transitions to clarify")
        if block.min_confidence >= spec.threshold:
            yield FlowError(
                block.line,
                f"{where}.min_confidence ({block.min_confidence}) must be below the "
                f"threshold ({spec.threshold})",
            )
        for response in (block.say, block.give_up):
            for text in response.texts() if response else ():
                for name in PLACEHOLDER.findall(text):
                    if name != "choices" and name not in slots:
                        yield FlowError(response.line, f"{where}: placeholder {{{name}}} unknown")


# -- at run time -----------------------------------------------------------------------


def title(spec: FlowSpec, intent: str, language: str) -> str:
    """The intent's title in ``language`` (else any language, else its name)."""
    found = spec.intents.get(intent)
    response = getattr(found, "title", None)
    if response is None:
        return intent.replace("_", " ")
    options = response.variants.get(language) or response.variants.get("")
    return (options or next(iter(response.variants.values())))[0]


def _accepting(spec: FlowSpec, state: State, intent: str) -> Transition | None:
    for transition in (*spec.global_transitions, *state.transitions):
        if transition.kind == "intent" and transition.intent == intent:
            return transition
    return None


def _normal(text: str) -> str:
    return " ".join(_TRIM.sub("", text.casefold()).replace("_", " ").split())


def _answer(spec: FlowSpec, candidates: list[str], text: str) -> str | None:
    said = _normal(text)
    if not said:
        return None
    number = said.removeprefix("第").removesuffix("个")
    index = _CN_NUMBERS.get(number)
    if index is None and number.isdigit():
        index = int(number)
    if index is not None:
        return candidates[index - 1] if 1 <= index <= len(candidates) else None
    for intent in candidates:
        titles = {_normal(intent)}
        response = getattr(spec.intents.get(intent), "title", None)
        if response is not None:
            titles |= {_normal(t) for t in response.texts()}
        if said in titles:
            return intent
    if len(candidates) == 1 and said in _YES:
        return candidates[0]
    return None


def resolve(flow: CompiledFlow, session: Session, state: State, text: str) -> Transition | None:
    """The transition a pending clarifying question's answer chooses, else None.

    Clears the pending question; an answer that is none of the choices counts as a miss.
    """
    pending, session.clarify = list(session.clarify), []
    if not pending:
        session.clarify_misses = 0
        return None
    intent = _answer(flow.spec, pending, text)
    transition = None if intent is None else _accepting(flow.spec, state, intent)
    if transition is None:
        session.clarify_misses += 1
        return None
    session.clarify_misses = 0
    return transition


def candidates(flow: CompiledFlow, state: State, text: str, prediction: list) -> list[str]:
    """Intents worth asking about, best first (empty: no clarifying question)."""
    block = clarify_of(flow.spec, state)
    classifier = flow.classifier
    if block is None or classifier is None or not text.strip():
        return []
    if not prediction:
        prediction.append(classifier.predict(text))
    ranking = prediction[0].ranking
    oos = dict(ranking).get(classifier.oos_label, 0.0)
    if ranking and ranking[0][0] == classifier.oos_label and oos >= flow.spec.threshold:
        return []  # the flow's out-of-scope examples won
    in_scope = [(i, c) for i, c in ranking if i != classifier.oos_label][: block.max_candidates]
    if not in_scope or _accepting(flow.spec, state, in_scope[0][0]) is None:
        return []  # the best guess is something this state does not handle
    return [
        intent
        for intent, confidence in in_scope
        if confidence >= block.min_confidence and _accepting(flow.spec, state, intent)
    ]


def ask(flow: CompiledFlow, reply: _Reply, state: State, text: str, prediction: list) -> bool:
    """Ask a clarifying question, or give up after too many; False: not ambiguous."""
    found = candidates(flow, state, text, prediction)
    if not found:
        return False
    block = clarify_of(flow.spec, state)
    assert block is not None
    session = reply.session
    if session.clarify_misses >= block.max_attempts:
        session.clarify_misses = 0
        if block.then == "fallback":
            return False
        reply.say(block.give_up or DEFAULT_GIVE_UP)
        flow._hand_off(reply, block.handoff or flow.spec.fallback.handoff or DEFAULT_HANDOFF)
        return True
    titles = [title(flow.spec, intent, session.language) for intent in found]
    if len(titles) == 1:
        listed = titles[0]
    else:
        separator = _SEPARATOR.get(session.language, _SEPARATOR[""])
        listed = separator.join(f"{n}) {t}" for n, t in enumerate(titles, 1))
    slots = session.slots
    session.slots = {**slots, "choices": listed}  # the question's placeholder, this once
    try:
        reply.say(block.say or DEFAULT_ASK)  # as any reply (variants, when: conditions)
    finally:
        session.slots = slots
    reply.choices = tuple(titles)
    session.clarify = found
    return True
