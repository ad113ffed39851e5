"""Bounds on JSON that clients send: how deep it may nest.

orjson parses documents nested up to 1,024 levels but serialises at most 254, so a
deeply nested value accepted from a client could fail later, far from its source (a
server error when it is stored, echoed or measured). Every entry point that parses
client JSON (REST bodies, the auth endpoints, gateway frames) refuses a document
nested deeper than :data:`MAX_DEPTH` with a client error instead.
"""

from __future__ import annotations

from typing import Any

#: Deepest nesting accepted from a client (an object or array counts one level).
MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests objects or arrays deeper than ``limit`` levels."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False
