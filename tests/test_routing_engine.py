"""The routing engine: filters, policies, weight factors, queue and ETA, drains, atomic claims.

Pure engine tests run on a list-backed source; the claim, drain and event
tests run on the real memory storage backend and a real kernel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from kefu.core.domain import ASSIGNED, QUEUED, RESOLVED, Agent, Conversation, Site
from kefu.core.errors import ConfigError, StartupError
from kefu.core.kernel import load_kernel
from kefu.core.reload import apply_reload
from kefu.core.types import RoutingFilter, WeightFactor
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.routing import filters as f
from kefu.plugins.routing import service_of
from kefu.plugins.routing.live import StorageSource
from kefu.plugins.routing.policies import WeightedPolicy
from kefu.plugins.routing.service import build_engine
from kefu.plugins.routing.settings import BusinessHours
from kefu.plugins.routing.snapshots import (
    AgentSnapshot,
    Claim,
    ConversationSnapshot,
    RoutingInputError,
)
from kefu.plugins.storage_memory import MemoryStorage

PLUGINS = ("kefu.plugins.storage_memory", "kefu.plugins.routing")


def kernel_with(*extra, environ=None, path=None):
    return load_kernel(
        path,
        environ=environ or {},
        defaults=PLUGINS,
        entry_points=False,
        extra_plugins=tuple((type(p).__name__.lower(), p) for p in extra),
    )


def agent(id, **kw):
    return AgentSnapshot(id=id, site_id=kw.pop("site_id", "s"), **kw)


def conv(id, **kw):
    return ConversationSnapshot(id=id, site_id=kw.pop("site_id", "s"), **kw)


class ListSource:
    """A routing source over plain snapshots; claims always succeed while there is room."""

    def __init__(self, agents):
        self.by_id = {a.id: a for a in agents}
        self.claimed = []

    async def agents(self, site_id):
        return [
            AgentSnapshot(**{k: getattr(a, k) for k in a.__slots__}) for a in self.by_id.values()
        ]

    async def claim(self, conversation, snapshot):
        real = self.by_id[snapshot.id]
        if real.open_count >= real.capacity:
            return Claim.AGENT_FULL
        real.open_count += 1
        self.claimed.append((conversation.id, real.id))
        return Claim.CLAIMED


def engine_for(agents, policy=None, kernel=None, clock=lambda: 1000.0):
    source = ListSource(agents)
    return build_engine(kernel or kernel_with(), source, policy=policy, clock=clock), source


# -- filters -----------------------------------------------------------------------------
MONDAY_10H = dt.datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
HOURS = BusinessHours(timezone="Europe/Paris", mon=["09:00-12:00"], closed_dates=["2025-06-09"])


@pytest.mark.parametrize(
    ("check", "c", "a", "expected"),
    [
        (f.same_site, conv("c"), agent("a"), True),
        (f.same_site, conv("c"), agent("a", site_id="other"), False),
        (f.online_and_accepting, conv("c"), agent("a"), True),
        (f.online_and_accepting, conv("c"), agent("a", status="away"), False),
        (f.online_and_accepting, conv("c"), agent("a", status="offline"), False),
        (f.online_and_accepting, conv("c"), agent("a", accepting=False), False),
        (f.has_skill, conv("c", skill="sales"), agent("a", skills={"sales"}), True),
        (f.has_skill, conv("c", skill="sales"), agent("a", skills={"support"}), False),
        (f.has_skill, conv("c"), agent("a"), True),
        (f.under_capacity, conv("c"), agent("a", capacity=2, open_count=1), True),
        (f.under_capacity, conv("c"), agent("a", capacity=2, open_count=2), False),
        (f.under_capacity, conv("c"), agent("a", capacity=0), False),
        (f.inside_business_hours, conv("c", hours=HOURS, now=MONDAY_10H), agent("a"), True),
        (
            f.inside_business_hours,
            conv("c", hours=HOURS, now=MONDAY_10H + 3 * 3600),
            agent("a"),
            False,
        ),
        (
            f.inside_business_hours,
            conv("c", hours=HOURS, now=MONDAY_10H + 86400),
            agent("a"),
            False,
        ),
        (
            f.inside_business_hours,
            conv("c", hours=HOURS, now=MONDAY_10H + 7 * 86400),
            agent("a"),
            False,
        ),
        (f.inside_business_hours, conv("c", hours=None), agent("a"), True),
        (f.not_declined, conv("c"), agent("a", declined={"c"}), False),
        (f.not_declined, conv("c"), agent("a", declined={"other"}), True),
    ],
)
def test_builtin_filter(check, c, a, expected):
    assert check(c, a) is expected


async def test_business_hours_from_site_config_close_routing(write_config):
    path = write_config(
        '[routing.business_hours.s]\ntimezone = "Europe/Paris"\nmon = ["09:00-12:00"]\n'
    )
    engine, _ = engine_for([agent("a")], kernel=kernel_with(path=path))
    engine.clock = lambda: MONDAY_10H + 3 * 3600  # 13:00, closed
    engine.enqueue(conv("c1"))
    assert await engine.drain("s") == []
    status = (await engine.status("s"))["c1"]
    assert status.eta_s is None and status.eligible_agents == 0
    engine.clock = lambda: MONDAY_10H
    assert [a.agent_id for a in await engine.drain("s")] == ["a"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[routing.business_hours."*"]\nmon = ["18:00-09:00"]\n', "start must come before"),
        ('[routing.business_hours."*"]\nmon = ["nine to five"]\n', "not a time window"),
        ('[routing.business_hours."*"]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
        ("[routing.weights]\nload = -1\n", "routing.weights.load"),
    ],
)
def test_bad_routing_config_is_refused(write_config, toml, message):
    with pytest.raises(ConfigError, match=message):
        kernel_with(path=write_config(toml))


# -- policies ---------------------------------------------------------------------------
async def test_weighted_prefers_spare_capacity_and_returning_visitors_agent():
    engine, _ = engine_for([agent("a", open_count=3), agent("b", open_count=0)])
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "b"
    returning = conv("c", previous_agent_id="a")
    engine, _ = engine_for([agent("a", open_count=1), agent("b", open_count=1)])
    assert (await engine.choose(returning, await engine.source.agents("s"))).id == "a"


async def test_round_robin_takes_turns_and_skips_the_ineligible():
    agents = [agent("a"), agent("b", status="away"), agent("c")]
    engine, _ = engine_for(agents, policy="round_robin")
    for i in range(4):
        engine.enqueue(conv(f"c{i}", queued_at=i))
    assert [a.agent_id for a in await engine.drain("s")] == ["a", "c", "a", "c"]


async def test_least_open_counts_open_conversations_not_lifetime():
    # "a" handled hundreds of chats before (old last assignment) but holds one now.
    agents = [agent("a", open_count=1, last_assigned_at=1.0), agent("b", open_count=2)]
    engine, _ = engine_for(agents, policy="least_open")
    engine.enqueue(conv("c1"))
    assert [a.agent_id for a in await engine.drain("s")] == ["a"]
    tie = [
        agent("a", open_count=1, last_assigned_at=500.0),
        agent("b", open_count=1, last_assigned_at=5.0),
    ]
    engine, _ = engine_for(tie, policy="least_open")
    engine.enqueue(conv("c1"))
    assert [a.agent_id for a in await engine.drain("s")] == ["b"]


async def test_manual_assigns_nothing_and_agents_pick_from_the_pool():
    agents = [agent("a", skills={"sales"}, capacity=1), agent("b", skills={"support"})]
    engine, _ = engine_for(agents, policy="manual")
    engine.enqueue(conv("c1", skill="support", queued_at=1))
    engine.enqueue(conv("c2", skill="sales", queued_at=2))
    engine.enqueue(conv("c3", skill="sales", queued_at=3))
    assert await engine.drain("s") == []
    assert (await engine.pick("s", "a")).conversation_id == "c2"  # first one it may take
    assert await engine.pick("s", "a") is None  # full now
    assert await engine.pick("s", "b", "c3") is None  # not in the department
    assert (await engine.pick("s", "b", "c1")).agent_id == "b"
    assert await engine.pick("s", "nobody") is None
    assert [c.id for c in engine.queue("s")] == ["c3"]


def test_unknown_policy_name_lists_the_known_ones(write_config):
    kernel = kernel_with(path=write_config('[routing]\npolicy = "fastest"\n'))
    with pytest.raises(StartupError) as err:
        build_engine(kernel, ListSource([]))
    message = str(err.value)
    assert "'fastest'" in message
    assert "least_open, manual, round_robin, weighted" in message


# -- weight factors ------------------------------------------------------------------------
class SeniorityPlugin:
    """A third party's factor: prefer agent "b"."""

    @hookimpl
    def kefu_routing_weight_factors(self, kernel):
        return [WeightFactor("seniority", lambda c, a: 1.0 if a.id == "b" else 0.0, 10.0)]


