"""The gateway's sheddable extras, declared through ``kefu_degradation_features``.

Under pressure (docs/degradation.md) a degradation plugin switches these off and on
again; the handlers read one bool attribute per frame. Only ephemeral frames are
concerned: messages, acks, resume and delivery to connected participants have no
switch here at all.

- ``typing`` (level 1): typing notices coalesced per connection over
  :data:`TYPING_SHED_INTERVAL` seconds instead of one;
- ``presence`` (level 1): an agent's presence broadcast only when it differs from the
  last one the site's agents got (the ``agent.presence`` event and the answer still go);
- ``read_receipts`` (level 1): ``read`` frames acknowledged to nobody and not fanned out;
- ``heartbeat`` (level 1): clients are told to ping every ``[gateway] heartbeat_shed_s``
  seconds instead of ``heartbeat_s`` (the ``heartbeat_s`` field of ``hello`` and of every
  ``pong``: a client learns the stretched interval, and the normal one again, at its next
  ping).
"""

from __future__ import annotations

from collections import Counter

from kefu.core.types import DegradableFeature

#: Seconds between two identical typing notices of one connection while ``typing`` is shed.
TYPING_SHED_INTERVAL = 5.0


class Degraded:
    """Which extras are shed now and how many frames each dropped."""

    __slots__ = ("dropped", "heartbeat", "presence", "presence_sent", "read_receipts", "typing")

    def __init__(self) -> None:
        self.typing = self.presence = self.read_receipts = False  # True: shed now
        self.heartbeat = False
        self.dropped: Counter[str] = Counter()
        #: (site, agent) -> the last presence notice broadcast (coalescing compares)
        self.presence_sent: dict[tuple[str, str], tuple] = {}

    def features(self) -> list[DegradableFeature]:
        def switch(name: str):
            return lambda enabled: setattr(self, name, not enabled)

        return [
            DegradableFeature(
                "typing", 10, switch("typing"), 1, "typing notices coalesced over 5 s"
            ),
            DegradableFeature(
                "presence", 20, switch("presence"), 1, "unchanged presence not re-broadcast"
            ),
            DegradableFeature(
                "read_receipts", 30, switch("read_receipts"), 1, "read receipts dropped"
            ),
            DegradableFeature(
                "heartbeat",
                40,
                switch("heartbeat"),
                1,
                "clients told to ping every heartbeat_shed_s (60 s) instead of 20 s",
            ),
        ]

    def heartbeat_s(self, settings) -> float:
        """The ping interval clients are told now (``hello`` and ``pong``)."""
        return settings.heartbeat_shed_s if self.heartbeat else settings.heartbeat_s
