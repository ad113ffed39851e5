"""The flow DSL: parse a loaded YAML document into an immutable :class:`FlowSpec`.

Structure problems (missing or unknown keys, wrong types) are collected as
:class:`~kefu.plugins.bot_intents.flow_yaml.FlowError` with their line; the meaning
(targets, reachability, regexes, intents) is checked by
:mod:`kefu.plugins.bot_intents.validate`. ``docs/bot.md`` is the DSL reference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kefu.plugins.bot_intents.experiments import Experiment, parse_experiment
from kefu.plugins.bot_intents.flow_yaml import FlowError, LineDict, line_of
from kefu.plugins.bot_intents.strategy import Condition, ConditionError, parse_condition

#: The DSL versions this engine reads (the file's ``dsl`` key).
DSL_VERSIONS = (1,)
PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Case:
    """A reply variant with ``when:`` conditions and/or an ``experiment`` (docs/bot.md)."""

    when: Condition | None = None
    response: Response | None = None  # the text (None for an experiment)
    experiment: str | None = None
    arms: Mapping[str, Response] = field(default_factory=dict)  # variant name -> text
    line: int = 0


@dataclass(frozen=True)
class Response:
    """What the bot says: variants, per language (``""`` = any language).

    With ``cases`` (dynamic replies, :mod:`.strategy`), the first case whose ``when``
    holds is said; ``variants`` are then the unconditional defaults (possibly none).
    """

    variants: Mapping[str, tuple[str, ...]]
    line: int = 0
    cases: tuple[Case, ...] = ()

    def pick(self, language: str, salt: str, values: Mapping[str, Any]) -> str:
        """One variant (deterministic for ``salt``) with ``{slot}`` placeholders filled."""
        options = (
            self.variants.get(language)
            or self.variants.get("")
            or next(iter(self.variants.values()))
        )
        digest = hashlib.blake2b(salt.encode("utf-8"), digest_size=4).digest()
        text = options[int.from_bytes(digest, "big") % len(options)]
        return PLACEHOLDER.sub(lambda m: str(values.get(m[1], m[0])), text)

    def texts(self) -> list[str]:
        found = [text for variants in self.variants.values() for text in variants]
        for case in self.cases:
            for response in (case.response, *case.arms.values()):
                found.extend(response.texts() if response is not None else ())
        return found


@dataclass(frozen=True)
class Handoff:
    """Hand the conversation to people: an optional department (queue) and a reason."""

    reason: str
    department: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Transition:
    """``on`` one trigger (intent, keyword or regex), go to a state or hand off."""

    kind: str  # "intent" | "keyword" | "regex"
    intent: str | None = None
    min_confidence: float | None = None  # None: the flow's threshold
    keywords: tuple[str, ...] = ()
    regex: str | None = None
    goto: str | None = None
    handoff: Handoff | None = None
    say: Response | None = None
    line: int = 0


@dataclass(frozen=True)
class Slot:
    """A value to collect: asked with ``prompt``, taken whole or by ``regex`` group 1."""

    name: str
    prompt: Response
    regex: str | None = None
    retries: int = 2
    on_fail_goto: str | None = None
    on_fail_handoff: Handoff | None = None
    line: int = 0


@dataclass(frozen=True)
class State:
    name: str
    say: Response | None = None
    slots: tuple[Slot, ...] = ()
    action: str | None = None
    then: Response | None = None
    transitions: tuple[Transition, ...] = ()
    next: str | None = None
    end: bool = False
    handoff: Handoff | None = None
    line: int = 0
    clarify: Any = None  # clarify.Clarify, False (off in this state) or None (the flow's)


@dataclass(frozen=True)
class Fallback:
    """What happens when nothing matches: a reply, and a handoff after ``max_misses``."""

    say: Response | None = None
    max_misses: int = 0  # 0: never hand off
    handoff: Handoff | None = None
    line: int = 0


@dataclass(frozen=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    line: int = 0
    title: Response | None = None  # shown in clarifying questions (clarify.py)


@dataclass(frozen=True)
class FlowSpec:
    """A parsed flow (not yet validated for meaning)."""

    id: str
    dsl: int
    start: str
    sites: tuple[str, ...] = ("*",)
    language: str = "en"
    threshold: float = 0.3
    intents: Mapping[str, Intent] = field(default_factory=dict)
    states: Mapping[str, State] = field(default_factory=dict)
    global_transitions: tuple[Transition, ...] = ()
    fallback: Fallback = field(default_factory=Fallback)
    clarify: Any = None  # clarify.Clarify: ask when the best intent is not confident enough
    experiments: Mapping[str, Experiment] = field(default_factory=dict)

    def serves(self, site_id: str) -> bool:
        return "*" in self.sites or site_id in self.sites


class _Parser:
    """Collects every structure problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[FlowError] = []

    def fail(self, line: int, message: str) -> None:
        self.problems.append(FlowError(line, message))

    def mapping(self, value: Any, where: str, allowed: set[str], line: int) -> LineDict | None:
        if not isinstance(value, LineDict):
            self.fail(line_of(value, line), f"{where} must be a mapping")
            return None
        for key in value:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.fail(value.line_of(key), f"{where}: unknown key {key!r} (expected {expected})")
        return value

    def text(self, value: Any, where: str, line: int, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(line, f"{where} must be a non-empty string")
            return None
        return value

    def number(self, value: Any, where: str, line: int, lo: float, hi: float) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            self.fail(line, f"{where} must be a number in {lo}..{hi}")
            return None
        return value

    def response(self, value: Any, where: str, line: int) -> Response | None:
        line = line_of(value, line)
        if isinstance(value, list) and any(isinstance(item, LineDict) for item in value):
            return self._cases(value, where, line)
        if isinstance(value, LineDict):
            variants = {}
            for lang, texts in value.items():
                found = self._variants(texts, f"{where}.{lang}", value.line_of(lang))
                if found and isinstance(lang, str):
                    variants[lang] = found
            if not variants:
                self.fail(line, f"{where} needs at least one language with text")
                return None
            return Response(variants, line)
        found = self._variants(value, where, line)
        return Response({"": found}, line) if found else None

    def _cases(self, value: Any, where: str, line: int) -> Response | None:
        """Dynamic variants: ``- when: {...}`` / ``text:`` / ``experiment:`` + ``variants:``."""
        cases: list[Case] = []
        defaults: dict[str, tuple[str, ...]] = {}
        unconditional_experiment = False
        for i, item in enumerate(value):
            at, here = value.line_of(i), f"{where}[{i}]"
            allowed = {"when", "text", "experiment", "variants"}
            found = self.mapping(item, here, allowed, at)
            if found is None:
                continue
            when = None
            if "when" in found:
                try:
                    when = parse_condition(found["when"], found.line_of("when"))
                except ConditionError as exc:
                    self.fail(found.line_of("when"), f"{here}.{exc}")
                    continue
            if ("text" in found) == ("experiment" in found):
                self.fail(found.line, f"{here} needs exactly one of text, experiment")
                continue
            if "text" in found:
                if "variants" in found:
                    self.fail(found.line_of("variants"), f"{here}: variants go with experiment")
                text = self.response(found["text"], f"{here}.text", found.line_of("text"))
                if text is None:
                    continue
                if when is None and not text.cases:
                    for lang, texts in text.variants.items():
                        defaults[lang] = defaults.get(lang, ()) + texts
                else:
                    cases.append(Case(when, text, line=found.line))
                continue
            exp = self.text(found["experiment"], f"{here}.experiment", found.line_of("experiment"))
            arms_raw = found.get("variants")
            if not isinstance(arms_raw, LineDict) or not arms_raw:
                self.fail(found.line, f"{here}.variants: a mapping of variant names to texts")
                continue
            arms = {}
            for name, body in arms_raw.items():
                arm = self.response(body, f"{here}.variants.{name}", arms_raw.line_of(name))
                if arm is not None:
                    arms[str(name)] = arm
            if exp is None or len(arms) != len(arms_raw):
                continue
            unconditional_experiment |= when is None
            cases.append(Case(when, None, exp, arms, found.line))
        if unconditional_experiment and defaults:
            self.fail(line, f"{where}: an experiment without when: leaves no room for a default")
        if not cases and not defaults:
            self.fail(line, f"{where} needs at least one variant")
            return None
        return Response(defaults, line, tuple(cases))

    def _variants(self, value: Any, where: str, line: int) -> tuple[str, ...] | None:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(t, str) and t.strip() for t in items):
            self.fail(line, f"{where} must be a text or a list of texts")
            return None
        return tuple(items)

    def handoff(self, value: Any, where: str, line: int) -> Handoff | None:
        if value is True:
            return Handoff("bot_handoff", None, line)
        found = self.mapping(value, where, {"department", "queue", "reason"}, line)
        if found is None:
            return None
        reason = self.text(found.get("reason"), f"{where}.reason", found.line_of("reason"))
        department = found.get("department", found.get("queue"))
        if department is not None:
            department = self.text(department, f"{where}.department", found.line)
        return Handoff(reason or "bot_handoff", department, found.line)

    def transition(self, value: Any, where: str, line: int) -> Transition | None:
        allowed = {"intent", "min_confidence", "keyword", "regex", "goto", "handoff", "say"}
        found = self.mapping(value, where, allowed, line)
        if found is None:
            return None
        line = found.line
        triggers = [k for k in ("intent", "keyword", "regex") if k in found]
        targets = [k for k in ("goto", "handoff") if k in found]
        if len(triggers) != 1:
            self.fail(line, f"{where} needs exactly one of intent, keyword, regex")
            return None
        if len(targets) != 1:
            self.fail(line, f"{where} needs exactly one of goto, handoff")
            return None
        kind, goto, keywords, min_conf = triggers[0], None, (), None
        if kind == "keyword":
            raw = found["keyword"]
            raw = raw if isinstance(raw, list) else [raw]
            if not raw or not all(isinstance(k, str) and k.strip() for k in raw):
                self.fail(found.line_of("keyword"), f"{where}.keyword: a text or list of texts")
            keywords = tuple(str(k).casefold() for k in raw)
        if "min_confidence" in found:
            at = found.line_of("min_confidence")
            min_conf = self.number(found["min_confidence"], f"{where}.min_confidence", at, 0, 1)
        if "goto" in found:
            goto = self.text(found["goto"], f"{where}.goto", found.line_of("goto"))
        handoff = None
        if "handoff" in found:
            handoff = self.handoff(found["handoff"], f"{where}.handoff", found.line_of("handoff"))
        say = (
            self.response(found["say"], f"{where}.say", found.line_of("say"))
            if ("say" in found)
            else None
        )
        intent = found.get("intent")
        regex = found.get("regex")
        if kind == "intent":
            intent = self.text(intent, f"{where}.intent", found.line_of("intent"))
        if kind == "regex":
            regex = self.text(regex, f"{where}.regex", found.line_of("regex"))
        return Transition(kind, intent, min_conf, keywords, regex, goto, handoff, say, line)

    def transitions(self, value: Any, where: str, line: int) -> tuple[Transition, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(line_of(value, line), f"{where} must be a list of transitions")
            return ()
        found = (
            self.transition(item, f"{where}[{i}]", value.line_of(i)) for i, item in enumerate(value)
        )
        return tuple(t for t in found if t is not None)

    def slot(self, value: Any, where: str, line: int) -> Slot | None:
        allowed = {"name", "prompt", "regex", "retries", "on_fail"}
        found = self.mapping(value, where, allowed, line)
        if found is None:
            return None
        name = self.text(found.get("name"), f"{where}.name", found.line)
        prompt = self.response(found.get("prompt"), f"{where}.prompt", found.line_of("prompt"))
        retries = found.get("retries", 2)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            self.fail(found.line_of("retries"), f"{where}.retries must be an integer in 0..10")
            retries = 2
        goto = handoff = None
        on_fail = found.get("on_fail")
        if on_fail is not None:
            fail = self.mapping(on_fail, f"{where}.on_fail", {"goto", "handoff"}, line_of(on_fail))
            if fail is not None and len(fail) != 1:
                self.fail(fail.line, f"{where}.on_fail needs exactly one of goto, handoff")
            elif fail is not None and "goto" in fail:
                goto = self.text(fail["goto"], f"{where}.on_fail.goto", fail.line)
            elif fail is not None:
                handoff = self.handoff(fail["handoff"], f"{where}.on_fail.handoff", fail.line)
        regex = found.get("regex")
        if regex is not None:
            regex = self.text(regex, f"{where}.regex", found.line_of("regex"))
        if name is None or prompt is None:
            return None
        return Slot(name, prompt, regex, retries, goto, handoff, found.line)

    def state(self, name: str, value: Any, line: int) -> State | None:
        where = f"state {name!r}"
        allowed = {"say", "slots", "action", "then", "on", "next", "end", "handoff", "clarify"}
        found = self.mapping(value, where, allowed, line)
        if found is None:
            return None

        def response(key: str) -> Response | None:
            if key not in found:
                return None
            return self.response(found[key], f"{where}.{key}", found.line_of(key))

        slots_raw = found.get("slots") or []
        slots: list[Slot] = []
        if not isinstance(slots_raw, list):
            self.fail(found.line_of("slots"), f"{where}.slots must be a list")
        else:
            for i, item in enumerate(slots_raw):
                slot = self.slot(item, f"{where}.slots[{i}]", slots_raw.line_of(i))
                if slot is not None:
                    slots.append(slot)
        action = found.get("action")
        if action is not None:
            action = self.text(action, f"{where}.action", found.line_of("action"))
        nxt = found.get("next")
        if nxt is not None:
            nxt = self.text(nxt, f"{where}.next", found.line_of("next"))
        end = found.get("end", False)
        if not isinstance(end, bool):
            self.fail(found.line_of("end"), f"{where}.end must be true or false")
            end = False
        handoff = None
        if "handoff" in found:
            handoff = self.handoff(found["handoff"], f"{where}.handoff", found.line_of("handoff"))
        transitions = self.transitions(found.get("on"), f"{where}.on", found.line_of("on"))
        return State(
            name,
            response("say"),
            tuple(slots),
            action,
            response("then"),
            transitions,
            nxt,
            end,
            handoff,
            line,
            self.clarify(found, where),
        )

    def clarify(self, found: LineDict, where: str) -> Any:
        if "clarify" not in found:
            return None
        from kefu.plugins.bot_intents.clarify import parse_clarify

        name = f"{where}.clarify" if where else "clarify"
        return parse_clarify(self, found["clarify"], name, found.line_of("clarify"))


TOP_KEYS = {
    "dsl", "id", "sites", "language", "threshold", "intents", "start", "states", "global",
    "fallback", "clarify", "experiments",
}  # fmt: skip


def parse_flow(document: Any) -> tuple[FlowSpec | None, list[FlowError]]:
    """Structure of a loaded flow document; the spec is None when a required part is missing."""
    p = _Parser()
    top = p.mapping(document, "the flow", TOP_KEYS, 1)
    if top is None:
        return None, p.problems
    dsl = top.get("dsl")
    if dsl not in DSL_VERSIONS:
        p.fail(top.line_of("dsl"), f"dsl: this engine reads versions {DSL_VERSIONS}, got {dsl!r}")
    flow_id = p.text(top.get("id"), "id", top.line_of("id"))
    if flow_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", flow_id):
        p.fail(top.line_of("id"), "id: letters, digits, '_', '.', '-' (at most 64)")
    start = p.text(top.get("start"), "start", top.line_of("start"))
    sites = top.get("sites", ["*"])
    if not isinstance(sites, list) or not all(isinstance(s, str) and s for s in sites):
        p.fail(top.line_of("sites"), 'sites must be a list of site ids (or ["*"])')
        sites = ["*"]
    language = top.get("language", "en")
    if not isinstance(language, str):
        p.fail(top.line_of("language"), "language must be a language code such as en or zh")
    threshold = p.number(top.get("threshold", 0.3), "threshold", top.line_of("threshold"), 0, 1)
    intents: dict[str, Intent] = {}
    raw_intents = top.get("intents") or LineDict()
    if not isinstance(raw_intents, LineDict):
        p.fail(top.line_of("intents"), "intents must be a mapping of intent names to examples")
    else:
        for name, body in raw_intents.items():
            at = raw_intents.line_of(name)
            where = f"intent {name!r}"
            found = p.mapping(body, where, {"examples", "title"}, at)
            examples = found.get("examples") if found is not None else None
            if (
                not isinstance(examples, list)
                or not examples
                or not all(isinstance(e, str) and e.strip() for e in examples)
            ):
                p.fail(at, f"{where} needs examples: a list of utterances")
                continue
            title = found.get("title")
            if title is not None:
                title = p.response(title, f"{where}.title", found.line_of("title"))
            intents[str(name)] = Intent(str(name), tuple(examples), at, title)
    states: dict[str, State] = {}
    raw_states = top.get("states")
    if not isinstance(raw_states, LineDict) or not raw_states:
        p.fail(top.line_of("states"), "states must be a mapping of state names to states")
    else:
        for name, body in raw_states.items():
            state = p.state(str(name), body, raw_states.line_of(name))
            if state is not None:
                states[str(name)] = state
    global_transitions = p.transitions(top.get("global"), "global", top.line_of("global"))
    experiments: dict[str, Experiment] = {}
    raw_experiments = top.get("experiments") or LineDict()
    if not isinstance(raw_experiments, LineDict):
        p.fail(top.line_of("experiments"), "experiments must be a mapping of ids to experiments")
    else:
        for exp_id, body in raw_experiments.items():
            at = raw_experiments.line_of(exp_id)
            experiment, found_problems = parse_experiment(exp_id, body, at)
            for message in found_problems:
                p.fail(at, message)
            if experiment is not None:
                experiments[experiment.id] = experiment
    clarify = p.clarify(top, "")
    if clarify is False:
        p.fail(top.line_of("clarify"), "clarify: false is for states; omit it at the top")
    fallback = Fallback()
    if "fallback" in top:
        found = p.mapping(
            top["fallback"], "fallback", {"say", "max_misses", "handoff"}, top.line_of("fallback")
        )
        if found is not None:
            say = (
                p.response(found["say"], "fallback.say", found.line_of("say"))
                if ("say" in found)
                else None
            )
            misses = found.get("max_misses", 0)
            if isinstance(misses, bool) or not isinstance(misses, int) or not 0 <= misses <= 100:
                p.fail(found.line_of("max_misses"), "fallback.max_misses: an integer in 0..100")
                misses = 0
            handoff = None
            if "handoff" in found:
                at = found.line_of("handoff")
                handoff = p.handoff(found["handoff"], "fallback.handoff", at)
            if handoff is not None and not misses:
                p.fail(found.line, "fallback.handoff needs max_misses (hand off after N misses)")
            fallback = Fallback(say, misses, handoff, found.line)
    if p.problems or flow_id is None or start is None:
        return None, p.problems
    spec = FlowSpec(
        id=flow_id,
        dsl=int(dsl),
        start=start,
        sites=tuple(sites),
        language=language if isinstance(language, str) else "en",
        threshold=float(threshold or 0.0),
        intents=intents,
        states=states,
        global_transitions=global_transitions,
        fallback=fallback,
        clarify=clarify or None,
        experiments=experiments,
    )
    return spec, []
