"""A long-poll session's outbox, bounded in frames and in bytes.

The session's pump moves every frame the gateway queues on the session's
connection into this outbox at once, so what an unread session holds is
bounded in bytes here, not only in frames by the connection. The policy is the
connection's: past ``shed_at`` of either bound new ephemeral frames are shed;
when full, a queued ephemeral frame makes room; when only messages are left
the session is a slow consumer (closed; the client resumes from its last seq).
"""

from __future__ import annotations

from collections import deque

#: How the gateway serialises ephemeral frames (orjson keeps ``op`` first): typing,
#: read receipts, presence and rate-limit notices may be shed under load.
EPHEMERAL_PREFIXES = (
    b'{"op":"typing"',
    b'{"op":"read"',
    b'{"op":"presence"',
    b'{"op":"error","code":"rate_limited"',
)


class Outbox:
    """Serialised frames waiting for a ``recv``, oldest first."""

    __slots__ = (
        "_frames",
        "_shed_bytes",
        "_shed_frames",
        "bytes",
        "max_bytes",
        "max_frames",
        "shed",
    )

    def __init__(self, max_frames: int, max_bytes: int, shed_at: float = 0.5) -> None:
        self._frames: deque[tuple[bytes, bool]] = deque()
        self.bytes = 0
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._shed_frames = max(1, int(max_frames * shed_at))
        self._shed_bytes = max(1, int(max_bytes * shed_at))
        self.shed = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: bytes) -> bool:
        """Queue a frame; False when it does not fit (the session is a slow consumer)."""
        size = len(frame)
        ephemeral = frame.startswith(EPHEMERAL_PREFIXES)
        if ephemeral and (
            len(self._frames) >= self._shed_frames or self.bytes + size > self._shed_bytes
        ):
            self.shed += 1
            return True
        while len(self._frames) >= self.max_frames or self.bytes + size > self.max_bytes:
            if not self._drop_one_ephemeral():
                return False
        self._frames.append((frame, ephemeral))
        self.bytes += size
        return True

    def _drop_one_ephemeral(self) -> bool:
        for index, (frame, ephemeral) in enumerate(self._frames):
            if ephemeral:
                del self._frames[index]
                self.bytes -= len(frame)
                self.shed += 1
                return True
        return False

    def take(self, max_frames: int) -> list[bytes]:
        """Remove and return up to ``max_frames`` frames, oldest first."""
        frames = self._frames
        taken = [frames.popleft() for _ in range(min(max_frames, len(frames)))]
        self.bytes -= sum(len(frame) for frame, _ in taken)
        return [frame for frame, _ in taken]

    def requeue(self, frames: list[bytes]) -> None:
        """Put back frames taken for a response that never reached the client, in front."""
        for frame in reversed(frames):
            self._frames.appendleft((frame, frame.startswith(EPHEMERAL_PREFIXES)))
            self.bytes += len(frame)

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0
