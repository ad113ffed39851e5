"""Degradation (issue 16): hysteresis, each sensor against an injected condition, shedding,
admission refusals, the never-shed path, the override (REST, CLI, expiry) and metrics."""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import threading
import time

import orjson
import pytest
from chat_support import (
    add_site,
    app_kernel,
    login,
    make_kernel,
    open_chat,
    visitor_session,
    ws_peer,
)

from kefu.core.pressure import STEADY, meters
from kefu.core.storage import GroupCommit
from kefu.core.types import DegradableFeature, PressureReading
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.degradation import api as degrade_cli
from kefu.plugins.degradation.levels import Hysteresis

ENABLE = '[plugins]\nenable = ["kefu.plugins.degradation"]\n'
#: thresholds no loaded test machine reaches by itself: each test lowers the one it drives
QUIET = (
    "[degradation.thresholds]\n"
    "loop_lag_ms = [5000, 6000, 7000]\nloop_busy = [50, 60, 70]\n"
    "sojourn_ms = [5000, 6000, 7000]\nstore_ms = [5000, 6000, 7000]\n"
    "batch_ratio = [1e6, 2e6, 3e6]\nslow_consumers = [0.99, 0.995, 0.999]\n"
    "cpu = [50, 60, 70]\nrss = [50, 60, 70]\nfds = [0.99, 0.995, 0.999]\n"
    "gc_ms_per_s = [5000, 6000, 7000]\nhandshakes_per_s = [1e6, 2e6, 3e6]\n"
    "sessions_per_s = [1e6, 2e6, 3e6]\n"
)


#: The built-in features shed at level 1 and (besides) at level 2, in shedding order
#: (priority; the level-2 ones interleave: ``bot_kb_feedback`` 30, ``kb_suggestions`` 35,
#: ``bot_embeddings`` 40).
LEVEL_1 = (
    "typing",
    "presence",
    "read_receipts",
    "heartbeat",
    "ws_pings",
    "longpoll_interval",
    "history_pages",
)
LEVEL_2 = ("bot_kb_feedback", "kb_suggestions", "bot_embeddings")
#: Both, in shedding order: (priority, name)
SHED_AT_2 = (
    "typing",
    "presence",
    "bot_kb_feedback",
    "read_receipts",
    "kb_suggestions",
    "bot_embeddings",
    "heartbeat",
    "ws_pings",
    "longpoll_interval",
    "history_pages",
)


def config(extra_thresholds: str = "", settings: str = "") -> str:
    lines = QUIET
    for line in extra_thresholds.strip().splitlines():
        key = line.split("=")[0].strip()
        lines = "\n".join(line if row.startswith(key + " ") else row for row in lines.splitlines())
    return ENABLE + "[degradation]\ninterval_s = 0.05\n" + settings + lines + "\n"


async def until(predicate, within: float = 5.0, step: float = 0.02):
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


class Recorder:
    """A throw-away plugin: a sheddable feature, pressure readings, the events."""

    def __init__(self) -> None:
        self.enabled: list[tuple[str, bool]] = []
        self.events: list[dict] = []
        self.changes: list[tuple[int, int]] = []
        self.reading = 0.0
        self.on_change = None  # a test's callback at each level change: (old, new)

    @hookimpl
    def kefu_degradation_features(self, kernel):
        def switch(name):
            return lambda on: self.enabled.append((name, on))

        return [
            DegradableFeature("third.low", 5, switch("third.low"), 1),
            DegradableFeature("third.l2", 1, switch("third.l2"), 2),
            DegradableFeature("acks", 1, switch("acks"), 1),  # never shed: refused
        ]

    @hookimpl
    def kefu_degradation_pressure(self, kernel):
        return [PressureReading("third.queue", self.reading)]

    @hookimpl
    def kefu_degradation_level_changed(self, kernel, old, new):
        self.changes.append((old, new))
        if self.on_change is not None:
            self.on_change(old, new)

    @hookimpl
    def kefu_event(self, kernel, event):
        if event.type == "degradation.level_changed":
            self.events.append(dict(event.data))


async def client_for(aiohttp_client, tmp_path, extra: str, recorder: Recorder | None = None):
    plugins = (("recorder", recorder),) if recorder is not None else ()
    kernel = make_kernel(tmp_path, extra, extra_plugins=plugins)
    return await aiohttp_client(create_app(kernel))


# -- hysteresis --------------------------------------------------------------------------
THRESHOLDS = {"lag": (10.0, 20.0, 30.0)}


