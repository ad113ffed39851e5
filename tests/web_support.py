"""Helpers for the browser tests: a kefu server on a real port, a second "shop" origin,
Debian's Chromium driven by Playwright, and small page helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kefu.core.kernel import Kernel
from kefu.core.web_app import create_app
from tests.chat_support import PASSWORD, make_kernel
from tests.conftest import ROOT, service_unavailable

try:
    from playwright import async_api as playwright_api
    from playwright.async_api import expect
except ImportError:  # chromium() reports it: a failure in CI, never a silent pass
    playwright_api = expect = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "build" / "screenshots"
VIEWPORT = {"width": 1280, "height": 760}

SHOP_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Other shop</title></head><body><h1>Another origin's shop</h1>
<p>This page is served on its own port; the widget below comes from kefu.</p>
<script src="{kefu}widget.js" data-site-key="{key}" data-lang="{lang}" async></script>
</body></html>"""


@dataclass
class Running:
    kernel: Kernel
    runner: web.AppRunner
    base: str  # http://127.0.0.1:PORT/


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/"


async def start_kefu(tmp_path: Path, extra: str = "") -> Running:
    """kefu on SQLite (the embedded default) on a free port."""
    kernel = make_kernel(tmp_path, extra, storage="sql")
    runner, base = await serve(create_app(kernel))
    kernel.listen = ("127.0.0.1", int(base.rsplit(":", 1)[1].strip("/")))
    return Running(kernel, runner, base)


async def start_shop(kefu_base: str) -> tuple[web.AppRunner, str]:
    """A shop on another origin: ``/shop/<widget key>?lang=`` embeds the widget."""

    async def shop(request: web.Request) -> web.Response:
        html = SHOP_PAGE.format(
            kefu=kefu_base, key=request.match_info["key"], lang=request.query.get("lang", "en")
        )
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/shop/{key}", shop)
    return await serve(app)


async def launch_browser(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 (once, before the browser starts)
        service_unavailable(f"Debian's chromium ({CHROMIUM}; `make browser` installs it)")
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright, closed on exit; either missing skips the test
    locally and fails it in CI."""
    if playwright_api is None:
        service_unavailable("Playwright for Python (pip install -e '.[dev]')")
    async with playwright_api.async_playwright() as playwright:
        browser = await launch_browser(playwright)
        try:
            yield browser
        finally:
            await browser.close()


class PageErrors:
    """Collects uncaught script errors of a page; tests assert there are none."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))


class Frames:
    """The JSON frames a page's WebSockets receive, to wait for a marker frame."""

    def __init__(self, page: Any) -> None:
        self.seen: list[dict] = []
        self._waiters: list[tuple[str, Any]] = []
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: Any) -> None:
        try:
            frame = json.loads(payload)
        except (TypeError, ValueError):
            return
        self.seen.append(frame)
        for op, future in list(self._waiters):
            if frame.get("op") == op and not future.done():
                future.set_result(frame)

    async def next(self, op: str, within_ms: float = 5000) -> dict | None:
        """The next ``op`` frame from now on, or None after ``within_ms``."""
        future = asyncio.get_running_loop().create_future()
        entry = (op, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, within_ms / 1000)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)


async def signed_in_agent(
    browser: Any, base: str, site_id: str, email: str, **context_args: Any
) -> Any:
    """A new browser context (``context_args``: locale, timezone_id...) with an agent signed
    in to the console (through the form)."""
    context = await browser.new_context(**{"viewport": VIEWPORT, **context_args})
    page = await context.new_page()
    page.errors = PageErrors(page)
    started, log = time.monotonic(), []  # the requests, reported if sign-in fails
    for event in ("request", "requestfinished", "requestfailed"):
        page.on(
            event, lambda r, e=event: log.append(f"{time.monotonic() - started:.2f} {e} {r.url}")
        )
    await page.goto(f"{base}console/login")
    await page.fill("input[name=site_id]", site_id)
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    try:
        await page.wait_for_url(re.compile(r"/console$"))
    except Exception as exc:
        error = await page.locator("#login-error").text_content()
        raise AssertionError(
            f"sign-in failed: {error!r}; {page.errors.errors}; {page.url}; {log}"
        ) from exc
    await page.locator("#conn-state.ws, #conn-state.longpoll").wait_for()
    return page


async def visitor_page(browser: Any, url: str, **context_args: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1000, "height": 720}, **context_args)
    page = await context.new_page()
    page.errors = PageErrors(page)
    await page.goto(url)
    await page.locator("#kefu-widget .launcher").wait_for()
    return page


async def open_widget(page: Any) -> None:
    await page.locator("#kefu-widget .launcher").click()
    await page.locator("#kefu-widget .composer textarea").wait_for()


async def widget_say(page: Any, text: str) -> None:
    box = page.locator("#kefu-widget .composer textarea")
    await box.fill(text)
    await box.press("Enter")


async def console_say(page: Any, text: str) -> None:
    box = page.locator("#composer-text")
    await box.fill(text)
    await box.press("Enter")


async def open_conversation(page: Any) -> str:
    """Open the newest conversation from whichever inbox tab holds it; its id.

    A conversation can move between tabs while it is clicked (queued, then assigned by
    routing a moment later), as a person's click can miss a row that just moved: then look
    again, as the person would, until the chat pane shows it.
    """
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        for tab in ("mine", "queued", "open"):
            await page.locator(f'.tabs [data-tab="{tab}"]').click()
            item = page.locator("#conversation-list li[data-id]").first
            try:
                await item.wait_for(timeout=1500)
                conversation_id = await item.get_attribute("data-id", timeout=1500)
                await item.click(timeout=1500)
                await page.locator("#chat-inner:not([hidden])").wait_for(timeout=3000)
            except Exception:
                continue
            return conversation_id
    raise AssertionError("no conversation in the inbox")


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / name)
