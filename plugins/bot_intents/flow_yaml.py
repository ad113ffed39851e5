"""Reading flow files: YAML with line numbers kept, a size cap, no aliases, no custom tags.

:func:`load_yaml` returns plain dicts, lists and scalars, except that every mapping is a
:class:`LineDict` and every sequence a :class:`LineList` remembering the line of the node
and of each key or item, so later checks can report ``file:line: message``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Flow files larger than this are refused before parsing.
MAX_FLOW_BYTES = 1024 * 1024


class FlowError(Exception):
    """One problem in a flow file, at a 1-based line (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class LineDict(dict):
    """A mapping that knows its line and the line of each key."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence that knows its line and the line of each item."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def line_of(value: Any, default: int = 0) -> int:
    """The line a loaded value started on, when it is a mapping or a sequence."""
    return getattr(value, "line", default) or default


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps lines and refuses aliases (no entity-expansion bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise FlowError(event.start_mark.line + 1, "aliases (*name) are not allowed in flows")
        return super().compose_node(parent, index)


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise FlowError(key_node.start_mark.line + 1, "merge keys (<<) are not allowed")
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise FlowError(line, "mapping keys must be plain scalars")
        if key in result:
            raise FlowError(line, f"duplicate key {key!r} (first at line {result.key_lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList()
    result.line = node.start_mark.line + 1
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)
    return result


# YAML 1.2 booleans: only true/false. YAML 1.1 would read the key ``on`` (transitions)
# and answers such as ``no`` as booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load_yaml(data: bytes | str) -> Any:
    """Parse one YAML document; :class:`FlowError` for a size, syntax or structure problem."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_FLOW_BYTES:
        raise FlowError(
            1, f"the file is {len(raw):,} bytes; a flow may have at most {MAX_FLOW_BYTES:,}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlowError(1, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except FlowError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise FlowError(line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise FlowError(1, f"invalid YAML: {exc}") from None