def test_levels_enter_fast_leave_slowly_with_a_dwell():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.5)
    assert h.update({"lag": 35}, THRESHOLDS, 0.0) is None  # one sample is not a load
    assert h.update({"lag": 35}, THRESHOLDS, 0.1) == 3  # two: straight to 3
    assert h.cause == {"lag": 35}
    # calm from 0.2 on: one step per leave_s, each level held min_dwell_s
    changes = []
    for i in range(2, 80):
        now = i / 10
        new = h.update({"lag": 0}, THRESHOLDS, now)
        if new is not None:
            changes.append((round(now, 1), new))
    assert [level for _, level in changes] == [2, 1, 0]
    times = [at for at, _ in changes]  # (float clock: within one sample)
    assert times == pytest.approx([1.6, 3.1, 4.6], abs=0.11)  # back to 0 within 5 s of calm


def test_levels_do_not_flap_in_the_band_between_exit_and_entry():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.0, exit_ratio=0.5)
    h.update({"lag": 12}, THRESHOLDS, 0.0)
    assert h.update({"lag": 12}, THRESHOLDS, 0.1) == 1
    changes = 0
    for i in range(2, 600):  # a minute of a noisy steady load: 6..19.9 ms
        value = 6 + (i * 7.3) % 13.9
        changes += h.update({"lag": value}, THRESHOLDS, i / 10) is not None
    assert changes == 0 and h.level == 1
    # a lone spike above L2 in the noise does not move it either
    assert h.update({"lag": 25}, THRESHOLDS, 61.0) is None
    assert h.update({"lag": 12}, THRESHOLDS, 61.1) is None
    assert h.level == 1


def test_levels_enter_the_level_every_sample_of_the_run_wanted():
    h = Hysteresis(enter_samples=3, leave_s=1.0, min_dwell_s=0.0, exit_ratio=0.5)
    h.update({"lag": 35}, THRESHOLDS, 0.0)
    h.update({"lag": 15}, THRESHOLDS, 0.1)
    assert h.update({"lag": 35}, THRESHOLDS, 0.2) == 1


# -- sensors, each against an injected condition ----------------------------------------
#: Loop turns of the injected block within which it must be detected: 15 turns of at
#: least 100 ms each is 1.5 s where ``time.sleep(0.005)`` sleeps 5 ms (a quiet machine).
DETECT_WITHIN_TURNS = 15


async def test_a_blocking_call_in_the_loop_raises_the_level_and_it_comes_back(
    aiohttp_client, tmp_path
):
    # Detection is counted in the sensor's samples and in turns of the blocked loop, not
    # in wall time: a sample costs the sampler two to three turns of the blocked loop (the
    # timer fires in one, the task resumes in the next), and a turn is 20 time.sleep(0.005)
    # calls, which at nice 10 on a loaded machine sleep 6-10 ms each (outliers to 190 ms,
    # little of it counted as run-queue wait): the same 3 samples took 1.4-3.1 s of wall
    # time there, where the old "< 2 s" (which also counted the test's own polling and the
    # hogs' teardown) failed with unchanged sensor code.
    recorder = Recorder()
    extra = config("loop_lag_ms = [60, 5000, 6000]", "leave_s = 0.3\nmin_dwell_s = 0.3\n")
    client = await client_for(aiohttp_client, tmp_path, extra, recorder)
    kernel = app_kernel(client.app)
    controller = kernel.pressure
    settings = controller.settings
    loop = asyncio.get_running_loop()
    # past the controller's warm-up (start-up stalls choose no level) and quiet
    await until(lambda: (controller._warm_until or 1e18) < loop.time(), within=5)
    await until(lambda: controller.level == 0, within=10)
    stop = asyncio.Event()
    turns = [0]
    seen: dict[str, int] = {}  # at the level change: samples and turns since the block began

    async def busy(counts: bool):  # the injected condition: handlers blocking 5 ms each
        while not stop.is_set():
            time.sleep(0.005)  # noqa: ASYNC251 (a blocking call in the loop, on purpose)
            if counts:
                turns[0] += 1
            await asyncio.sleep(0)

    def changed(old, new):
        seen.setdefault("samples", controller.sensors._ticks - began)
        seen.setdefault("turns", turns[0])

    recorder.on_change = changed
    began = controller.sensors._ticks
    hogs = [asyncio.ensure_future(busy(i == 0)) for i in range(20)]  # >= 100 ms per turn
    try:
        await until(lambda: controller.level == 1, within=10)
    finally:
        stop.set()
        await asyncio.gather(*hogs)
    # the first sample may have begun before the block; the lag is a median of lag_window
    # samples and enter_samples of those medians enter the level
    assert seen["samples"] <= 1 + settings.lag_window // 2 + settings.enter_samples, seen
    assert seen["turns"] <= DETECT_WITHIN_TURNS, seen
    event = recorder.events[0]
    assert event["old"] == 0 and event["new"] == 1 and event["reason"] == "sensors"
    assert "loop_lag_ms" in event["cause"]
    assert "typing" in event["shed"] and "third.low" in event["shed"]
    assert recorder.changes[0] == (0, 1)
    await until(lambda: controller.level == 0, within=5)
    assert ("third.low", False) in recorder.enabled and recorder.enabled[-1] == ("third.low", True)


