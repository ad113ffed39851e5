"""Meaning checks of a flow and the ``file:line: message`` report of ``kefu bot validate``.

:func:`check_flow` reads bytes and returns the :class:`FlowSpec` with compiled regexes,
or every problem found: invalid YAML, a file over the size cap, structure errors, then
targets that do not exist, unknown intents and actions, placeholders that no slot fills,
unreachable states, states from which neither a terminal state nor a handoff can be
reached, and regexes that do not compile, are too long or nest unbounded quantifiers
(the classic catastrophic-backtracking shape, such as ``(a+)+``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from re import _constants as sre_constants
from re import _parser as sre_parse

from kefu.plugins.bot_intents.clarify import problems as clarify_problems
from kefu.plugins.bot_intents.flow_yaml import FlowError, load_yaml
from kefu.plugins.bot_intents.flows import PLACEHOLDER, FlowSpec, Response, Transition, parse_flow
from kefu.plugins.bot_intents.strategy import flow_problems as dynamic_problems

#: Longest regex a flow may use.
MAX_REGEX_CHARS = 200
_UNBOUNDED_ABOVE = 16  # a repeat allowing more than this many counts as unbounded


@dataclass(frozen=True)
class CheckedFlow:
    """A flow that passed every check, with its regexes compiled by source text."""

    spec: FlowSpec
    patterns: dict[str, re.Pattern]


def check_flow(
    data: bytes | str,
    actions: Collection[str] | None = None,
    known: Mapping[str, set[str]] | None = None,
) -> tuple[CheckedFlow | None, list[FlowError]]:
    """Parse and check a flow file's content; ``actions`` None skips the action-name check,
    ``known`` None the campaign and segment names of ``when:`` (``{"campaign": {...}}``)."""
    try:
        document = load_yaml(data)
    except FlowError as exc:
        return None, [exc]
    spec, problems = parse_flow(document)
    if spec is None:
        return None, problems
    patterns: dict[str, re.Pattern] = {}
    problems = list(_meaning(spec, actions, patterns))
    problems.extend(dynamic_problems(spec, _responses(spec), known))
    problems.sort(key=lambda p: p.line)
    return (None, problems) if problems else (CheckedFlow(spec, patterns), [])


def format_problems(path: str, problems: list[FlowError]) -> str:
    """``path:line: message`` lines."""
    return "\n".join(f"{path}:{p.line}: {p.message}" for p in problems)


def regex_problem(pattern: str) -> str | None:
    """Why a flow may not use ``pattern``, or None when it may."""
    if len(pattern) > MAX_REGEX_CHARS:
        return f"regex is {len(pattern)} characters; the limit is {MAX_REGEX_CHARS}"
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        return f"regex does not compile: {exc}"
    if _nested_unbounded(parsed.data if hasattr(parsed, "data") else list(parsed), False):
        return (
            f"regex {pattern!r} nests unbounded quantifiers (catastrophic backtracking); "
            "rewrite it without a repeated group that itself repeats"
        )
    return None


def _nested_unbounded(items, inside: bool) -> bool:
    for op, av in items:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            _low, high, sub = av
            unbounded = high is sre_constants.MAXREPEAT or high > _UNBOUNDED_ABOVE
            if inside and unbounded:
                return True
            if _nested_unbounded(sub, inside or unbounded):
                return True
        elif op == sre_constants.SUBPATTERN:
            if _nested_unbounded(av[-1], inside):
                return True
        elif op == sre_constants.BRANCH:
            if any(_nested_unbounded(branch, inside) for branch in av[1]):
                return True
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if _nested_unbounded(av[1], inside):
                return True
        elif op == sre_constants.ATOMIC_GROUP:
            if _nested_unbounded(av, inside):
                return True
    return False


def _all_transitions(spec: FlowSpec) -> Iterator[tuple[str | None, Transition]]:
    for transition in spec.global_transitions:
        yield None, transition
    for state in spec.states.values():
        for transition in state.transitions:
            yield state.name, transition


def _responses(spec: FlowSpec) -> Iterator[tuple[str | None, Response]]:
    if spec.fallback.say:
        yield None, spec.fallback.say
    for state_name, transition in _all_transitions(spec):
        if transition.say:
            yield state_name, transition.say
    for state in spec.states.values():
        for response in (state.say, state.then, *(s.prompt for s in state.slots)):
            if response is not None:
                yield state.name, response


def _meaning(
    spec: FlowSpec, actions: Collection[str] | None, patterns: dict[str, re.Pattern]
) -> Iterator[FlowError]:
    states = spec.states
    if spec.start not in states:
        yield FlowError(0, f"start: no state named {spec.start!r}")
        return

    def target(name: str | None, line: int, where: str) -> Iterator[FlowError]:
        if name is not None and name not in states:
            known = ", ".join(sorted(states))
            yield FlowError(line, f"{where}: no state named {name!r} (states: {known})")

    uses_intents = False
    for state_name, t in _all_transitions(spec):
        where = f"state {state_name!r}" if state_name else "global transition"
        yield from target(t.goto, t.line, where)
        if t.kind == "intent":
            uses_intents = True
            if t.intent not in spec.intents:
                known = ", ".join(sorted(spec.intents)) or "none declared"
                yield FlowError(t.line, f"{where}: unknown intent {t.intent!r} (intents: {known})")
        if t.kind == "regex" and t.regex is not None:
            yield from _pattern(t.regex, t.line, patterns)
    if uses_intents and len(spec.intents) < 2:
        yield FlowError(0, "intent transitions need at least two declared intents to classify")
    slot_names = {slot.name for state in states.values() for slot in state.slots}
    for state in states.values():
        where = f"state {state.name!r}"
        yield from target(state.next, state.line, f"{where}.next")
        if state.end and (state.next or state.handoff):
            yield FlowError(state.line, f"{where}: an end state has no next and no handoff")
        if state.handoff and (state.next or state.slots or state.transitions):
            yield FlowError(state.line, f"{where}: a handoff state has no next, slots or on")
        if state.action is not None and actions is not None and state.action not in actions:
            known = ", ".join(sorted(actions)) or "none installed"
            yield FlowError(state.line, f"{where}: unknown action {state.action!r} ({known})")
        for slot in state.slots:
            yield from target(slot.on_fail_goto, slot.line, f"{where} slot {slot.name!r}")
            if slot.regex is not None:
                yield from _pattern(slot.regex, slot.line, patterns)
    for state_name, response in _responses(spec):
        acted = state_name is not None and states[state_name].action is not None
        for text in response.texts():
            for name in PLACEHOLDER.findall(text):
                if name not in slot_names and not acted:
                    yield FlowError(
                        response.line, f"placeholder {{{name}}} is not a slot of this flow"
                    )
    yield from clarify_problems(spec)
    yield from _graph(spec)


def _pattern(pattern: str, line: int, patterns: dict[str, re.Pattern]) -> Iterator[FlowError]:
    problem = regex_problem(pattern)
    if problem is not None:
        yield FlowError(line, problem)
    else:
        patterns[pattern] = re.compile(pattern, re.IGNORECASE)


def _graph(spec: FlowSpec) -> Iterator[FlowError]:
    states = spec.states
    edges: dict[str, set[str]] = {name: set() for name in states}
    exits: set[str] = set()
    global_goto = {t.goto for t in spec.global_transitions if t.goto in states}
    everywhere_exit = spec.fallback.handoff is not None or any(
        t.handoff for t in spec.global_transitions
    )
    for state in states.values():
        out = edges[state.name]
        out |= global_goto
        out |= {t.goto for t in state.transitions if t.goto in states}
        out |= {s.on_fail_goto for s in state.slots if s.on_fail_goto in states}
        if state.next in states:
            out.add(state.next)
        if (
            state.end
            or state.handoff
            or everywhere_exit
            or any(t.handoff for t in state.transitions)
            or any(s.on_fail_handoff for s in state.slots)
        ):
            exits.add(state.name)
    reached, todo = {spec.start}, [spec.start]
    while todo:
        for nxt in edges[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    for name in states:
        if name not in reached:
            yield FlowError(states[name].line, f"state {name!r} is unreachable from {spec.start!r}")
    finishing = set(exits)
    changed = True
    while changed:
        changed = False
        for name, out in edges.items():
            if name not in finishing and out & finishing:
                finishing.add(name)
                changed = True
    for name in states:
        if name not in finishing:
            yield FlowError(
                states[name].line,
                f"state {name!r} can reach neither an end state nor a handoff "
                "(the dialogue could never finish)",
            )
