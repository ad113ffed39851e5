"""The connection registry of one process, sharded by key.

Four indexes answer the fan-out questions: every connection by id, a visitor's
connections (all their tabs), the connections watching a conversation, and the
agent connections of a site. Each index is split over ``shards`` dictionaries
chosen by a hash of the key, so no single dictionary grows with the whole
population (resizes stay small) and a later move to one lock or loop per shard
needs no change of interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kefu.plugins.gateway.connection import NOTHING_WATCHED, Connection


class _Shard:
    __slots__ = ("agents", "connections", "visitors", "watchers")

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.visitors: dict[tuple[str, str], set[Connection]] = {}
        self.watchers: dict[str, set[Connection]] = {}
        self.agents: dict[str, set[Connection]] = {}


def _add(index: dict, key: object, conn: Connection) -> bool:
    """Add; True when ``key`` is new in the index."""
    members = index.get(key)
    if members is None:
        index[key] = {conn}
        return True
    members.add(conn)
    return False


def _discard(index: dict, key: object, conn: Connection) -> bool:
    """Remove; True when that emptied ``key``."""
    members = index.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del index[key]
            return True
    return False


def _noop(key: str) -> None:
    pass


class Registry:
    """Where this process's connections are, by id, visitor, conversation and site."""

    def __init__(
        self,
        shards: int = 16,
        on_held: Callable[[str], None] = _noop,
        on_released: Callable[[str], None] = _noop,
    ) -> None:
        self._shards = tuple(_Shard() for _ in range(shards))
        #: told of a fan-out key (``v:site:visitor``, ``c:conversation``, ``a:site``)
        #: held here for the first time, and of one held no more (the directory)
        self.on_held, self.on_released = on_held, on_released

    def _shard(self, key: object) -> _Shard:
        return self._shards[hash(key) % len(self._shards)]

    def __len__(self) -> int:
        return sum(len(s.connections) for s in self._shards)

    def __iter__(self) -> Iterator[Connection]:
        for shard in self._shards:
            yield from tuple(shard.connections.values())

    def get(self, connection_id: str) -> Connection | None:
        return self._shard(connection_id).connections.get(connection_id)

    def add(self, conn: Connection) -> None:
        self._shard(conn.id).connections[conn.id] = conn
        p = conn.principal
        if p.kind == "visitor":
            key = (p.site_id, p.id)
            if _add(self._shard(key).visitors, key, conn):
                self.on_held(f"v:{p.site_id}:{p.id}")
        elif p.kind == "agent":
            if _add(self._shard(p.site_id).agents, p.site_id, conn):
                self.on_held(f"a:{p.site_id}")

    def remove(self, conn: Connection) -> None:
        if self._shard(conn.id).connections.pop(conn.id, None) is None:
            return
        p = conn.principal
        if p.kind == "visitor":
            key = (p.site_id, p.id)
            if _discard(self._shard(key).visitors, key, conn):
                self.on_released(f"v:{p.site_id}:{p.id}")
        elif p.kind == "agent":
            if _discard(self._shard(p.site_id).agents, p.site_id, conn):
                self.on_released(f"a:{p.site_id}")
        for conversation_id in conn.watching:
            if _discard(self._shard(conversation_id).watchers, conversation_id, conn):
                self.on_released(f"c:{conversation_id}")
        conn.watching = NOTHING_WATCHED

    def watch(self, conn: Connection, conversation_id: str) -> None:
        if conversation_id not in conn.watching and not conn.closed:
            if conn.watching:
                conn.watching.add(conversation_id)  # type: ignore[union-attr]  # a set
            else:
                conn.watching = {conversation_id}
            if _add(self._shard(conversation_id).watchers, conversation_id, conn):
                self.on_held(f"c:{conversation_id}")

    def unwatch(self, conn: Connection, conversation_id: str) -> None:
        if conversation_id in conn.watching:
            conn.watching.discard(conversation_id)  # type: ignore[union-attr]  # a set
            if not conn.watching:
                conn.watching = NOTHING_WATCHED
            if _discard(self._shard(conversation_id).watchers, conversation_id, conn):
                self.on_released(f"c:{conversation_id}")

    def visitor(self, site_id: str, visitor_id: str) -> set[Connection]:
        key = (site_id, visitor_id)
        return self._shard(key).visitors.get(key) or set()

    def watchers(self, conversation_id: str) -> set[Connection]:
        return self._shard(conversation_id).watchers.get(conversation_id) or set()

    def site_agents(self, site_id: str) -> set[Connection]:
        return self._shard(site_id).agents.get(site_id) or set()

    def agents(
        self,
        site_id: str,
        agent_ids: list[str] | None = None,
        watching: str | None = None,
        then_watch: str | None = None,
    ) -> set[Connection]:
        """Agent connections of a site: of ``agent_ids`` only, watching ``watching`` only
        (when given); each one found starts watching ``then_watch`` (when given)."""
        pool = self.watchers(watching) if watching else self.site_agents(site_id)
        found = {
            conn
            for conn in pool
            if conn.principal.kind == "agent"
            and conn.principal.site_id == site_id
            and (agent_ids is None or conn.principal.id in agent_ids)
        }
        if then_watch:
            for conn in found:
                self.watch(conn, then_watch)
        return found