async def test_a_slow_commit_is_a_slow_batch_and_a_capped_one_a_standing_queue(
    aiohttp_client, tmp_path
):
    # The memory backend has no group commit and SQLite cannot be slowed on demand: a
    # GroupCommit with a stub flush that takes 120 ms is the slow storage.
    extra = config("sojourn_ms = [30, 5000, 6000]\nbatch_ratio = [1e6, 2e6, 3e6]")
    client = await client_for(aiohttp_client, tmp_path, extra)
    kernel = app_kernel(client.app)
    delay = [0.001]

    async def flush(items):
        await asyncio.sleep(delay[0])
        return items

    async def arrivals(commit, stop):  # open loop, as clients send: one item every 5 ms
        pending = set()
        while not stop.is_set():
            task = asyncio.ensure_future(commit.submit(1))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)

    commit = GroupCommit(flush, name="test-slow")
    assert meters()["sojourn:storage.test-slow"] is commit.sojourn
    assert meters()["latency:storage.test-slow"] is commit.latency
    stop = asyncio.Event()
    producer = asyncio.ensure_future(arrivals(commit, stop))
    await asyncio.sleep(0.3)  # fast commits set the batch floor
    controller = kernel.pressure
    assert controller.readings["sojourn_ms"] < 30
    # slow commits that take everything queued: a slow batch, no standing queue (each
    # item waits for the commit in flight, its service; it read ~108 ms as a queue before)
    delay[0] = 0.12
    await until(lambda: controller.readings["batch_ratio"] > 10)  # 120 ms against ~1 ms
    await until(lambda: controller.readings["commit_ms"] > 100)
    seen = []
    for _ in range(15):
        await asyncio.sleep(0.05)
        seen.append(controller.readings["sojourn_ms"])
    assert max(seen) < 30, seen
    assert kernel.pressure.level == 0
    stop.set()
    await producer
    await commit.close()
    # the same commits taking two items each while 24 arrive: a queue that stands
    capped = GroupCommit(flush, name="test-capped", max_batch=2)
    stop = asyncio.Event()
    producer = asyncio.ensure_future(arrivals(capped, stop))
    try:
        await until(lambda: kernel.pressure.level == 1, within=3)
        assert "sojourn_ms" in controller.hysteresis.cause
    finally:
        stop.set()
        delay[0] = 0.001
        await producer
        await capped.close()


#: Samples from a message overload's start to its level change at most: 1 s at the default
#: ``interval_s`` of 100 ms (issue 16's target); the build-up of the delay, the
#: ``store_ms`` window (5) and the entry samples (2) fit in it.
STORE_DETECT_SAMPLES = 10


