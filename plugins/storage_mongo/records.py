"""Records as MongoDB documents: the dataclass fields, plus ``email_key`` for agents."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from kefu.core.domain import RESOLVED, Agent, Conversation
from kefu.core.storage import email_key

R = TypeVar("R")


def to_doc(record: Any) -> dict[str, Any]:
    """A record as a document (``_id`` is left to the server)."""
    doc = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    if isinstance(record, Agent):
        doc["email_key"] = email_key(record.email)
    elif isinstance(record, Conversation) and record.state != RESOLVED:
        doc["open_visitor"] = record.visitor_id  # the unique "one open per visitor" index
    return doc


def from_doc(cls: type[R], doc: dict[str, Any]) -> R:
    """Build a record; fields a document lacks (written by an older kefu) keep their defaults."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: doc[name] for name in names if name in doc})