class NotAlicePlugin:
    @hookimpl
    def kefu_routing_filters(self, kernel):
        async def accepts(conversation, agent):
            return agent.id != "a"

        return [RoutingFilter("not_alice", accepts)]


async def test_third_party_weight_factor_changes_the_choice():
    agents = [agent("a"), agent("b", open_count=2)]
    engine, _ = engine_for(agents)
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "a"
    engine, _ = engine_for(agents, kernel=kernel_with(SeniorityPlugin()))
    assert "seniority" in engine.policy.weights
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "b"


async def test_third_party_filter_is_applied():
    engine, _ = engine_for(
        [agent("a"), agent("b", open_count=2)], kernel=kernel_with(NotAlicePlugin())
    )
    assert "not_alice" in [x.name for x in engine.filters]
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "b"


async def test_config_weights_change_the_choice(write_config):
    # "a" is idle but slow to answer; "b" busier but fast.
    agents = [agent("a", first_response_s=120.0), agent("b", open_count=3, first_response_s=5.0)]
    path = write_config("[routing.weights]\nload = 5\nfirst_response = 1\n")
    engine, _ = engine_for(agents, kernel=kernel_with(path=path))
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "a"
    path = write_config("[routing.weights]\nload = 0.5\nfirst_response = 5\n")
    engine, _ = engine_for(agents, kernel=kernel_with(path=path))
    assert engine.policy.weights["load"] == 0.5
    assert (await engine.choose(conv("c"), await engine.source.agents("s"))).id == "b"