async def test_a_message_overload_of_the_store_is_seen_within_a_second_not_a_burst(
    aiohttp_client, tmp_path
):
    # The slow storage of issue 16's bench: a commit costs 2 ms plus 4 ms per message (the
    # store takes 250 msg/s at most). At P (50 msg/s) a commit takes ~3 ms and holds what
    # arrived during the one before; at 333 msg/s each batch is larger than the last and
    # its commit longer: every message waits longer, yet no batch waits longer than the
    # commit before it, so sojourn_ms (less the service time) reads ~0 until batches are
    # capped at max_batch (256: a 1 s commit) - the 5.9 s / 17.4 s of the bench. The
    # detection is counted in the sampler's samples from the overload's first message
    # and checked against the level-change event's own time, not the test's wall time.
    recorder = Recorder()
    extra = config("store_ms = [40, 5000, 6000]", "interval_s = 0.1\n").replace(
        "interval_s = 0.05\n", ""
    )
    client = await client_for(aiohttp_client, tmp_path, extra, recorder)
    kernel = app_kernel(client.app)
    controller = kernel.pressure
    assert controller.settings.interval_s == 0.1
    loop = asyncio.get_running_loop()
    await until(lambda: (controller._warm_until or 1e18) < loop.time(), within=5)

    async def flush(items):
        await asyncio.sleep(0.002 + 0.004 * len(items))
        return items

    gap = [0.02]  # seconds between two messages: 50 msg/s (P)

    async def arrivals(commit, stop):  # open loop on a schedule: a late sleep is no lull
        pending = set()
        due = loop.time()
        while not stop.is_set():
            now = loop.time()
            while due <= now:
                task = asyncio.ensure_future(commit.submit(1))
                pending.add(task)
                task.add_done_callback(pending.discard)
                due += gap[0]
            await asyncio.sleep(due - now)
        await asyncio.gather(*pending)

    commit = GroupCommit(flush, name="test-overload")
    stop = asyncio.Event()
    producer = asyncio.ensure_future(arrivals(commit, stop))
    seen: dict[str, float] = {}
    sojourn: list[float] = []
    began = 0

    def changed(old, new):
        seen.setdefault("samples", controller.sensors._ticks - began)
        seen.setdefault("at", time.time())

    recorder.on_change = changed
    try:
        await asyncio.sleep(1.5)  # P: the store keeps up, no level
        assert controller.level == 0 and not recorder.events, ("at P", recorder.events)
        # a burst (0.2 s at 333 msg/s; with its drain shorter than store_ms's
        # half-second window) and back to P: the batches grow and drain again, some
        # message got through fast within every window: no level
        gap[0] = 0.003
        await asyncio.sleep(0.2)
        gap[0] = 0.02
        await asyncio.sleep(2.0)
        assert controller.level == 0 and not recorder.events, ("burst", recorder.events)
        # the same rate, sustained: a message overload
        began = controller.sensors._ticks
        started = time.time()
        gap[0] = 0.003
        while controller.level == 0 and controller.sensors._ticks - began < 40:
            sojourn.append(controller.readings["sojourn_ms"])
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        gap[0] = 0.02
        await producer
        await commit.close()
    assert controller.level == 1, (controller.readings, seen)
    event = recorder.events[0]
    assert event["old"] == 0 and event["new"] == 1 and "store_ms" in event["cause"], event
    assert seen["samples"] <= STORE_DETECT_SAMPLES, (seen, sojourn)
    print(
        "detected after",
        seen["samples"],
        "samples",
        round(seen["at"] - started, 2),
        "s;",
        "sojourn_ms meanwhile at most",
        round(max(sojourn), 1),
    )
    await until(lambda: controller.level == 0, within=10)


async def test_a_paused_reader_counts_as_a_slow_consumer_and_level_3_closes_it(
    aiohttp_client, tmp_path
):
    extra = config("slow_consumers = [0.3, 5000, 6000]", "slow_outbox_frames = 16\n")
    client = await client_for(aiohttp_client, tmp_path, extra)
    kernel = app_kernel(client.app)
    chat = await open_chat(client)
    # an agent connection whose reader is paused: the gateway's connection, never drained
    from kefu.core.types import Principal

    principal = Principal("agent", chat.site.agent.id, chat.site.site.id, frozenset({"agent"}))
    paused = await kernel.gateway.open(principal, "test")
    for n in range(40):
        paused.push(orjson.dumps({"op": "noop", "n": n}))
    await until(lambda: kernel.pressure.readings["slow_consumers"] >= 0.3)
    await until(lambda: kernel.pressure.level == 1)
    await kernel.pressure.override(3, 30)
    await until(lambda: paused.closed)
    assert paused.close_reason == "overloaded"
    assert kernel.pressure.closed_slow >= 1
    assert not chat.visitor.ws.closed  # the ones that read are not touched
    await kernel.pressure.override(None, 1)


