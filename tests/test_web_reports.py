"""Admin > Reports in the real browser (Debian's Chromium under Playwright): a visitor chats
with an admin who replies and resolves, the visitor rates; three more conversations are
stored with known times (a bot that solved one alone, a bot handoff, an agent's slow answer);
a supervisor, in Shanghai's time zone, opens Reports from the console and reads the numbers
on the tiles, the SVG bars per day and per hour and the agent and department tables, then
downloads the agents' CSV. A plain agent gets no Reports; the page in Chinese. docs/ui.md,
"Reports"."""

from __future__ import annotations

import csv
import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from kefu.core.domain import ASSIGNED, RESOLVED, Agent, Conversation, Message, Visitor
from tests.chat_support import FAST_HASH, add_site
from tests.test_web_i18n import english_left
from tests.web_support import (
    chromium,
    console_say,
    expect,
    open_conversation,
    open_widget,
    screenshot_path,
    signed_in_agent,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]

SHANGHAI = ZoneInfo("Asia/Shanghai")
FULL_HD = {"width": 1280, "height": 800}


async def seed(kernel, site) -> None:
    """Three conversations of the last hours with known times (Bob's, and two bots')."""
    storage, site_id, bob = kernel.storage, site.site.id, site.agent
    now = time.time()

    async def chat(conv_id, created, said, **kw):
        visitor = await storage.upsert_visitor(Visitor(f"v-{conv_id}", site_id, name=conv_id))
        await storage.create_conversation(
            Conversation(conv_id, site_id, visitor.id, created_at=created, **kw)
        )
        for i, (kind, after) in enumerate(said):
            message = Message(site_id, conv_id, f"m{i}", kind, f"{kind}-x", text="hi",
                              created_at=created + after)  # fmt: skip
            await storage.append_message(message)

    slow = now - 3 * 3600  # Bob answers after 2 min, resolves after 30 min, rated 2 of 5
    await chat("slow", slow, [("visitor", 1), ("agent", 120)], state=RESOLVED,
               resolved_at=slow + 1800, assignee_id=bob.id, department="billing",
               meta={"rating": {"score": 2, "scale": 5}})  # fmt: skip
    solved = now - 2 * 3600  # the bot alone, resolved after a minute
    await chat("solved", solved, [("bot", 0), ("visitor", 5), ("bot", 6)], state=RESOLVED,
               resolved_at=solved + 60)  # fmt: skip
    handed = now - 3600  # handed to Bob after 30 s; he answers 60 s later
    await chat("handed", handed, [("bot", 0), ("visitor", 20), ("agent", 90)], state=ASSIGNED,
               assignee_id=bob.id, department="billing",
               meta={"bot_handoff": {"reason": "asked", "at": handed + 30}})  # fmt: skip


