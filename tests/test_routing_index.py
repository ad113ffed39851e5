"""The routing indexes: sorted keys, the per-skill line, the rooms, and the proof that the
indexed choice and the indexed drain are exactly what the brute-force ones were.

The references are the algorithms routing used before the indexes: score every agent
the filters accept (``RoutingEngine.choose``) and walk the whole line for every pass
(:func:`brute_drain`, the old ``drain`` kept here verbatim in spirit). Random sites,
random agents (presence, capacity, skills, statistics, declines) and random event
sequences, for every built-in policy, random weights, and a third party's filter and
factor.
"""

from __future__ import annotations

import bisect
import random
import zlib

import pytest

from kefu.core.kernel import load_kernel
from kefu.core.types import RoutingFilter, WeightFactor
from kefu.hooks import hookimpl
from kefu.plugins.routing.queue import RoutingQueue
from kefu.plugins.routing.service import build_engine
from kefu.plugins.routing.snapshots import (
    AGENT_STATUSES,
    AgentSnapshot,
    Claim,
    ConversationSnapshot,
)
from kefu.plugins.routing.sortedkeys import LOAD, SortedKeys

PLUGINS = ("kefu.plugins.storage_memory", "kefu.plugins.routing")
SKILLS = ("sales", "support", "billing")


def kernel_with(*extra, environ=None):
    return load_kernel(
        None,
        environ=environ or {},
        defaults=PLUGINS,
        entry_points=False,
        extra_plugins=tuple((type(p).__name__.lower(), p) for p in extra),
    )


# -- sorted keys and the line ------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_sorted_keys_behave_like_a_sorted_list(seed):
    rng = random.Random(seed)
    keys, model = SortedKeys(), []
    for step in range(6 * LOAD * 3):
        key = (rng.randrange(50), rng.random())
        if model and rng.random() < 0.35:
            key = rng.choice(model)
            assert keys.discard(key)
            model.remove(key)
        else:
            keys.add(key)
            bisect.insort(model, key)
        assert len(keys) == len(model)
        if step % 97 == 0:
            assert list(keys) == model
            probe = (rng.randrange(50), rng.random())
            assert keys.rank(probe) == bisect.bisect_left(model, probe)
            assert list(keys.after(probe)) == model[bisect.bisect_right(model, probe) :]
            assert (probe in keys) == (probe in model)
            assert keys.first() == (model[0] if model else None)
    assert not keys.discard((99, 0.5))
    assert list(SortedKeys(model)) == model


def test_queue_keeps_order_positions_and_parked_conversations_per_skill():
    rng = random.Random(5)
    queue, model = RoutingQueue(), {}
    for n in range(900):
        if model and rng.random() < 0.3:
            gone = rng.choice(list(model))
            assert queue.remove(gone).id == gone
            del model[gone]
            continue
        skill = rng.choice((None, *SKILLS))
        conversation = ConversationSnapshot(
            f"c{n}", "s", skill=skill, priority=rng.randrange(3), queued_at=rng.random()
        )
        queue.push(conversation)
        model[conversation.id] = (-conversation.priority, conversation.queued_at, n, skill)
        if rng.random() < 0.2:
            queue.park(conversation.id)
    ordered = sorted(model, key=lambda c: model[c][:3])
    assert [c.id for c in queue.ordered()] == ordered
    positions: dict = {}
    seen: dict = {}
    for cid in ordered:
        skill = model[cid][3]
        seen[skill] = seen.get(skill, 0) + 1
        positions[cid] = seen[skill]
    assert queue.positions() == positions
    assert all(queue.position(cid) == p for cid, p in positions.items())
    wanted = {None, "sales"}
    assert [c.id for c in queue.of_skills(wanted)] == [c for c in ordered if model[c][3] in wanted]
    parked = queue.parked()
    assert parked > 0
    for skill in queue.active_skills():  # the heads skip parked conversations
        head = queue.head(skill)
        assert head.skill == skill
    assert queue.unpark() == parked and queue.parked() == 0
    for skill in (None, *SKILLS):
        first = next((c for c in ordered if model[c][3] == skill), None)
        assert (queue.head(skill).id if queue.head(skill) else None) == first