async def test_gc_time_cpu_memory_fds_and_rates_are_read(aiohttp_client, tmp_path):
    extra = config(
        "gc_ms_per_s = [1, 5000, 6000]\ncpu = [0.3, 50, 60]\nrss = [0.5, 1e6, 2e6]",
        "rss_budget_mb = 1\n",
    )
    recorder = Recorder()
    client = await client_for(aiohttp_client, tmp_path, extra, recorder)
    kernel = app_kernel(client.app)
    controller = kernel.pressure
    await until(lambda: controller.readings["rss"] > 1.0)  # far more than 1 MiB
    # GC: cyclic garbage collected on purpose, timed through gc.callbacks
    for _ in range(20):
        junk = [[] for _ in range(20000)]
        for a, b in itertools.pairwise(junk):
            a.append(b)
            b.append(a)
        del junk
        gc.collect()
    await until(lambda: controller.readings["gc_ms_per_s"] > 1.0)
    # CPU: a thread spinning for a second (process time counts every thread)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        # (0.15: at load 11-12 under nice 10 the spinner got less than 0.3 of a core)
        await until(lambda: controller.readings["cpu"] > 0.15, within=15)
    finally:
        stop.set()
        spinner.join()
    # fds against a limit injected low (the real soft limit is shared by the test run)
    opened = [os.pipe() for _ in range(20)]
    try:
        controller.sensors._fd_limit = len(os.listdir("/proc/self/fd")) + 5
        await until(lambda: controller.readings["fds"] > 0.8, within=3)
    finally:
        for r, w in opened:
            os.close(r)
            os.close(w)
    # session-creation and handshake rates, counted by the middleware
    site = await add_site(kernel)
    for _ in range(30):
        await visitor_session(client, site.site.widget_key)
    await until(lambda: controller.readings["sessions_per_s"] > 5)
    for _ in range(10):
        resp = await client.get("/v1/ws?token=nope")
        resp.release()
    await until(lambda: controller.readings["handshakes_per_s"] > 2)
    # a third party's reading (kefu_degradation_pressure): 0.9 is level 2
    recorder.reading = 0.9
    await until(lambda: controller.readings["plugin"] == 0.9)
    assert controller.sensors.extra["third.queue"] == 0.9
    await until(lambda: controller.hysteresis.level == 2)
    assert controller.sensors.cost_s < 1.0


# -- shedding, admission and the never-shed path -----------------------------------------
async def test_level_3_sheds_extras_refuses_newcomers_and_never_touches_chat(
    aiohttp_client, tmp_path
):
    recorder = Recorder()
    client = await client_for(aiohttp_client, tmp_path, config(), recorder)
    kernel = app_kernel(client.app)
    chat = await open_chat(client)
    await kernel.pressure.override(3, 60, by="test")
    assert kernel.pressure.level == 3
    # features shed in priority order, the never-shed name refused
    names = [f["name"] for f in kernel.pressure.snapshot()["features"]]
    assert "acks" not in names
    assert kernel.pressure.shed == ["third.l2", "third.low", *SHED_AT_2]
    # the connected visitor still sends: acknowledged, stored, delivered
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="c1", text="hi")
    ack = await chat.visitor.expect("ack", cid="c1")
    got = await chat.agent.expect("message", cid="c1")
    assert got["seq"] == ack["seq"]
    stored = await kernel.storage.list_messages(chat.site.site.id, chat.conversation_id)
    assert [m.cid for m in stored] == ["c1"]
    # and the agent answers: delivered to the visitor
    await chat.agent.send(op="send", conversation_id=chat.conversation_id, cid="a1", text="yes")
    await chat.agent.expect("ack", cid="a1")
    await chat.visitor.expect("message", cid="a1")
    # read receipts dropped, typing coalesced (the first goes, a repeat within 5 s does not)
    await chat.visitor.send(op="read", conversation_id=chat.conversation_id, seq=2)
    await chat.visitor.send(op="typing", conversation_id=chat.conversation_id, state=True)
    await chat.agent.expect("typing")
    await asyncio.sleep(1.1)  # past the normal 1 s coalescing, inside the shed 5 s
    await chat.visitor.send(op="typing", conversation_id=chat.conversation_id, state=True)
    await chat.visitor.send(op="ping")
    await chat.visitor.expect("pong")
    assert [f for f in await chat.agent.quiet(0.3) if f["op"] in ("read", "typing")] == []
    assert kernel.gateway.degraded.dropped["read_receipts"] == 1
    assert kernel.gateway.degraded.dropped["typing"] == 1
    # newcomers: 503 with a jittered Retry-After, before any work
    resp = await client.get(f"/v1/ws?token={chat.visitor_token}")
    assert resp.status == 503
    assert 5 <= int(resp.headers["Retry-After"]) <= 15
    assert (await resp.json())["error"]["code"] == "busy"
    resp = await client.post("/v1/poll/open", headers={"Authorization": "Bearer x"})
    assert resp.status == 503
    resp = await client.get("/widget.js")
    assert resp.status == 503
    # level 2: the widget config says busy; new WebSockets are let in again
    await kernel.pressure.override(2, 60)
    resp = await client.get(f"/v1/widget/config?key={chat.site.site.widget_key}")
    body = await resp.json()
    assert resp.status == 200 and body["busy"] is True and body["online"] is False
    peer = await ws_peer(client, chat.visitor_token)
    await peer.close()
    assert kernel.pressure.shed == ["third.l2", "third.low", *SHED_AT_2]
    # level 1: the level-2 feature is back, restored before the others
    await kernel.pressure.override(1, 60)
    assert kernel.pressure.shed == ["third.low", *LEVEL_1]
    assert recorder.enabled[-1] == ("third.l2", True)
    await kernel.pressure.override(None, 1)
    assert kernel.pressure.level == 0 and kernel.pressure.shed == []
    assert [c for c in recorder.changes] == [(0, 3), (3, 2), (2, 1), (1, 0)]
    reasons = [e["reason"] for e in recorder.events]
    assert reasons == ["override", "override", "override", "override ended"]


