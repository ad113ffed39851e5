"""Degradation without flapping (issue 16): the level must not follow the machine's noise or
the relief its own shedding brings.

- A steady overload that shedding relieves (the readings calm down while the traffic
  stays) used to make the level leave and come straight back every few seconds: the
  inflow gate and the probe back-off keep it under 2 changes a minute, and a real drop
  of the traffic still brings it back to 0 within 5 s.
- An idle worker on a machine whose cores other processes hold wakes late: the run-queue
  time of the loop thread is taken off the lag, so it reads no pressure and changes
  nothing (before, 4 changes in 20 s at load 18.6).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from aiohttp import web
from chat_support import make_kernel
from test_degradation import config, until

from kefu.core.web_app import create_app
from kefu.plugins.degradation.levels import Baseline, Hysteresis
from kefu.plugins.degradation.sensors import Sensors

THRESHOLDS = {"lag": (40.0, 120.0, 400.0)}


def relieved_plant(h: Hysteresis, inflow, until_s: float, step: float = 0.1):
    """Feed ``h`` a plant that shedding relieves: under 1,000 frames/s or more, lag 100 ms
    at level 0 and 10 ms once shed; under less, 10 ms.

    ``inflow(now)`` is the frames per second offered. Returns the (time, level) changes.
    """
    changes = []
    now = 0.0
    while now < until_s:
        offered = inflow(now)
        lag = 100.0 if h.level == 0 and offered >= 1000.0 else 10.0
        new = h.update({"lag": lag, "inflow_per_s": offered}, THRESHOLDS, now)
        if new is not None:
            changes.append((round(now, 1), new))
        now += step
    return changes


def steady(_now: float) -> float:
    return 1000.0


def test_a_relieved_steady_overload_changes_level_less_than_twice_a_minute():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    changes = relieved_plant(h, steady, 600.0)
    assert changes[0] == (0.1, 1)  # detected at the second sample
    assert len(changes) / 10 < 2  # ten minutes of the same traffic
    # the probes (restore and see) come after 90 s, then 180, 360: each one costs two changes
    leaves = [at for at, level in changes if level == 0]
    assert leaves[0] == pytest.approx(90.1, abs=0.11)
    assert leaves[1] - leaves[0] == pytest.approx(180.1, abs=0.3)


def test_without_the_inflow_gate_the_same_plant_flaps():
    """The test above can fail: probing at once is the old rule, and it oscillates."""
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6, probe_s=1.0)
    h.probe_max_s = 1.0  # no back-off either
    changes = relieved_plant(h, steady, 60.0)
    assert len(changes) > 20


def test_the_level_leaves_within_5_s_once_the_traffic_really_drops():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)

    def traffic(now: float) -> float:
        return 1000.0 if now < 30.0 else 300.0  # the load drops at 30 s

    changes = relieved_plant(h, traffic, 60.0)
    assert changes[0] == (0.1, 1)
    assert changes[1][1] == 0 and 30.0 <= changes[1][0] < 35.0
    assert len(changes) == 2


def test_a_level_three_overload_steps_down_to_0_within_5_s_of_the_drop():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    now, changes = 0.0, []
    while now < 40.0:
        loaded = now < 20.0
        reading = {"lag": 500.0 if loaded else 5.0, "inflow_per_s": 2000.0 if loaded else 500.0}
        new = h.update(reading, THRESHOLDS, now)
        if new is not None:
            changes.append((round(now, 1), new))
        now += 0.1
    assert [level for _, level in changes] == [3, 2, 1, 0]
    assert changes[-1][0] - 20.0 < 5.0


def test_the_lag_a_run_queue_caused_is_not_this_process_s():
    class FakeRunQueue:
        waited = 0.0

        def read(self):
            return self.waited

        def close(self):
            pass

    kernel = make_kernel_stub()
    sensors = Sensors(kernel, kernel.config.section("degradation"))
    sensors.run_queue = clock = FakeRunQueue()
    readings = []
    for _ in range(5):  # the machine: 80 ms late, all of it waiting for a core
        clock.waited += 0.080
        readings.append(sensors.sample(0.080)["loop_lag_ms"])
    assert max(readings[2:]) == pytest.approx(0.0, abs=1e-6)
    for _ in range(3):  # this loop: 80 ms late with a core to itself
        readings.append(sensors.sample(0.080)["loop_lag_ms"])
    assert readings[-1] == pytest.approx(80.0)
    # one stall among three samples is not a load (the median of lag_window = 3)
    for lag in (0.0, 0.0, 0.3, 0.0):
        last = sensors.sample(lag)["loop_lag_ms"]
    assert last == 0.0


def test_a_saturated_loop_reads_busy_even_when_it_waits_for_a_core():
    """``loop_busy``: the loop thread's CPU over the time it could run (wall less its
    run-queue wait). The machine holding the cores half the time does not lower it."""

    class FakeRunQueue:
        waited = on_cpu = 0.0

        def read(self):
            return self.waited

        def close(self):
            pass

    kernel = make_kernel_stub()
    sensors = Sensors(kernel, kernel.config.section("degradation"))
    sensors.run_queue = clock = FakeRunQueue()
    busy, idle = [], []
    now = 1000.0
    for _ in range(8):  # saturated: runs 50 ms and waits 50 ms for a core of each 100 ms
        now += 0.1
        clock.on_cpu += 0.05
        clock.waited += 0.05
        sensors._own_lag(0.05)  # reads the clock, as a sample does first
        busy.append(sensors._loop_busy(now))
    for _ in range(8):  # idle on a busy machine: sleeps 100 ms, then waits 80 ms to run 1 ms
        now += 0.181
        clock.on_cpu += 0.001
        clock.waited += 0.08
        sensors._own_lag(0.08)
        idle.append(sensors._loop_busy(now))
    assert busy[-1] == pytest.approx(1.0)
    assert idle[-1] == pytest.approx(0.01, abs=0.001)


def test_loop_busy_from_the_kernel_s_own_schedstat():
    """The real /proc/thread-self/schedstat: a thread spinning between samples reads
    busy, one sleeping between them reads idle."""
    if not os.path.exists("/proc/thread-self/schedstat"):
        pytest.skip("the kernel keeps no run-queue time (schedstat)")
    kernel = make_kernel_stub()
    sensors = Sensors(kernel, kernel.config.section("degradation"))
    spinning = []
    for _ in range(7):
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            pass
        spinning.append(sensors.sample(0.0)["loop_busy"])
    sleeping = []
    for _ in range(7):
        time.sleep(0.05)
        sleeping.append(sensors.sample(0.0)["loop_busy"])
    sensors.stop()
    assert spinning[-1] > 0.85, spinning
    assert sleeping[-1] < 0.3, sleeping


def test_an_idle_store_keeps_no_slow_batch_ratio():
    """The last slow commit's ratio stands while batches are in flight, not once the store
    is idle (it held level 1 for good after the overload bench's traffic stopped)."""
    from kefu.core.pressure import BatchMeter

    kernel = make_kernel_stub()
    sensors = Sensors(kernel, kernel.config.section("degradation"))
    meter = BatchMeter("test-idle-store")
    meter.record(0.001)
    sensors._batch_ratio(0.0)  # the floor: 1 ms
    readings = []
    for k in range(1, 30):
        if k <= 5:
            meter.record(0.080)  # 80 ms commits: 80x the floor
        readings.append(sensors._batch_ratio(k * 0.1))
    assert readings[4] == pytest.approx(80.0)  # the median of five slow samples
    assert readings[-1] == 0.0  # idle for two seconds
    del meter


def make_kernel_stub():
    class Server:
        workers = 1

    class Config:
        server = Server()

        def section(self, name):
            from kefu.plugins.degradation.settings import DegradationSettings

            return DegradationSettings()

    class Kernel:
        config = Config()
        delivery = None

    return Kernel()


HOG = "import time\nt = time.time() + 4\nwhile time.time() < t:\n    pass\n"


def test_an_idle_worker_on_a_saturated_machine_keeps_level_0(tmp_path):
    """The noisy condition, real: a kefu kernel on its own thread at the idle scheduling
    class (SCHED_IDLE, or nice 19 where that is refused), beside four busy processes per
    core (at the test's own nice) for 4 s: the loop thread waits for a core at every
    wake-up, as a worker does on a machine other tenants hold.

    Nice 19 alone is relative: under ``nice -n 10`` the hogs weigh 110 against the thread's
    15 (7x, not nice 0's 68x) and the thread hardly waited, so the test failed for want
    of its condition; SCHED_IDLE weighs 3 whatever the test's nice (37x at nice 10)."""
    if not os.path.exists("/proc/thread-self/schedstat"):
        pytest.skip("the kernel keeps no run-queue time (schedstat)")
    kernel = make_kernel(tmp_path, config("loop_lag_ms = [10, 120, 400]"))
    ready, hogging, hogs_done = threading.Event(), threading.Event(), threading.Event()
    seen: dict = {"waits": [], "lags": []}

    async def serve() -> None:
        runner = web.AppRunner(create_app(kernel))
        await runner.setup()  # kefu_startup: the controller samples from here on
        try:
            controller = kernel.pressure
            loop = asyncio.get_running_loop()
            await until(lambda: (controller._warm_until or 1e18) < loop.time(), within=10)
            await until(lambda: controller.level == 0, within=10)
            seen["changes_before"] = controller.changes
            # idle class from here on (started at the test's priority: on a busy machine an
            # idle-class thread hardly runs at all, and the start-up alone took over 30 s)
            tid = threading.get_native_id()  # this thread only
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except (AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, tid, 19)
            ready.set()
            while not hogs_done.is_set():
                await asyncio.sleep(0.1)
                if not hogging.is_set():
                    continue
                seen["waits"].append(controller.readings["run_queue_ms"])
                seen["lags"].append(controller.readings["loop_lag_ms"])
            seen["changes_after"] = controller.changes
        finally:
            await runner.cleanup()

    server = threading.Thread(target=lambda: asyncio.run(serve()))
    server.start()
    try:
        assert ready.wait(30), "the kernel did not start"
        hogs = [
            subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(4 * (os.cpu_count() or 2))
        ]
        time.sleep(0.5)  # their interpreters started
        hogging.set()
        for hog in hogs:
            try:
                hog.wait(20)
            except subprocess.TimeoutExpired:
                hog.kill()
                hog.wait()
    finally:
        hogs_done.set()
        server.join(30)
    waits = sorted(seen["waits"])
    assert waits and waits[len(waits) // 2] > 10.0, f"no noisy condition: {waits}"
    assert seen["changes_after"] == seen["changes_before"], seen
    lags = sorted(seen["lags"])  # (at load 10 a lone reading of 94 ms was seen: not a level)
    assert lags[len(lags) // 2] < 10.0 and lags[int(len(lags) * 0.8)] < 10.0, lags


def test_a_flood_of_newcomers_is_left_once_it_ends_whatever_the_inflow():
    """The handshake rate counts refused handshakes too: shedding does not calm it, so its
    calm is the flood's end; the inflow of frames (the chat) did not change."""
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    bounds = {"handshakes_per_s": (300.0, 800.0, 1500.0), "lag": (40.0, 120.0, 400.0)}
    now, changes = 0.0, []
    while now < 20.0:
        flooding = 5.0 <= now < 8.0
        reading = {"handshakes_per_s": 2500.0 if flooding else 20.0, "inflow_per_s": 800.0}
        new = h.update(reading, bounds, now)
        if new is not None:
            changes.append((round(now, 1), new))
        now += 0.1
    assert [level for _, level in changes] == [3, 2, 1, 0]
    assert 5.0 < changes[0][0] <= 5.25  # the second flooded sample
    assert changes[-1][0] - 8.0 < 5.0
    # the same levels entered on the loop lag under unchanged traffic stay (the gate)
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    now, levels = 0.0, []
    while now < 20.0:
        lagging = 5.0 <= now < 8.0
        reading = {"lag": 500.0 if lagging else 5.0, "inflow_per_s": 800.0}
        new = h.update(reading, bounds, now)
        if new is not None:
            levels.append(new)
        now += 0.1
    assert levels == [3]


def baseline_run(readings, until_s: float, relative: bool = True, warm_s: float = 1.0):
    """The controller's loop in miniature: every 100 ms the baseline learns the reading,
    the hysteresis judges it against the thresholds scaled to that baseline (after a
    warm-up that chooses no level). ``readings(now)`` is the loop lag in ms. Returns the
    changes, the hysteresis and the baseline."""
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    base = Baseline(tau_s=60.0, factor=2.0, max_scale=4.0)
    changes, now = [], 0.0
    while now < until_s:
        lag = readings(now)
        base.feed(lag, THRESHOLDS["lag"][0], now)
        bounds = {"lag": base.scaled(THRESHOLDS["lag"]) if relative else THRESHOLDS["lag"]}
        if now >= warm_s:
            new = h.update({"lag": lag, "inflow_per_s": 500.0}, bounds, now)
            if new is not None:
                changes.append((round(now, 1), new))
        now += 0.1
    return changes, h, base


def starved(now: float) -> float:
    """A worker whose machine others hold: a steady 60 ms, a little noise (lag 40 enters)."""
    return 60.0 + (7.0 if int(now * 10) % 3 == 0 else -5.0)


def test_relative_thresholds_keep_a_starved_worker_at_level_0_and_still_see_a_step():
    changes, _, base = baseline_run(starved, 120.0)
    assert changes == []  # two minutes on a machine whose normal is 60 ms
    assert 55.0 < base.value < 65.0 and base.scale(40.0) == pytest.approx(base.value / 20.0)
    # the same with absolute thresholds: level 1 from the first second, for good
    changes, h, _ = baseline_run(starved, 120.0, relative=False)
    assert changes[0][0] <= 1.3 and changes[0][1] == 1 and h.level == 1
    # a step of the load on that machine: eight times its normal, seen in two samples
    changes, h, _ = baseline_run(lambda now: 500.0 if now >= 60.0 else starved(now), 62.0)
    assert changes and changes[0][0] <= 60.25
    assert h.level == 2  # the thresholds x ~3: 120 / 360 / 1,200 ms


def test_relative_thresholds_change_nothing_on_a_quiet_machine_and_are_capped():
    # quiet: a normal of 4 ms keeps the configured thresholds; 50 ms enters level 1 as before
    changes, _, base = baseline_run(lambda now: 50.0 if now >= 30.0 else 4.0, 31.0)
    assert base.scale(40.0) == 1.0 and changes == [(30.1, 1)]
    # a machine whose normal is a whole second: the thresholds stop at 4x (160 / 480 / 1600)
    changes, h, base = baseline_run(lambda now: 1000.0, 30.0)
    assert base.scale(40.0) == 4.0 and h.level == 2


def test_a_noisy_inflow_is_no_fall_of_the_load(monkeypatch):
    """The offered rate wanders +-25 % around 1,000 frames/s (a one-second rate of the
    bench's clients did, 68-88 at 50 msg/s): the median of a second of readings is what
    the gate compares, and a level that flaps anyway is held longer at each re-entry."""
    import random

    from kefu.plugins.degradation import levels

    def run(flap_dwell_s: float = 10.0) -> list:
        rng = random.Random(7)
        h = Hysteresis(
            enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6, flap_dwell_s=flap_dwell_s
        )
        return relieved_plant(h, lambda now: 1000.0 * rng.uniform(0.75, 1.25), 600.0)

    changes = run()
    assert len(changes) / 10 < 2, changes  # ten minutes (13 changes)
    monkeypatch.setattr(levels, "INFLOW_SAMPLES", 1)  # the gate on a lone reading
    assert len(run(flap_dwell_s=0.0)) / 10 > 20  # and no dwell back-off: 485 changes


def test_a_level_that_flaps_is_held_longer_each_time():
    h = Hysteresis(enter_samples=2, leave_s=1.0, min_dwell_s=1.5, exit_ratio=0.6)
    assert h.dwell == 1.5
    bounds = {"lag": (40.0, 120.0, 400.0)}
    now, changes = 0.0, []
    while now < 120.0:  # lag bursts of 1 s every 5 s, the inflow halving between them
        burst = now % 5.0 < 1.0
        reading = {"lag": 100.0 if burst else 5.0, "inflow_per_s": 1000.0 if burst else 400.0}
        new = h.update(reading, bounds, now)
        if new is not None:
            changes.append((round(now, 1), new, h.dwell))
        now += 0.1
    entries = [dwell for _, level, dwell in changes if level == 1]
    assert entries[:4] == [1.5, 10.0, 20.0, 40.0]
    assert len(changes) <= 10  # 24 bursts in two minutes