async def expected_buckets(kernel, site_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """Conversations per Shanghai day and hour, from what storage holds."""
    days: dict[str, int] = {}
    hours: dict[str, int] = {}
    for c in await kernel.storage.list_conversations(site_id, limit=100):
        local = dt.datetime.fromtimestamp(c.created_at, SHANGHAI)
        days[local.date().isoformat()] = days.get(local.date().isoformat(), 0) + 1
        hours[f"{local.hour:02d}:00"] = hours.get(f"{local.hour:02d}:00", 0) + 1
    return days, hours


async def bars(page, chart: str, series: str = "conversations") -> dict[str, int]:
    found = await page.eval_on_selector_all(
        f"#{chart} rect.bar[data-series={series}]",
        "els => els.map(e => [e.dataset.slot, Number(e.dataset.value)])",
    )
    return {slot: value for slot, value in found if value}


async def test_reports_page_shows_the_numbers_of_real_and_stored_conversations(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "r1")
    sue = await kefu.kernel.storage.create_agent(
        Agent("sue", "r1", "sue@r1.test", "Sue", FAST_HASH, ["agent", "supervisor"])
    )
    try:
        async with chromium() as browser:
            # a real conversation: the visitor writes, Ada answers and resolves, a 5-star rating
            ada = await signed_in_agent(browser, kefu.base, "r1", site.admin.email)
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, "Is the blue teapot in stock?")
            await open_conversation(ada)
            await console_say(ada, "Yes, it ships today.")
            await expect(visitor.locator("#kefu-widget .msg.theirs .text").last).to_have_text(
                "Yes, it ships today."
            )
            await ada.locator('#chat-actions [data-action="resolve"]').click()
            await visitor.locator('#kefu-widget .stars [data-score="5"]').click()
            await visitor.locator("#kefu-widget .ended .rate").click()
            await expect(visitor.locator("#kefu-widget .ended .thanks")).to_be_visible()
            await seed(kefu.kernel, site)

            # a plain agent: no Reports link, and the page is refused
            bob = await signed_in_agent(browser, kefu.base, "r1", site.agent.email)
            assert await bob.locator('a[href="/admin/reports"]').count() == 0
            refused = await bob.goto(f"{kefu.base}admin/reports")
            assert refused.status == 403

            # the supervisor, in Shanghai: from the console to Reports
            page = await signed_in_agent(
                browser, kefu.base, "r1", sue.email, timezone_id="Asia/Shanghai",
                accept_downloads=True, viewport=FULL_HD,
            )  # fmt: skip
            await page.locator('.topbar a[href="/admin/reports"]').click()
            await page.wait_for_url("**/admin/reports")
            await page.locator("body[data-report-ready]").wait_for()
            await expect(page.locator("#reports-zone")).to_have_text("Asia/Shanghai")
            assert await page.locator(".admin-nav a").all_text_contents() == ["Reports"]

            async def shown(name: str) -> str:
                return await page.locator(f'[data-figure="{name}"]').text_content()

            assert await shown("conversations") == "4"
            assert await shown("resolved") == "3 resolved"
            # first responses: 120 s (Bob), 60 s (after the handoff), Ada's few seconds
            assert await shown("first_response") == "1 min 0 s"
            assert await shown("resolution") == "1 min 0 s"  # of 60 s, Ada's, 1,800 s
            assert await shown("csat") == "50 %"
            assert await shown("csat_detail") == "2 ratings, average 3.5 of 5"
            assert await shown("containment") == "50 %"
            assert await shown("containment_detail") == "1 of 2 the bot handled"
            days, hours = await expected_buckets(kefu.kernel, "r1")
            assert await bars(page, "chart-days") == days
            assert await bars(page, "chart-hours") == hours
            assert sum(days.values()) == 4
            assert await page.locator("#chart-days rect.bar").count() == 14  # 7 days x 2 series

            rows = page.locator("#reports-agents tbody tr")
            await expect(rows).to_have_count(2)
            bob_row = rows.nth(0)
            await expect(bob_row.locator(".name")).to_have_text("Bob")
            cells = {
                col: await bob_row.locator(f'[data-col="{col}"]').text_content()
                for col in ("conversations", "resolved", "first_response_median",
                            "first_response_p90", "csat")
            }  # fmt: skip
            assert cells == {
                "conversations": "2", "resolved": "1", "first_response_median": "1 min 30 s",
                "first_response_p90": "1 min 54 s", "csat": "0 %",
            }  # fmt: skip
            await expect(rows.nth(1).locator(".name")).to_have_text("Ada")
            await expect(rows.nth(1).locator('[data-col="csat"]')).to_have_text("100 %")
            departments = page.locator("#reports-departments tbody tr")
            await expect(departments.nth(0).locator(".name")).to_have_text("(none)")
            await expect(departments.nth(1).locator(".name")).to_have_text("billing")
            await page.screenshot(path=screenshot_path("reports-en.png"), full_page=True)
            await page.screenshot(  # the one docs/ui.md shows (docs/img/)
                path=screenshot_path("ui-en-admin-reports.jpg"), full_page=True, quality=70
            )

            async with page.expect_download() as download_info:
                await page.locator('#reports-downloads a[data-table="agents"]').click()
            download = await download_info.value
            assert download.suggested_filename.startswith("kefu-agents-")
            saved = tmp_path / "agents.csv"
            await download.save_as(saved)
            table = list(csv.DictReader(saved.read_text(encoding="utf-8-sig").splitlines()))
            first = table[0]
            assert (first["name"], first["conversations"], first["first_response_median_s"]) == (
                "Bob", "2", "90.0",
            )  # fmt: skip
            assert page.errors.errors == [] and ada.errors.errors == []

            # the same page in Chinese
            zh = await signed_in_agent(
                browser, kefu.base, "r1", sue.email, timezone_id="Asia/Shanghai",
                locale="zh-CN", viewport=FULL_HD,
            )  # fmt: skip
            await zh.goto(f"{kefu.base}admin/reports")
            await zh.locator("body[data-report-ready]").wait_for()
            await expect(zh.locator(".admin-main h1")).to_have_text("报表")
            await expect(zh.locator('[data-figure="first_response"]')).to_have_text("1 分 0 秒")
            await expect(zh.locator('[data-figure="resolved"]')).to_have_text("已解决 3 个")
            assert await english_left(zh) == []
            await zh.screenshot(path=screenshot_path("reports-zh.png"), full_page=True)
            await zh.screenshot(
                path=screenshot_path("ui-zh-admin-reports.jpg"), full_page=True, quality=70
            )
            assert zh.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