def test_weights_naming_an_unknown_factor_fail_with_the_known_ones(write_config):
    kernel = kernel_with(path=write_config("[routing.weights]\nlaod = 2\n"))
    with pytest.raises(
        StartupError, match=r"unknown factor 'laod' \(available: first_response, idle"
    ):
        build_engine(kernel, ListSource([]))


async def test_broken_factor_scores_zero_and_out_of_range_is_clamped():
    def broken(c, a):
        raise RuntimeError("boom")

    policy = WeightedPolicy(
        [WeightFactor("broken", broken), WeightFactor("huge", lambda c, a: 7.0)], {}
    )
    assert await policy.score(conv("c"), agent("a")) == 1.0


async def test_raising_filter_rejects_instead_of_crashing():
    def broken(c, a):
        raise RuntimeError("boom")

    engine, _ = engine_for([agent("a")])
    engine.filters += (RoutingFilter("broken", broken),)
    assert await engine.choose(conv("c"), await engine.source.agents("s")) is None


# -- queue and wait estimate ------------------------------------------------------------------
async def test_queue_orders_by_priority_then_oldest_and_positions_count_per_skill():
    engine, _ = engine_for(
        [agent("a", capacity=2, open_count=2), agent("b", capacity=2, open_count=2)]
    )
    engine.enqueue(conv("old", queued_at=1))
    engine.enqueue(conv("new", queued_at=5))
    engine.enqueue(conv("vip", queued_at=9, priority=2))
    engine.enqueue(conv("sales", queued_at=0, skill="sales"))
    assert [c.id for c in engine.queue("s")] == ["vip", "sales", "old", "new"]
    status = await engine.status("s")
    assert {k: s.position for k, s in status.items()} == {"vip": 1, "sales": 1, "old": 2, "new": 3}
    # 4 slots busy, 300 s default handle time: a slot frees every 75 s.
    assert [status[k].eta_s for k in ("vip", "old", "new")] == [75.0, 150.0, 225.0]
    assert status["sales"].eta_s is None  # nobody in sales is online
    engine.observe_handled("s", None, 700.0)  # first observation replaces the default
    assert (await engine.status("s", ["vip"]))["vip"].eta_s == 175.0


