"""The agents of one site as routing sees them, indexed by who has room for what.

For every skill (and for None, "any agent"), a *room* holds the agents who could be
offered a conversation needing it by the built-in filters alone: online, accepting,
fewer open conversations than their capacity, serving that skill. Each room keeps
its agents in one or more sorted orders chosen by the policy's chooser
(:mod:`~kefu.plugins.routing.choice`), so that the policy's choice is found by
walking a few agents from the top instead of scoring every agent of the site. An
agent's entries move (O(log n) each) when something the order depends on changes:
an assignment or a freed slot, presence, capacity, skills, statistics.

The roster also keeps, per skill, the pool the wait estimate needs (agents online
and accepting who serve it: how many, their slots, their free slots), which
conversations each agent holds (live servers count open conversations here, fed by
events and checked by every claim against storage), and who declined what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kefu.plugins.routing.snapshots import ONLINE, AgentSnapshot
from kefu.plugins.routing.sortedkeys import SortedKeys

#: ``order(agent, skill) -> key``: a sort key (ascending = preferred) ending with the id.
Order = Callable[[AgentSnapshot, Any], tuple]


class Room:
    """The agents with a free slot for one skill, in each of the chooser's orders."""

    __slots__ = ("entries", "keys", "orders")

    def __init__(self, orders: tuple[Order, ...]) -> None:
        self.orders = orders
        self.keys = [SortedKeys() for _ in orders]
        self.entries: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.entries

    def put(self, agent: AgentSnapshot, skill: Any) -> bool:
        """Insert or move the agent; True when it was not in the room before."""
        new = tuple(order(agent, skill) for order in self.orders)
        old = self.entries.get(agent.id)
        if old == new:
            return False
        if old is not None:
            for keys, key in zip(self.keys, old, strict=True):
                keys.discard(key)
        for keys, key in zip(self.keys, new, strict=True):
            keys.add(key)
        self.entries[agent.id] = new
        return old is None

    def drop(self, agent_id: str) -> None:
        old = self.entries.pop(agent_id, None)
        if old is not None:
            for keys, key in zip(self.keys, old, strict=True):
                keys.discard(key)

    def ordered(self, n: int = 0) -> Iterator[tuple]:
        """Keys of order ``n``, best first; the agent id is each key's last element."""
        return iter(self.keys[n])

    def after(self, n: int, key: tuple) -> Iterator[tuple]:
        return self.keys[n].after(key)


