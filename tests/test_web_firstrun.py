"""The first run as a new user makes it (issue 14): `kefu run` with no config at all (what
`make run` starts) in an empty folder, then Debian's Chromium under Playwright. A visitor
with a Chinese browser is greeted by the example bot in Chinese, asks in Chinese and in
English, is handed over; the admin signs in with the password the banner printed and
gets the chat, creates a colleague, transfers to her with a note, she answers and
resolves; the visitor rates, and the rating shows in the admin's console and in the
reports. Every step is
asserted and leaves a screenshot in build/screenshots/firstrun-*.png."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys

import pytest
import pytest_asyncio

from tests.conftest import ROOT
from tests.web_support import chromium, expect, screenshot_path, widget_say

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

BANNER = re.compile(
    r"admin sign-in at (?P<url>\S+/console/login): site '(?P<site>[^']+)', "
    r"e-mail '(?P<email>[^']+)', password '(?P<password>[^']+)'"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(tmp_path_factory):
    """`kefu run` as it comes: no kefu.toml, an empty folder, SQLite in ./kefu-data."""
    folder = tmp_path_factory.mktemp("first-run")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kefu.core.cli", "run", "--port", str(port),
        cwd=folder, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []
    banner = None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"kefu run ended: {''.join(lines)}"
                lines.append(line)
                banner = banner or BANNER.search(line)
                if banner and "serving on" in "".join(lines):
                    break
        drain = asyncio.create_task(_drain(proc, lines))
        yield {"base": f"http://127.0.0.1:{port}/", "banner": banner, "lines": lines}
    finally:
        proc.terminate()
        await proc.wait()
    drain.cancel()


async def _drain(proc, lines):
    while line := await proc.stdout.readline():
        lines.append(line.decode())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


async def shot(page, step: str) -> None:
    await page.screenshot(path=screenshot_path(f"firstrun-{step}.png"))


async def sign_in(browser, base, site, email, password):
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(f"{base}console/login")
    await expect(page.locator("input[name=site_id]")).to_have_value(site)
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/console$"))
    await page.locator("#conn-state.ws").wait_for()
    return page


async def test_first_run_walk(server, browser):
    base, banner = server["base"], server["banner"]
    assert banner["url"] == f"{base}console/login"  # a page a browser opens, not the API
    assert banner["site"] == "demo" and banner["email"] == "admin@example.com"

    # 1. a Chinese visitor on the demo shop: the bot greets in Chinese, no "away" form
    visitor_context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN"
    )
    visitor = await visitor_context.new_page()
    await visitor.goto(base)
    chat = visitor.locator("#kefu-widget")
    await chat.locator(".launcher").click()
    await expect(chat.locator("form.offline")).to_be_hidden()
    await widget_say(visitor, "你好")
    bot = chat.locator(".msg.theirs.bot")
    await expect(bot.first.locator(".text")).to_contain_text("您好")
    await expect(bot.first.locator(".who")).to_have_text("智能助手")
    await expect(bot.last.locator(".text")).to_contain_text("请问需要什么帮助")  # not "抱歉…"
    await shot(visitor, "1-greeting")

    # 2. in English: the order lookup of the example flow answers (its demo action)
    await widget_say(visitor, "where is my order")
    await expect(bot.last.locator(".text")).to_have_text("What is your order number?")
    await widget_say(visitor, "12345678")
    order = chat.locator(".msg.theirs.bot .text", has_text="Order 12345678")
    await expect(order).to_have_text(
        "Order 12345678: shipped yesterday, arriving in 2 days (demo data)."
    )
    await shot(visitor, "2-order")

    # 3. a human, please: handed over; nobody is online yet
    await widget_say(visitor, "转人工")
    await expect(bot.last.locator(".text")).to_have_text("正在为您转接人工客服…")
    await expect(chat.locator(".queue")).to_be_visible()
    await shot(visitor, "3-handoff")

    # 4. the admin signs in with the banner's password and gets the chat
    admin = await sign_in(browser, base, "demo", banner["email"], banner["password"])
    await expect(admin.locator('.tabs [data-count="mine"]')).to_have_text("1", timeout=15000)
    await admin.locator('.tabs [data-tab="mine"]').click()
    await admin.locator("#conversation-list li[data-id]").first.click()
    await expect(admin.locator("#message-list .msg.from-bot .who").first).to_have_text("Bot")
    await expect(admin.locator("#message-list .msg.from-visitor .text").first).to_have_text("你好")
    await admin.locator("#composer-text").fill("您好，我是 Admin，马上为您处理。")  # noqa: RUF001
    await admin.locator("#composer-text").press("Enter")
    agent_line = chat.locator(".msg.theirs.agent").last
    await expect(agent_line.locator(".text")).to_have_text("您好，我是 Admin，马上为您处理。")  # noqa: RUF001
    await expect(agent_line.locator(".who")).to_have_text("Admin")
    await expect(chat.locator("form.offline")).to_be_hidden()
    await shot(admin, "4-admin-chat")

    # 5. the admin adds a colleague in Admin → Agents; she signs in
    pages = await admin.context.new_page()
    await pages.goto(f"{base}admin/agents")
    form = pages.locator("form.stack")
    await form.locator("input[name=name]").fill("Mei")
    await form.locator("input[name=email]").fill("mei@example.com")
    await form.locator("input[name=password]").fill("mei-first-password")
    await form.locator("button[type=submit]").click()
    await expect(pages.locator("table.grid")).to_contain_text("mei@example.com")
    await shot(pages, "5-agents")
    await pages.close()
    mei = await sign_in(browser, base, "demo", "mei@example.com", "mei-first-password")

    # 6. transfer to Mei with a note; she sees it and answers
    await admin.locator('#chat-actions [data-action="transfer"]').click()
    await admin.locator("#transfer-panel select").select_option(label="Mei (online)")
    await admin.locator("#transfer-panel textarea").fill("order 12345678, wants delivery date")
    await admin.locator('#transfer-panel button[type="submit"]').click()
    await expect(mei.locator('.tabs [data-count="mine"]')).to_have_text("1")
    await mei.locator('.tabs [data-tab="mine"]').click()
    await mei.locator("#conversation-list li[data-id]").first.click()
    await expect(mei.locator("#handover")).to_contain_text("order 12345678, wants delivery date")
    await mei.locator("#composer-text").fill("It arrives on Friday.")
    await mei.locator("#composer-text").press("Enter")
    await expect(chat.locator(".msg.theirs.agent").last.locator(".who")).to_have_text("Mei")
    await shot(mei, "6-transfer")

    # 7. Mei resolves; the visitor rates; the admin's console shows the rating
    await mei.locator('#chat-actions [data-action="resolve"]').click()
    await chat.locator('.stars [data-score="5"]').click()
    await chat.locator(".ended textarea").fill("谢谢")
    await chat.locator(".ended .rate").click()
    await expect(chat.locator(".ended .thanks")).to_be_visible()
    await shot(visitor, "7-rated")
    await admin.locator('.tabs [data-tab="resolved"]').click()
    await expect(admin.locator("#conversation-list .rating")).to_contain_text("5/5")
    await admin.locator("#conversation-list li[data-id]").first.click()
    await expect(admin.locator("#chat-rating")).to_have_text("★★★★★ 5/5 · 谢谢")
    await shot(admin, "8-rating")

    # 8. the rating is in the reports too: Admin > Reports, Mei's row
    await admin.goto(f"{base}admin/reports")
    await admin.locator("body[data-report-ready]").wait_for()
    await expect(admin.locator('[data-figure="csat"]')).to_have_text("100 %")
    await expect(admin.locator('[data-figure="csat_detail"]')).to_have_text(
        "1 rating, average 5 of 5"
    )
    mei_row = admin.locator("#reports-agents tbody tr", has_text="Mei")
    await expect(mei_row.locator('[data-col="ratings"]')).to_have_text("1")
    await expect(mei_row.locator('[data-col="csat"]')).to_have_text("100 %")
    await expect(admin.locator('[data-figure="containment_detail"]')).to_have_text(
        "0 of 1 the bot handled"
    )  # the bot greeted and handed over: not contained
    await shot(admin, "9-reports")
    for page in (visitor, admin, mei):
        await page.context.close()