async def test_drain_on_capacity_freed_serves_oldest_first():
    a = agent("a", capacity=1, open_count=1)
    engine, _ = engine_for([a])
    engine.enqueue(conv("second", queued_at=20))
    engine.enqueue(conv("first", queued_at=10))
    assert await engine.drain("s") == []
    a.open_count = 0  # a resolution frees the slot
    made = await engine.drain("s")
    assert [(m.conversation_id, m.waited_s) for m in made] == [("first", 990.0)]
    a.capacity = 2  # capacity raised
    assert [m.conversation_id for m in await engine.drain("s")] == ["second"]


async def test_a_conversation_nobody_can_take_does_not_block_the_line():
    engine, _ = engine_for([agent("a", skills={"support"})])
    engine.enqueue(conv("sales", skill="sales", queued_at=1))
    engine.enqueue(conv("support", skill="support", queued_at=2))
    assert [m.conversation_id for m in await engine.drain("s")] == ["support"]


# -- bad input -----------------------------------------------------------------------------
def test_negative_capacity_is_refused_with_a_clear_error():
    with pytest.raises(RoutingInputError, match="agent 'a': capacity must be 0 or more, got -1"):
        agent("a", capacity=-1)
    with pytest.raises(RoutingInputError, match="status must be one of"):
        agent("a", status="busy")
    with pytest.raises(RoutingInputError, match="priority must be an integer"):
        conv("c", priority="high")


# -- atomic claims over real storage -----------------------------------------------------------
class LaggyStorage(MemoryStorage):
    """The memory backend with network-like pauses around each call used by routing,
    so that concurrent routing passes really interleave between read and write."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)

    async def _lag(self) -> None:
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)

    async def get_conversation(self, *args, **kw):
        await self._lag()
        return await super().get_conversation(*args, **kw)

    async def get_agent(self, *args, **kw):
        await self._lag()
        return await super().get_agent(*args, **kw)

    async def list_conversations(self, *args, **kw):
        await self._lag()
        found = await super().list_conversations(*args, **kw)
        await self._lag()
        return found

    async def update_conversation(self, *args, **kw):
        await self._lag()
        return await super().update_conversation(*args, **kw)


class RecordingSource(StorageSource):
    """The real storage source, recording every claim it reports as won."""

    won: Counter

    async def claim(self, conversation, agent):
        outcome = await super().claim(conversation, agent)
        if outcome is Claim.CLAIMED:
            self.won[conversation.id] += 1
        return outcome


class NaiveSource(RecordingSource):
    """What routing without compare-and-set does: read, check, write. It must double-assign."""

    async def claim(self, conversation, agent):
        stored = await self.storage.get_conversation(conversation.site_id, conversation.id)
        record = await self.storage.get_agent(conversation.site_id, agent.id)
        if await self.open_count(conversation.site_id, record) >= record.capacity:
            return Claim.AGENT_FULL
        stored.state, stored.assignee_id = ASSIGNED, agent.id
        await self.storage.update_conversation(stored)
        self.won[conversation.id] += 1
        return Claim.CLAIMED


async def crowd(storage, agents=25, conversations=150, seed=3):
    rng = random.Random(seed)
    await storage.create_site(Site(id="s", name="S", widget_key="w"))
    capacity = {}
    for i in range(agents):
        capacity[f"a{i}"] = rng.randint(1, 4)
        await storage.create_agent(
            Agent(f"a{i}", "s", f"a{i}@x", "A", "-", capacity=capacity[f"a{i}"], status="online")
        )
    for i in range(conversations):
        await storage.create_conversation(Conversation(f"c{i}", "s", f"v{i}", state=QUEUED))
    return capacity


async def race(source_type, storage, policies=("weighted", "least_open", "round_robin")):
    """Three "processes" (engines with their own locks and sources) x three passes each,
    plus agents picking from the pool at the same time. Each process heard of its own
    share of the arrivals plus a common third: they race for the same conversations
    and, with different ones, for the same agents' last slots."""
    won: Counter = Counter()
    kernel = kernel_with()
    engines = []
    for n, name in enumerate(policies):
        source = source_type(storage)
        source.won = won
        engine = build_engine(kernel, source, policy=name)
        for stored in await storage.list_conversations("s", state=QUEUED, limit=1000):
            if int(stored.id[1:]) % (len(policies) + 1) in (n, len(policies)):
                engine.enqueue(await source.snapshot(stored))
        engines.append(engine)
    passes = [e.drain("s") for e in engines for _ in range(3)]
    picks = [e.pick("s", f"a{i}") for e in engines for i in range(0, 25, 5)]
    await asyncio.gather(*passes, *picks)
    return won, engines


