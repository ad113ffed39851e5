"""The widget's client (``lib/client.js``) pings at the interval the server tells it, in a
real browser (Debian's Chromium under Playwright) against a real server on SQLite: about
every second at level 0 (``[gateway] heartbeat_s = 1`` here), every three seconds once level
1 holds (``heartbeat_shed_s = 3``, learnt from a ``pong``), and every second again after the
level dropped (docs/degradation.md, feature ``heartbeat``). Each step waits for ``pong``
frames the page's WebSocket receives (the marker), never for silence."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.chat_support import add_site
from tests.test_degradation import config
from tests.web_support import Frames, chromium, start_kefu, start_shop

pytestmark = [pytest.mark.timeout(90)]

SHORT = "[gateway]\nheartbeat_s = 1.0\nheartbeat_shed_s = 3.0\n"


async def pongs(frames: Frames, count: int, told: float | None = None) -> list[float]:
    """When the next ``count`` pongs came (after one that says ``told``, if given)."""
    if told is not None:
        for _ in range(10):
            pong = await frames.next("pong", within_ms=15000)
            assert pong is not None, "no pong: the page stopped pinging"
            if pong["heartbeat_s"] == told:
                break
        else:
            raise AssertionError(f"no pong told {told}")
    seen = []
    for _ in range(count):
        pong = await frames.next("pong", within_ms=15000)
        assert pong is not None, "no pong: the page stopped pinging"
        seen.append(time.monotonic())
    return seen


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


async def test_the_widget_pings_at_the_interval_it_is_told(tmp_path):
    running = await start_kefu(tmp_path, config() + SHORT)
    shop_runner, shop_base = await start_shop(running.base)
    try:
        site = await add_site(running.kernel)
        async with chromium() as browser:
            context = await browser.new_context()
            page = await context.new_page()
            frames = Frames(page)  # before the page loads: the widget connects at once
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{shop_base}shop/{site.site.widget_key}")
            hello = await frames.next("hello", within_ms=15000)
            assert hello is not None and hello["heartbeat_s"] == 1.0

            at_0 = gaps(await pongs(frames, 3))
            assert max(at_0) < 2.5, at_0

            await running.kernel.pressure.override(1, 60, by="test")
            at_1 = gaps(await pongs(frames, 3, told=3.0))
            assert min(at_1) >= 2.5, at_1

            await running.kernel.pressure.override(None, 1)
            again = gaps(await pongs(frames, 3, told=1.0))
            assert max(again) < 2.5, again
            assert errors == []
    finally:
        await shop_runner.cleanup()
        await running.runner.cleanup()