class Roster:
    """One site's agents, the conversations they hold and the rooms per skill.

    Two ways to feed it. A *live* roster (the server's) counts each agent's open
    conversations from :meth:`hold` / :meth:`release` and who declined what from
    :meth:`decline`, both fed by events and storage reads. Otherwise (simple sources,
    the simulator) every snapshot brings its own ``open_count`` and ``declined``.
    """

    def __init__(self, site_id: str, orders: tuple[Order, ...], *, live: bool = False) -> None:
        self.site_id = site_id
        self.orders = orders
        self.live = live
        self.agents: dict[str, AgentSnapshot] = {}
        self.rooms: dict[Any, Room] = {}
        self.held: dict[str, set[str]] = {}  # agent id -> conversations assigned to them
        self.holder: dict[str, str] = {}  # conversation id -> agent id
        self.declined: dict[str, set[str]] = {}  # agent id -> waiting conversations declined
        self.decliners: dict[str, set[str]] = {}  # conversation id -> agents who declined it
        # skill -> [agents, slots, free slots] of the agents online and accepting serving it
        self.pools: dict[Any, list[int]] = {}
        self._in: dict[str, tuple[frozenset, int, int]] = {}  # agent -> pool contribution
        self._signs: dict[str, tuple] = {}  # agent -> what its place was computed from

    # -- agents ---------------------------------------------------------------------
    def upsert(self, agent: AgentSnapshot) -> set:
        """Add or replace an agent's snapshot; returns the skills whose room the agent
        entered (a pass may assign there now). Another site's agent is ignored."""
        if agent.site_id != self.site_id:
            return set()
        mine = self.declined.setdefault(agent.id, set())
        if self.live:
            agent.open_count = len(self.held.get(agent.id, ()))
        elif agent.declined is not mine:
            given = set(agent.declined)
            for conversation_id in mine - given:
                self._forget_decliner(conversation_id, agent.id)
            for conversation_id in given - mine:
                self.decliners.setdefault(conversation_id, set()).add(agent.id)
            mine.clear()
            mine.update(given)
        agent.declined = mine
        self.agents[agent.id] = agent
        if self._signs.get(agent.id) == _sign(agent):
            return set()  # the same as before: nothing moves
        return self.reindex(agent.id)

    def remove(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)
        self._signs.pop(agent_id, None)
        for skill in list(self.rooms):
            self.rooms[skill].drop(agent_id)
            if not self.rooms[skill]:
                del self.rooms[skill]
        self._pool_out(agent_id)

    def get(self, agent_id: str) -> AgentSnapshot | None:
        return self.agents.get(agent_id)

    def reindex(self, agent_id: str) -> set:
        """Move the agent in every room after a change; returns the rooms it entered."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return set()
        self._signs[agent_id] = _sign(agent)
        serving = agent.status == ONLINE and agent.accepting
        wanted: set = set()
        if serving and agent.open_count < agent.capacity:
            wanted = {None, *agent.skills}
        entered = set()
        for skill in list(self.rooms):
            if skill not in wanted:
                room = self.rooms[skill]
                room.drop(agent_id)
                if not room:
                    del self.rooms[skill]
        for skill in wanted:
            room = self.rooms.get(skill)
            if room is None:
                room = self.rooms[skill] = Room(self.orders)
            if room.put(agent, skill):
                entered.add(skill)
        self._pool_out(agent_id)
        if serving:
            skills = frozenset({None, *agent.skills})
            spare = max(agent.capacity - agent.open_count, 0)
            for skill in skills:
                pool = self.pools.setdefault(skill, [0, 0, 0])
                pool[0] += 1
                pool[1] += agent.capacity
                pool[2] += spare
            self._in[agent_id] = (skills, agent.capacity, spare)
        return entered

    def reorder(self, orders: tuple[Order, ...]) -> None:
        """Another chooser (a new policy or new weights): rebuild every room."""
        self.orders = orders
        self.rooms = {}
        self._signs = {}
        for agent_id in list(self.agents):
            self.reindex(agent_id)

    def _pool_out(self, agent_id: str) -> None:
        found = self._in.pop(agent_id, None)
        if found is None:
            return
        skills, capacity, spare = found
        for skill in skills:
            pool = self.pools[skill]
            pool[0] -= 1
            pool[1] -= capacity
            pool[2] -= spare
            if not pool[0]:
                del self.pools[skill]

    def room(self, skill: Any) -> Room | None:
        return self.rooms.get(skill)

    def has_room(self, skill: Any) -> bool:
        return skill in self.rooms  # empty rooms are deleted

    def any_room(self) -> bool:
        return bool(self.rooms)

    def pool(self, skill: Any) -> tuple[int, int, int]:
        """(agents, slots, free slots) of the agents online and accepting serving ``skill``."""
        found = self.pools.get(skill)
        return (0, 0, 0) if found is None else (found[0], found[1], found[2])

    # -- held conversations (live) --------------------------------------------------------
    def hold(self, conversation_id: str, agent_id: str) -> None:
        """The conversation is assigned to the agent (it may have been someone else's)."""
        if self.holder.get(conversation_id) == agent_id:
            return
        self.release(conversation_id)
        self._take(conversation_id, agent_id)
        self.reindex(agent_id)

    def release(self, conversation_id: str) -> tuple[str | None, set]:
        """The conversation is no longer held; returns who held it and the rooms that
        agent entered by the freed slot."""
        agent_id = self.holder.pop(conversation_id, None)
        if agent_id is None:
            return None, set()
        mine = self.held.get(agent_id)
        if mine is not None:
            mine.discard(conversation_id)
            if not mine:
                del self.held[agent_id]
        agent = self.agents.get(agent_id)
        if agent is None:
            return agent_id, set()
        agent.open_count = len(self.held.get(agent_id, ()))
        return agent_id, self.reindex(agent_id)

    def holding(self, agent_id: str) -> set[str]:
        return set(self.held.get(agent_id, ()))

    def assigned(self, agent_id: str, conversation_id: str, now: float) -> None:
        """A claim succeeded: one more open conversation, assigned just now."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        agent.last_assigned_at = now
        if self.live:
            self.release(conversation_id)
            self._take(conversation_id, agent_id)
        else:
            agent.open_count += 1
        self.reindex(agent_id)

    def full(self, agent_id: str) -> None:
        """Storage says the agent has no free slot: out of every room until counted again."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.open_count = max(agent.open_count, agent.capacity)
            self.reindex(agent_id)

    def _take(self, conversation_id: str, agent_id: str) -> None:
        self.holder[conversation_id] = agent_id
        self.held.setdefault(agent_id, set()).add(conversation_id)
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.open_count = len(self.held[agent_id])

    # -- declines (live) ------------------------------------------------------------------
    def decline(self, conversation_id: str, agent_ids: Iterable[str]) -> None:
        """Set who declined a waiting conversation (nobody: it left the line)."""
        wanted = set(agent_ids)
        old = self.decliners.pop(conversation_id, set())
        for agent_id in old - wanted:
            mine = self.declined.get(agent_id)
            if mine is not None:
                mine.discard(conversation_id)
        for agent_id in wanted:
            self.declined.setdefault(agent_id, set()).add(conversation_id)
        if wanted:
            self.decliners[conversation_id] = wanted

    def declined_by(self, conversation_id: str) -> set[str]:
        return self.decliners.get(conversation_id, set())

    def _forget_decliner(self, conversation_id: str, agent_id: str) -> None:
        found = self.decliners.get(conversation_id)
        if found is not None:
            found.discard(agent_id)
            if not found:
                del self.decliners[conversation_id]


def _sign(agent: AgentSnapshot) -> tuple:
    """Every field a room's membership or order may depend on."""
    return (
        agent.status,
        agent.accepting,
        agent.capacity,
        agent.open_count,
        agent.skills,
        agent.last_assigned_at,
        agent.first_response_s,
        agent.satisfaction,
    )