async def assigned_per_agent(storage):
    held = await storage.list_conversations("s", state=ASSIGNED, limit=1000)
    return held, Counter(c.assignee_id for c in held)


@pytest.mark.parametrize(
    ("seed", "policies"),
    [
        (1, ("weighted", "least_open", "round_robin")),
        (2, ("least_open", "least_open", "least_open")),
        (3, ("weighted", "weighted", "weighted")),
        (11, ("least_open", "weighted", "least_open")),
    ],
)
async def test_racing_routing_passes_never_double_assign_nor_overfill(seed, policies):
    storage = LaggyStorage(seed=seed)
    capacity = await crowd(storage, seed=seed)
    won, engines = await race(RecordingSource, storage, policies)
    held, per_agent = await assigned_per_agent(storage)
    assert max(won.values()) == 1, "a conversation was claimed twice"
    assert {c.id: c.assignee_id for c in held}.keys() == set(won)
    assert all(per_agent[a] <= cap for a, cap in capacity.items()), "capacity exceeded"
    # Give-backs after a lost race leave room; one more pass fills every slot.
    for engine in engines:
        await engine.drain("s")
    held, per_agent = await assigned_per_agent(storage)
    assert len(held) == min(sum(capacity.values()), 150)
    assert all(per_agent[a] <= cap for a, cap in capacity.items())


async def test_the_race_harness_catches_routing_without_compare_and_set():
    storage = LaggyStorage(seed=11)
    capacity = await crowd(storage)
    won, _ = await race(NaiveSource, storage)
    _, per_agent = await assigned_per_agent(storage)
    doubled = sum(1 for n in won.values() if n > 1)
    overfilled = sum(1 for a, cap in capacity.items() if per_agent[a] > cap)
    assert doubled + overfilled > 0


async def test_claim_gives_back_when_another_process_filled_the_agent():
    storage = MemoryStorage()
    await storage.create_site(Site(id="s", name="S", widget_key="w"))
    await storage.create_agent(Agent("a", "s", "a@x", "A", "-", capacity=1, status="online"))
    for cid in ("c1", "c2"):
        await storage.create_conversation(Conversation(cid, "s", f"v-{cid}", state=QUEUED))
    source = StorageSource(storage)
    snap = (await source.agents("s"))[0]
    assert await source.claim(conv("c1"), snap) is Claim.CLAIMED
    assert await source.claim(conv("c1"), snap) is Claim.GONE
    assert await source.claim(conv("c2"), snap) is Claim.AGENT_FULL
    stored = await storage.get_conversation("s", "c2")
    assert stored.state == QUEUED and stored.assignee_id is None