async def test_a_feature_level_from_the_config_and_zero_never_sheds(aiohttp_client, tmp_path):
    extra = config(settings="[degradation.features]\ntyping = 0\n'third.l2' = 1\n")
    recorder = Recorder()
    client = await client_for(aiohttp_client, tmp_path, extra, recorder)
    kernel = app_kernel(client.app)
    await kernel.pressure.override(1, 60)
    assert "typing" not in kernel.pressure.shed and "third.l2" in kernel.pressure.shed


# -- the override: REST, CLI, expiry; metrics; the status page ---------------------------
async def test_override_through_rest_and_cli_expires_and_shows(aiohttp_client, tmp_path):
    client = await client_for(aiohttp_client, tmp_path, config() + '[metrics]\npath = "/metrics"\n')
    kernel = app_kernel(client.app)
    site = await add_site(kernel)
    admin = await login(client, site.site.id, site.admin.email)
    agent = await login(client, site.site.id, site.agent.email)
    path = "/v1/admin/degradation"
    resp = await client.put(path, json={"level": 2}, headers={"Authorization": f"Bearer {agent}"})
    assert resp.status == 403
    # the CLI, in a thread: it talks to the running server over HTTP
    url = str(client.make_url("/"))
    args = argparse.Namespace(level=2, clear=False, ttl=1.0, url=url, token=admin, json=True)
    assert await asyncio.to_thread(degrade_cli.run, args) == 0
    assert kernel.pressure.level == 2
    stored = await kernel.storage.get_record("", "degradation", "override")
    assert stored.data["level"] == 2 and stored.data["by"].endswith(site.admin.id)
    resp = await client.get(path, headers={"Authorization": f"Bearer {admin}"})
    status = await resp.json()
    assert status["level"] == 2 and status["override"]["level"] == 2
    assert "loop_lag_ms" in status["sensors"]
    text = degrade_cli.describe(status)
    assert "level 2" in text and "override: level 2" in text
    metrics = await (await client.get("/metrics")).text()
    assert "kefu_degradation_level 2" in metrics
    assert 'kefu_degradation_sensor{sensor="loop_lag_ms"}' in metrics
    assert 'kefu_degradation_shed_total{feature="typing"} 1' in metrics
    page = await client.get("/admin/status.json", headers={"Authorization": f"Bearer {admin}"})
    if page.status == 200:
        assert (await page.json())["degradation"]["level"] == 2
    # it expires by itself (ttl 1 s): the sensors choose again
    await until(lambda: kernel.pressure.level == 0, within=4)
    assert kernel.pressure.snapshot()["override"] is None


async def test_another_worker_takes_the_override_from_storage(aiohttp_client, tmp_path):
    client = await client_for(aiohttp_client, tmp_path, config("", "override_poll_s = 0.1\n"))
    kernel = app_kernel(client.app)
    # what another worker's override() wrote
    until_ts = time.time() + 30
    await kernel.storage.put_record("", "degradation", "override", {"level": 1, "until": until_ts})
    await until(lambda: kernel.pressure.level == 1)
    await kernel.storage.put_record("", "degradation", "override", {"level": None, "until": 0})
    await until(lambda: kernel.pressure.level == 0)


async def test_without_the_plugin_the_kernel_is_steady(aiohttp_client, tmp_path):
    kernel = make_kernel(tmp_path)
    await aiohttp_client(create_app(kernel))
    assert kernel.pressure is STEADY and kernel.pressure.level == 0
    with pytest.raises(RuntimeError):
        await kernel.pressure.override(2, 10)
