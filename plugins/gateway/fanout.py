"""Fan-out: frames addressed to a conversation's people, carried by the bus to every process.

A frame is serialised once, wrapped in an envelope (a small header naming who
should get it) and published on :data:`ENVELOPE_TOPIC`: broadcast, or, with
several processes, addressed to the nodes that hold its recipients
(:mod:`.directory`). Publishing never waits:
the bus sends everything published in one loop tick as one batch, after the
caller's ack went out. Each process fans an envelope out to the connections it
holds; a delivery lost on the way is covered by the client's resume.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from kefu.core.domain import Conversation, Message
from kefu.plugins.gateway.connection import Connection
from kefu.plugins.gateway.directory import Directory
from kefu.plugins.gateway.frames import ENVELOPE_TOPIC, envelope, message_frame, open_envelope

log = logging.getLogger(__name__)


def _sender(origin: Connection | None) -> str:
    return f"{origin.principal.kind}:{origin.principal.id}" if origin else ""


class Fanout:
    """The ``publish_*`` half of :class:`kefu.core.delivery.Delivery` (mixed into the gateway)."""

    kernel: Any
    registry: Any
    stats: Any
    #: set when frames are addressed to the nodes holding their recipients
    directory: Directory | None = None

    async def publish_conversation(
        self,
        conversation: Conversation,
        frame: dict[str, Any],
        *,
        origin: Connection | None = None,
        seq: int = 0,
        ephemeral: bool = False,
    ) -> None:
        """Deliver to the visitor's connections and every watcher, in every process."""
        await self.fan_conversation(
            conversation,
            orjson.dumps(frame),
            frame.get("op"),
            origin=origin,
            seq=seq,
            ephemeral=ephemeral,
            sent_at=frame.get("created_at", 0),
        )

    async def fan_conversation(
        self,
        conversation: Conversation,
        data: bytes,
        op: str | None,
        *,
        origin: Connection | None = None,
        seq: int = 0,
        ephemeral: bool = False,
        sent_at: float = 0,
    ) -> None:
        """:meth:`publish_conversation` of an already serialised frame."""
        header = {
            "k": "c",
            "op": op or "unknown",
            "t": sent_at if seq else 0,  # delivery latency
            "s": conversation.site_id,
            "c": conversation.id,
            "v": conversation.visitor_id,
            "q": seq,
            "e": ephemeral,
            "o": origin.id if origin else "",
            "p": _sender(origin),
        }
        keys = (f"v:{conversation.site_id}:{conversation.visitor_id}", f"c:{conversation.id}")
        await self._publish(envelope(data, **header), keys)

    async def publish_message(
        self, conversation: Conversation, message: Message, *, origin: Connection | None = None
    ) -> None:
        """Deliver a stored message like a sent one (used by :meth:`deliver` only)."""
        await self.publish_conversation(
            conversation, message_frame(message), origin=origin, seq=message.seq
        )

    async def publish_visitor(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """Deliver to the conversation's visitor only (every tab), not to watching agents."""
        header = {
            "k": "v",
            "op": frame.get("op", "unknown"),
            "s": conversation.site_id,
            "v": conversation.visitor_id,
        }
        keys = (f"v:{conversation.site_id}:{conversation.visitor_id}",)
        await self._publish(envelope(orjson.dumps(frame), **header), keys)

    async def publish_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        agent_ids: list[str] | None = None,
        watchers_of: str | None = None,
        watch: str | None = None,
    ) -> None:
        """Deliver to agent connections of a site, in every process: only those of
        ``agent_ids`` when given, only those watching ``watchers_of`` when given (never
        the visitor: private notes travel this way). Each connection reached starts
        watching ``watch`` when given (an agent given a conversation receives it)."""
        header = {
            "k": "g",
            "op": frame.get("op", "unknown"),
            "s": site_id,
            "a": agent_ids,
            "c": watchers_of,
            "w": watch,
        }
        keys = (f"c:{watchers_of}",) if watchers_of else (f"a:{site_id}",)
        await self._publish(envelope(orjson.dumps(frame), **header), keys)

    async def publish_site_agents(
        self,
        site_id: str,
        frame: dict[str, Any],
        *,
        origin: Connection | None = None,
        ephemeral: bool = False,
    ) -> None:
        """Deliver to every agent connection of a site, in every process (an ephemeral
        frame not to the sender's own connections)."""
        header = {
            "k": "a",
            "op": frame.get("op", "unknown"),
            "s": site_id,
            "e": ephemeral,
            "o": origin.id if origin else "",
            "p": _sender(origin),
        }
        await self._publish(envelope(orjson.dumps(frame), **header), (f"a:{site_id}",))

    async def _publish(self, payload: bytes, keys: tuple[str, ...]) -> None:
        """Broadcast, or with a directory only to the nodes holding one of ``keys``."""
        bus = self.kernel.bus
        if bus is None:
            self._on_bus(ENVELOPE_TOPIC, payload)
            return
        directory = self.directory
        if directory is None:
            bus.publish(ENVELOPE_TOPIC, payload)
            return
        try:
            nodes = await directory.nodes(keys)
        except Exception as exc:  # shared state unreachable (Redis restarting): everyone
            log.warning("fan-out directory unavailable (%s); broadcasting", exc)
            bus.publish(ENVELOPE_TOPIC, payload)
            return
        for node in nodes:
            bus.publish(ENVELOPE_TOPIC, payload, node=node)

    def _on_bus(self, topic: str, payload: bytes) -> None:
        self.stats.envelopes_in += 1
        try:
            head, frame = open_envelope(payload)
        except (ValueError, TypeError):
            log.warning("dropped a malformed gateway envelope")
            return
        site_id, origin, ephemeral = head.get("s"), head.get("o"), bool(head.get("e"))
        conversation_id = head.get("c")
        kind = head.get("k")
        registry = self.registry
        if kind == "a":
            targets = registry.site_agents(site_id)
        elif kind == "v":
            targets = registry.visitor(site_id, head.get("v"))
        elif kind == "g":
            targets = registry.agents(site_id, head.get("a"), head.get("c"), head.get("w"))
        else:
            visitor = registry.visitor(site_id, head.get("v"))
            watchers = registry.watchers(conversation_id)
            targets = (visitor | watchers) if visitor and watchers else (visitor or watchers)
        if not targets:
            return
        seq, sender = head.get("q") or 0, head.get("p")
        pushed = 0
        for conn in tuple(targets):
            p = conn.principal
            if conn.id == origin or p.site_id != site_id:
                continue
            if ephemeral and sender and sender == f"{p.kind}:{p.id}":
                continue  # nobody needs their own typing, receipts or presence back
            if seq and conn.replaying is not None and conversation_id in conn.replaying:
                conn.replaying[conversation_id].append((seq, frame))
                continue
            if seq and conn.seen is not None:  # a catch-up read is pending: note it
                seen = conn.seen.get(conversation_id)
                if seen is not None:
                    if seq in seen:
                        continue  # the catch-up sent it already
                    seen.add(seq)
            if seq and conn.caught_up is not None:
                read = conn.caught_up.get(conversation_id)
                if read is not None and read[0] < seq <= read[1]:
                    continue  # the last catch-up read sent it (or saw it sent) already
            if conn.push(frame, ephemeral):
                pushed += 1
        if pushed:
            stats, op = self.stats, head.get("op") or "unknown"
            stats.frames_out[op] = stats.frames_out.get(op, 0) + pushed
            if stats.armed and head.get("t"):
                stats.delivery.observe(max(0.0, time.time() - head["t"]))