# -- the running plugin: events in, assignments and positions out --------------------------------
def server_config(tmp_path) -> str:
    return (
        f'[server]\ndata_dir = "{tmp_path}"\nreload = false\n'
        '[storage]\nbackend = "memory"\n[routing]\nsweep_interval_s = 0\n'
    )


class Events:
    def __init__(self):
        self.seen = []

    @hookimpl
    def kefu_event(self, kernel, event):
        self.seen.append(event)

    def of(self, type):
        return [e for e in self.seen if e.type == type]


async def test_plugin_routes_on_events_and_drains_when_capacity_frees(
    aiohttp_client, write_config, tmp_path
):
    path = write_config(server_config(tmp_path))
    events = Events()
    kernel = kernel_with(events, path=path)
    await aiohttp_client(create_app(kernel))
    storage, service = kernel.storage, service_of(kernel)
    await storage.create_site(Site(id="s", name="S", widget_key="w"))
    await storage.create_agent(Agent("a1", "s", "a1@x", "A", "-", capacity=1, status="online"))
    await storage.create_agent(Agent("a2", "s", "a2@x", "B", "-", capacity=1, status="offline"))

    async def arrive(cid):
        await storage.create_conversation(Conversation(cid, "s", f"v-{cid}", state=QUEUED))
        await kernel.emit("conversation.queued", "s", conversation_id=cid)
        await service.settle()  # passes run in a task after the event

    def assigned():
        return [
            (e.data["conversation_id"], e.data["agent_id"])
            for e in events.of("conversation.assigned")
        ]

    await arrive("c1")
    await arrive("c2")
    assert assigned() == [("c1", "a1")]
    waiting = events.of("queue.updated")[-1].data["positions"]
    assert waiting == {"c2": {"position": 1, "eta_s": 300.0}}

    c1 = await storage.get_conversation("s", "c1")  # resolve frees a1
    c1.state, c1.resolved_at = RESOLVED, c1.meta["assigned_at"] + 120
    await storage.update_conversation(c1)
    await kernel.emit("conversation.resolved", "s", conversation_id="c1")
    await service.settle()
    assert assigned()[-1] == ("c2", "a1")
    assert service.engine.handle_times.mean("s", None) == 120.0

    await arrive("c3")  # a1 is full, a2 offline
    a2 = await storage.get_agent("s", "a2")
    a2.status = "online"
    await storage.update_agent(a2)
    await kernel.emit("agent.presence", "s", agent_id="a2", status="online")
    await service.settle()
    assert assigned()[-1] == ("c3", "a2")

    await arrive("c4")
    a2.capacity = 2
    await storage.update_agent(a2)
    await kernel.emit("agent.capacity_changed", "s", agent_id="a2")
    await service.settle()
    assert assigned()[-1] == ("c4", "a2")
    assert len(assigned()) == 4


async def test_weights_and_policy_reload_live(aiohttp_client, write_config, tmp_path):
    head = server_config(tmp_path)
    path = write_config(head + "[routing.weights]\nload = 1\n")
    kernel = kernel_with(path=path)
    await aiohttp_client(create_app(kernel))
    engine = service_of(kernel).engine
    assert engine.policy.weights["load"] == 1.0

    path.write_text(head + "[routing.weights]\nload = 7\n")
    assert await apply_reload(kernel)
    assert engine.policy.weights["load"] == 7.0

    path.write_text(head + "[routing.weights]\nnot_a_factor = 7\n")
    assert await apply_reload(kernel)  # valid TOML and schema; the engine refuses it
    assert engine.policy.weights["load"] == 7.0

    path.write_text(head.replace("sweep", 'policy = "least_open"\nsweep'))
    assert await apply_reload(kernel)
    assert engine.policy.name == "least_open"