# -- a random site -----------------------------------------------------------------------
def random_agent(rng: random.Random, n: int, now: float) -> AgentSnapshot:
    capacity = rng.choice((0, 1, 2, 3, 5))
    return AgentSnapshot(
        id=f"a{n:03d}",
        site_id="s",
        status=rng.choice((*AGENT_STATUSES, "online", "online")),
        accepting=rng.random() > 0.1,
        capacity=capacity,
        open_count=rng.randint(0, capacity + 1),
        skills=frozenset(s for s in SKILLS if rng.random() < 0.4),
        last_assigned_at=None if rng.random() < 0.3 else now - rng.expovariate(1 / 400),
        first_response_s=None if rng.random() < 0.3 else rng.choice((5.0, 12.5, 30.0, 90.0)),
        satisfaction=None if rng.random() < 0.3 else rng.choice((0.2, 0.5, 0.8, 1.0)),
        declined=frozenset(f"c{rng.randrange(60)}" for _ in range(rng.randrange(3))),
    )


def random_conversation(rng: random.Random, n: int, agents: list) -> ConversationSnapshot:
    previous = rng.choice(agents).id if agents and rng.random() < 0.3 else None
    return ConversationSnapshot(
        id=f"c{n}",
        site_id="s",
        skill=rng.choice((None, None, *SKILLS)),
        priority=rng.choice((0, 0, 0, 1, 2)),
        queued_at=float(rng.randrange(1000)),
        previous_agent_id=previous,
    )


def mutate(rng: random.Random, agent: AgentSnapshot, now: float) -> None:
    """One of the changes a live site sees: presence, capacity, a resolution, statistics."""
    change = rng.randrange(6)
    if change == 0:
        agent.status = rng.choice(AGENT_STATUSES)
    elif change == 1:
        agent.capacity = rng.choice((0, 1, 2, 4, 6))
    elif change == 2:
        agent.open_count = max(agent.open_count - 1, 0)
    elif change == 3:
        agent.first_response_s = rng.choice((None, 3.0, 30.0, 200.0))
        agent.satisfaction = rng.choice((None, 0.1, 0.5, 0.9))
    elif change == 4:
        agent.skills = frozenset(s for s in SKILLS if rng.random() < 0.5)
    else:
        agent.accepting = not agent.accepting


class World:
    """A plain routing source over agent snapshots; some claims fail, deterministically."""

    def __init__(self, agents: list[AgentSnapshot], flaky: bool = False) -> None:
        self.real = {a.id: a for a in agents}
        self.flaky = flaky
        self.now = 1_000.0

    async def agents(self, site_id):
        return [
            AgentSnapshot(**{k: getattr(a, k) for k in a.__slots__}) for a in self.real.values()
        ]

    async def claim(self, conversation, snapshot):
        real = self.real[snapshot.id]
        roll = zlib.crc32(f"{conversation.id}/{snapshot.id}".encode())
        if self.flaky and roll % 11 == 0:
            return Claim.GONE if roll % 2 else Claim.AGENT_UNAVAILABLE
        if real.open_count >= real.capacity:
            return Claim.AGENT_FULL
        real.open_count += 1
        real.last_assigned_at = self.now
        return Claim.CLAIMED


def two_engines(agents, kernel, policy=None):
    """The same world twice: one routed by brute force, one through the indexes."""
    worlds = [World([AgentSnapshot(**{k: getattr(a, k) for k in a.__slots__}) for a in agents])]
    worlds.append(World([AgentSnapshot(**{k: getattr(a, k) for k in a.__slots__}) for a in agents]))
    engines = []
    for world in worlds:
        engines.append(build_engine(kernel, world, policy=policy, clock=lambda w=world: w.now))
    return worlds, engines


class ThirdParty:
    """A filter and a factor routing knows nothing of: the generic chooser's path."""

    @hookimpl
    def kefu_routing_filters(self, kernel):
        return [RoutingFilter("not_on_tuesdays", lambda c, a: not a.id.endswith("7"))]

    @hookimpl
    def kefu_routing_weight_factors(self, kernel):
        return [WeightFactor("vowels", lambda c, a: 1.0 if a.id[-1] in "02468" else 0.3, 0.7)]


