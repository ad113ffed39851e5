"""Publish a mined FAQ cluster as a new intent with a response: a new flow version.

:func:`add_faq_intent` adds, to a flow's YAML text, the intent (its examples are the
cluster's questions) and a global transition on it that says the response and goes to a
state (default: the state the flow waits in after its greeting, see :func:`resume_state`).
The text is edited in place, so the file's comments and layout stay; when the layout
cannot be edited safely (flow-style sections) the document is written out again whole.
Either way the result is parsed back and compared with the intended document.

:func:`publish_faq` checks the request against the active version (the intent name must
be new, the target state must exist), publishes the new text through the flow registry
(checked and compiled like any version; a refused one changes nothing) and, when the
active version was the flow file's current content, writes the file atomically so the
next edit of the file starts from it. The version is also kept in the registry's store,
so it survives a restart either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from kefu.plugins.bot_intents.flow_yaml import FlowError, LineDict, LineList, load_yaml
from kefu.plugins.bot_intents.flows import FlowSpec

log = logging.getLogger(__name__)

INTENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_EXAMPLES = 200
MAX_EXAMPLE_CHARS = 500
MAX_RESPONSE_CHARS = 4000


class PublishError(Exception):
    """A publication refused before or by the flow checks (``status``, ``code``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _scalar(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(text, ensure_ascii=False)


def _response(value: str | dict[str, str]) -> str:
    if isinstance(value, str):
        return _scalar(value)
    return "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items()) + "}"


def resume_state(spec: FlowSpec) -> str:
    """Where the dialogue waits after the greeting: from ``start``, follow ``next`` through
    states that only talk (no transitions, slots, action, end or handoff)."""
    name = spec.start
    for _ in range(32):
        state = spec.states.get(name)
        if state is None or state.next is None:
            break
        if state.transitions or state.slots or state.action or state.end or state.handoff:
            break
        name = state.next
    return name


def _section_end(lines: list[str], start: int, top_lines: list[int]) -> int:
    """Index (0-based) after the last content line of the top-level section at ``start``."""
    later = [n - 1 for n in top_lines if n - 1 > start]
    end = min(later) if later else len(lines)
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return end


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def add_faq_intent(
    text: str,
    intent: str,
    examples: list[str],
    response: str | dict[str, str],
    goto: str,
    min_confidence: float | None = None,
) -> str:
    """``text`` with the intent and its global transition added (see the module docstring).

    :raises FlowError: ``text`` is not a flow document.
    """
    top = load_yaml(text)
    if not isinstance(top, LineDict):
        raise FlowError(1, "the flow must be a mapping")
    wanted = _plain(top)
    wanted.setdefault("intents", {})
    wanted["intents"] = {**(wanted["intents"] or {}), intent: {"examples": list(examples)}}
    transition: dict[str, Any] = {"intent": intent}
    if min_confidence is not None:
        transition["min_confidence"] = min_confidence
    transition["say"] = response
    transition["goto"] = goto
    wanted["global"] = [*(wanted.get("global") or []), transition]
    try:
        edited = _edit_in_place(text, top, intent, examples, response, goto, min_confidence)
        if _plain(load_yaml(edited)) == wanted:
            return edited
    except (FlowError, ValueError, IndexError):
        pass
    log.warning("bot flow: FAQ intent %s: the file is written out again whole", intent)
    header = "# Written again whole by kefu's FAQ publishing (comments could not be kept).\n"
    return header + yaml.safe_dump(wanted, allow_unicode=True, sort_keys=False, width=100)


def _edit_in_place(
    text: str,
    top: LineDict,
    intent: str,
    examples: list[str],
    response: str | dict[str, str],
    goto: str,
    min_confidence: float | None,
) -> str:
    lines = text.splitlines()
    top_lines = sorted(top.key_lines.values())
    insertions: list[tuple[int, list[str]]] = []  # (index to insert before, lines)

    intents = top.get("intents")
    if isinstance(intents, LineDict) and intents:
        first = lines[min(intents.key_lines.values()) - 1]
        pad = " " * _indent(first)
        if not pad or first.lstrip().startswith("{"):
            raise ValueError("flow-style intents")
        block = [f"{pad}{intent}:", f"{pad}  examples:"]
        block += [f"{pad}    - {_scalar(e)}" for e in examples]
        insertions.append((_section_end(lines, top.line_of("intents") - 1, top_lines), block))
    elif "intents" in top:
        raise ValueError("empty or flow-style intents")
    else:
        block = ["", "intents:", f"  {intent}:", "    examples:"]
        insertions.append((len(lines), block + [f"      - {_scalar(e)}" for e in examples]))

    rules = top.get("global")
    if isinstance(rules, LineList) and rules:
        first = lines[rules.line_of(0) - 1]
        dash = first.index("-")
        if first[:dash].strip():
            raise ValueError("flow-style global")
        pad = " " * dash
        at = _section_end(lines, top.line_of("global") - 1, top_lines)
    elif "global" in top:
        raise ValueError("empty or flow-style global")
    else:
        pad, at = "  ", len(lines)
        insertions.append((at, ["", "global:"]))
    block = [f"{pad}- intent: {intent}"]
    if min_confidence is not None:
        block.append(f"{pad}  min_confidence: {min_confidence}")
    block += [f"{pad}  say: {_response(response)}", f"{pad}  goto: {goto}"]
    insertions.append((at, block))
    for index, block in sorted(insertions, key=lambda item: item[0], reverse=True):
        lines[index:index] = block
    return "\n".join(lines) + "\n"


def _clean_examples(examples: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for example in examples:
        text = " ".join(str(example).split())[:MAX_EXAMPLE_CHARS]
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out[:MAX_EXAMPLES]


def _clean_response(response: str | dict[str, str]) -> str | dict[str, str]:
    if isinstance(response, str):
        cleaned: str | dict[str, str] = response.strip()
    elif isinstance(response, dict):
        cleaned = {str(k).strip(): str(v).strip() for k, v in response.items() if str(v).strip()}
    else:
        cleaned = ""
    if not cleaned:
        raise PublishError(400, "invalid_response", "the response is empty")
    texts = [cleaned] if isinstance(cleaned, str) else list(cleaned.values())
    if any(len(t) > MAX_RESPONSE_CHARS for t in texts):
        limit = f"a response has at most {MAX_RESPONSE_CHARS} characters"
        raise PublishError(400, "invalid_response", limit)
    return cleaned


async def publish_faq(
    service: Any,
    site_id: str,
    *,
    intent: str,
    examples: list[str],
    response: str | dict[str, str],
    flow_id: str | None = None,
    goto: str | None = None,
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """Publish a new version of the site's flow with the FAQ intent; see the module docstring.

    :raises PublishError: 404 no such flow for the site, 409 the intent exists or the
        active version's content is missing, 400 a bad request or a version the checks refused.
    """
    from kefu.plugins.bot_intents.store import write_atomic
    from kefu.plugins.bot_intents.versions import FlowRejected

    registry = service.registry
    if flow_id is not None:
        flow = registry.active_flow(flow_id)
        if flow is not None and not flow.spec.serves(site_id):
            flow = None
    else:
        flow = registry.for_site(site_id)
    if flow is None:
        raise PublishError(404, "no_flow", "no active flow serves this site" if flow_id is None
                           else f"no active flow {flow_id!r} serves this site")  # fmt: skip
    if not INTENT_NAME.fullmatch(intent or ""):
        raise PublishError(
            400, "invalid_intent",
            "an intent name starts with a letter and has letters, digits, '_', '.', '-' (<= 64)",
        )  # fmt: skip
    if intent in flow.spec.intents:
        raise PublishError(
            409, "intent_exists",
            f"flow {flow.id!r} already has an intent {intent!r}; choose another name",
        )  # fmt: skip
    examples = _clean_examples(examples)
    if not examples:
        raise PublishError(400, "no_examples", "the intent needs at least one example question")
    response = _clean_response(response)
    target = goto or resume_state(flow.spec)
    if target not in flow.spec.states:
        known = ", ".join(sorted(flow.spec.states))
        message = f"no state {target!r} in flow {flow.id!r} (states: {known})"
        raise PublishError(400, "unknown_state", message)
    base = await registry.source_text(flow.sha256)
    if base is None:
        message = f"the content of {flow.id}@{flow.sha256[:12]} is not kept"
        raise PublishError(409, "no_source", message)
    try:
        text = add_faq_intent(
            base.decode("utf-8"), intent, examples, response, target, min_confidence
        )
    except FlowError as exc:
        message = f"{flow.source}:{exc.line}: {exc.message}"
        raise PublishError(400, "flow_rejected", message) from None
    data = text.encode("utf-8")
    # Write the file back only when it holds the active version: an edit waiting in the
    # file (refused, or not yet read) or a rolled-back file must not be overwritten.
    path = flow.source if flow.source in getattr(service, "paths", ()) else None
    if path is not None:
        try:
            current = await asyncio.to_thread(Path(path).read_bytes)
        except OSError:
            current = None
        if current is None or hashlib.sha256(current).hexdigest() != flow.sha256:
            path = None
    source = path or f"faq:{flow.id}"
    try:
        published = await registry.publish(data, source, by="faq")
    except FlowRejected as exc:
        raise PublishError(400, "flow_rejected", str(exc)) from None
    written = False
    if path is not None:
        try:
            await asyncio.to_thread(write_atomic, Path(path), data)
            written = True
        except OSError as exc:
            log.error("bot flow %s: FAQ version active, the file not written: %s", path, exc)
    note = f", {path} written" if written else ""
    log.info(
        "bot flow %s: FAQ intent %s published as %s (%d examples)%s",
        flow.id, intent, published.sha256[:12], len(examples), note,
    )  # fmt: skip
    return {
        "flow_id": published.id,
        "sha256": published.sha256,
        "previous": flow.sha256,
        "intent": intent,
        "examples": len(examples),
        "goto": target,
        "file": path if written else None,
        "source": source,
    }
