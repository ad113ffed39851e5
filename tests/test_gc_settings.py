"""The collector's settings (core/gc_tuning.py): thresholds, start-up and periodic freezes."""

from __future__ import annotations

import asyncio
import gc

import pytest
from pydantic import ValidationError

from kefu.core import gc_tuning
from kefu.core.config import ServerSettings
from kefu.core.gc_tuning import GcFreezer
from kefu.core.kernel import load_kernel
from kefu.core.web_app import create_app


@pytest.fixture
def keep_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


class FakeGc:
    """What :class:`GcFreezer` reads and calls, set and recorded by the test."""

    def __init__(self) -> None:
        self.blocks = 1_000_000
        self.calls: list[str] = []

    def getallocatedblocks(self):
        return self.blocks

    def collect(self, generation=2):
        self.calls.append(f"collect({generation})")

    def freeze(self):
        self.calls.append("freeze")


@pytest.fixture
def fake_gc(monkeypatch):
    fake = FakeGc()
    monkeypatch.setattr(gc_tuning, "gc", fake)
    monkeypatch.setattr(gc_tuning.sys, "getallocatedblocks", fake.getallocatedblocks)
    return fake


def test_settings_default_and_refuse_what_gc_cannot_take():
    server = ServerSettings()
    assert server.gc_thresholds == [700, 10, 10]
    assert server.gc_freeze_interval_s == 1.0
    for bad in ({"gc_thresholds": [700, 10]}, {"gc_thresholds": [700, -1, 10]},
                {"gc_freeze_interval_s": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            ServerSettings(**bad)


def test_freezes_once_the_process_grew_and_not_before(fake_gc):
    freezer = GcFreezer(freeze_after_blocks=100)
    assert not freezer.check()
    fake_gc.blocks += 100  # not more than the limit
    assert not freezer.check() and fake_gc.calls == []
    fake_gc.blocks += 1
    assert freezer.check()
    # young garbage is collected first, so that it is not frozen
    assert fake_gc.calls == ["collect(1)", "freeze"] and freezer.freezes == 1
    assert not freezer.check()  # growth is counted from the last freeze
    fake_gc.blocks -= 50_000  # connections closed: nothing to freeze
    assert not freezer.check()


def test_growth_after_a_shrink_is_frozen_too(fake_gc):
    """New connections that re-use the blocks closed ones freed are new long-lived objects."""
    freezer = GcFreezer(freeze_after_blocks=100)
    fake_gc.blocks += 101
    assert freezer.check() and freezer.freezes == 1
    fake_gc.blocks -= 10_000  # most connections closed
    assert not freezer.check()
    fake_gc.blocks += 100  # a new population, still under the count at the last freeze
    assert not freezer.check()
    fake_gc.blocks += 1
    assert freezer.check() and freezer.freezes == 2
    assert fake_gc.calls == ["collect(1)", "freeze"] * 2


def test_a_real_freeze_moves_objects_out_of_the_generations():
    freezer = GcFreezer(freeze_after_blocks=5_000)
    frozen = gc.get_freeze_count()
    held = [[index] for index in range(10_000)]
    assert freezer.check()
    assert gc.get_freeze_count() >= frozen + len(held)
    assert not any(held[0] is obj for obj in gc.get_objects())  # left the generations


async def test_the_app_applies_the_settings_and_runs_the_freezer(
    aiohttp_client, write_config, tmp_path, keep_thresholds, monkeypatch
):
    checks = []
    monkeypatch.setattr(GcFreezer, "check", lambda self: checks.append(self) or False)
    path = write_config(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
        "gc_thresholds = [12345, 11, 13]\ngc_freeze_interval_s = 0.01\n"
    )
    kernel = load_kernel(path, defaults=(), entry_points=False)
    await aiohttp_client(create_app(kernel))
    assert gc.get_threshold() == (12345, 11, 13)
    for _ in range(100):
        if len(checks) >= 2:
            break
        await asyncio.sleep(0.01)
    assert len(checks) >= 2


async def test_no_freezer_with_an_interval_of_zero(
    aiohttp_client, write_config, tmp_path, keep_thresholds, monkeypatch
):
    made = []
    monkeypatch.setattr(GcFreezer, "__init__", lambda self: made.append(self))
    path = write_config(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\ngc_freeze_interval_s = 0\n'
    )
    await aiohttp_client(create_app(load_kernel(path, defaults=(), entry_points=False)))
    assert made == [] and gc.get_threshold() == (700, 10, 10)


def test_a_slow_full_collection_freezes_at_the_next_check(fake_gc):
    """Blocks freed and allocated at the same pace: the count stays flat, the pause tells."""
    freezer = GcFreezer(freeze_after_blocks=100, slow_full_s=0.0)
    freezer.timed("start", {"generation": 1})
    freezer.timed("stop", {"generation": 1, "collected": 0})
    assert not freezer.check()  # young collections are not timed
    freezer.timed("start", {"generation": 2})
    freezer.timed("stop", {"generation": 2, "collected": 0})
    assert freezer.check() and fake_gc.calls == ["collect(1)", "freeze"]
    assert not freezer.check()  # the flag is spent by the freeze
    quick = GcFreezer(freeze_after_blocks=100, slow_full_s=10.0)
    quick.timed("start", {"generation": 2})
    quick.timed("stop", {"generation": 2, "collected": 0})
    assert not quick.check()


async def test_run_times_real_full_collections_while_it_runs():
    freezer = GcFreezer(slow_full_s=0.0)
    task = asyncio.get_running_loop().create_task(freezer.run(3600))
    await asyncio.sleep(0)
    assert freezer.timed in gc.callbacks
    gc.collect()
    assert freezer.slow_full
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert freezer.timed not in gc.callbacks