CASES = [
    ("weighted", {}, ()),
    ("weighted", {"load": 0.0, "idle_time": 3.0}, ()),
    ("weighted", {"idle_time": 0.0, "returning_visitor": 9.0, "skill_match": 0.0}, ()),
    ("weighted", "random", ()),
    ("least_open", {}, ()),
    ("round_robin", {}, ()),
    ("weighted", {}, (ThirdParty(),)),
    ("least_open", {}, (ThirdParty(),)),
]


@pytest.mark.parametrize(("policy", "weights", "plugins"), CASES)
@pytest.mark.parametrize("seed", range(5))
async def test_indexed_choice_is_the_brute_force_choice(policy, weights, plugins, seed):
    rng = random.Random(seed * 31 + len(policy))
    kernel = kernel_with(*plugins)
    agents = [random_agent(rng, n, 1_000.0) for n in range(rng.randint(1, 70))]
    worlds, (brute, indexed) = two_engines(agents, kernel, policy)
    if weights == "random":
        weights = {n: rng.choice((0.0, 0.5, 1.0, 2.5, 7.0)) for n in brute.policy.weights}
    for engine in (brute, indexed):
        if weights:
            engine.policy.configure(weights)
    for n in range(150):
        step = rng.choice((0.0, 0.0, 1.0, 45.0))
        for world in worlds:
            world.now += step
        conversation = random_conversation(rng, n, agents)
        candidates = sorted(await brute.source.agents("s"), key=lambda a: a.id)
        expected = await brute.choose(conversation, candidates)
        await indexed.pull("s")
        chosen = await indexed.choose_indexed(conversation)
        assert (chosen.id if chosen else None) == (expected.id if expected else None), n
        target = rng.choice(agents).id
        for world in worlds:  # both worlds change alike: the choice was the same
            if expected is not None:
                world.real[expected.id].open_count += 1
                world.real[expected.id].last_assigned_at = world.now
            state = random.Random(n)
            mutate(state, world.real[target], world.now)


async def brute_drain(engine, site_id):
    """The drain routing had before the indexes: the whole line, every agent, every pass."""
    queue = engine.queue(site_id)
    agents = sorted(await engine.source.agents(site_id), key=lambda a: a.id)
    made = []
    for conversation in queue.ordered():
        if not any(a.open_count < a.capacity for a in agents):
            break
        for _ in range(len(agents) + 1):
            room = [a for a in agents if a.open_count < a.capacity]
            agent = await engine.choose(conversation, room)
            if agent is None:
                break
            outcome = await engine.source.claim(conversation, agent)
            if outcome is Claim.CLAIMED:
                queue.remove(conversation.id)
                agent.open_count += 1
                agent.last_assigned_at = engine.clock()
                made.append((conversation.id, agent.id))
                break
            if outcome is Claim.GONE:
                queue.remove(conversation.id)
                break
            if outcome is Claim.AGENT_FULL:
                agent.open_count = max(agent.open_count, agent.capacity)
            else:
                agents.remove(agent)
    return made


@pytest.mark.parametrize("policy", ["weighted", "least_open", "round_robin"])
@pytest.mark.parametrize("seed", range(6))
async def test_indexed_drain_is_the_brute_force_drain(policy, seed):
    rng = random.Random(seed)
    kernel = kernel_with()
    agents = [random_agent(rng, n, 1_000.0) for n in range(rng.randint(3, 40))]
    for agent in agents:
        agent.declined = frozenset()
    worlds, (brute, indexed) = two_engines(agents, kernel, policy)
    for world in worlds:
        world.flaky = True
    arrivals = 0
    for _ in range(60):
        step = rng.choice((0.5, 3.0, 60.0))
        for world in worlds:
            world.now += step
        for _ in range(rng.randrange(8)):
            conversation = random_conversation(rng, arrivals, agents)
            arrivals += 1
            for engine in (brute, indexed):
                engine.enqueue(
                    ConversationSnapshot(
                        **{k: getattr(conversation, k) for k in conversation.__slots__}
                    )
                )
        for _ in range(rng.randrange(4)):
            target, state = rng.choice(agents).id, rng.randrange(1 << 30)
            for world in worlds:
                mutate(random.Random(state), world.real[target], world.now)
        made = [(a.conversation_id, a.agent_id) for a in await indexed.drain("s")]
        assert made == await brute_drain(brute, "s")
        assert [c.id for c in indexed.queue("s")] == [c.id for c in brute.queue("s")]
    assert arrivals > 100
