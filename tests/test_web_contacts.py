"""Console > Contacts in the real browser (Debian's Chromium under Playwright): a visitor
chats through the widget with Bob (an agent, not an admin); the same person was already a
contact ("Ann Lee", an open conversation of her own). Bob finds both by searching, opens
Ann Lee and her conversations, tries to merge the chat's contact into her (refused: both
have an open conversation), resolves the chat in the console, merges again: the chat moves
to Ann Lee, her details win, the duplicate's phone fills the gap, the duplicate is gone, an
audit record names Bob; the moved chat opens from its link with Ann Lee's name. The page in
Chinese. docs/ui.md, "Contacts"."""

from __future__ import annotations

import asyncio
import json

import pytest

from kefu.core.domain import Conversation, Message, Visitor
from tests.chat_support import add_site
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
FULL_HD = {"width": 1280, "height": 800}


async def test_find_open_and_merge_two_contacts(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "c1")
    storage = kefu.kernel.storage
    ann = await storage.upsert_visitor(
        Visitor("ann-lee", "c1", name="Ann Lee", email="ann@example.test",
                attributes={"plan": "gold"})
    )  # fmt: skip
    await storage.create_conversation(Conversation("ann-old", "c1", ann.id, state="queued"))
    await storage.append_message(Message("c1", "ann-old", "m1", "visitor", ann.id, text="hi"))
    try:
        async with chromium() as browser:
            bob = await signed_in_agent(
                browser, kefu.base, "c1", site.agent.email, viewport=FULL_HD
            )
            bob.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            visitor = await visitor_page(browser, f"{shop_base}shop/{site.site.widget_key}")
            await open_widget(visitor)
            await widget_say(visitor, "Hello, it is Ann again, from my phone")
            chat_id = await open_conversation(bob)
            await console_say(bob, "Hi Ann, one moment.")
            chat = await storage.get_conversation("c1", chat_id)
            web_visitor = await storage.get_visitor("c1", chat.visitor_id)
            web_visitor.name, web_visitor.attributes = (
                "Ann Web",
                {"plan": "free", "phone": "+86 138"},
            )
            await storage.upsert_visitor(web_visitor)

            # Contacts: both Anns are found; Ann Lee's page lists her conversation
            await bob.locator('.topbar a[href="/console/contacts"]').click()
            await bob.locator("body[data-contacts-ready]").wait_for()
            await bob.fill("#contact-search", "ann")
            rows = bob.locator("#contact-list li[data-id]")
            await expect(rows).to_have_count(2)
            await rows.filter(has_text="Ann Lee").click()
            await expect(bob.locator("#contact-name")).to_have_text("Ann Lee")
            await expect(bob.locator("#contact-conversations li")).to_have_count(1)
            await bob.fill("#merge-search", "web")
            candidate = bob.locator("#merge-results li")
            await expect(candidate).to_have_count(1)
            await expect(candidate).to_contain_text("Ann Web")
            await candidate.locator("button").click()
            message = bob.locator("#merge-message")
            await expect(message).to_have_text(
                "Both contacts have an open conversation: resolve one, then merge."
            )
            assert (await storage.get_conversation("c1", chat_id)).visitor_id == web_visitor.id

            # Bob resolves the chat in the console, then merges
            await bob.goto(f"{kefu.base}console#c={chat_id}&tab=mine")
            await bob.locator("#chat-inner:not([hidden])").wait_for()
            await bob.locator('#chat-actions [data-action="resolve"]').click()
            await expect(bob.locator('#chat-actions [data-action="reopen"]')).to_be_visible()
            await bob.goto(f"{kefu.base}console/contacts#v=ann-lee")
            await bob.locator("body[data-contacts-ready]").wait_for()
            await expect(bob.locator("#contact-name")).to_have_text("Ann Lee")
            await bob.fill("#merge-search", "web")
            await bob.locator("#merge-results li button").click()
            await expect(bob.locator("#merge-message")).to_have_text(
                "Merged: 1 conversation moved here."
            )
            conversations = bob.locator("#contact-conversations li")
            await expect(conversations).to_have_count(2)
            await expect(conversations.filter(has_text="resolved")).to_contain_text("2 messages")
            profile = bob.locator(".contact-profile")
            await expect(profile.locator('[data-attribute="plan"]')).to_have_text("gold")
            await expect(profile.locator('[data-attribute="phone"]')).to_have_text("+86 138")
            await bob.fill("#contact-search", "ann")
            await expect(rows).to_have_count(1)
            await bob.screenshot(path=screenshot_path("contacts-en.png"), full_page=True)
            await bob.screenshot(path=screenshot_path("ui-en-contacts.jpg"), quality=70)
            assert await storage.get_visitor("c1", web_visitor.id) is None
            moved = await storage.get_conversation("c1", chat_id)
            assert moved.visitor_id == "ann-lee" and moved.state == "resolved"
            (record,) = await storage.list_records("c1", "audit.merge")
            assert record.data["by"] == site.agent.id and record.data["merged_id"] == web_visitor.id

            # the moved chat opens from its link, under Ann Lee's name
            await conversations.filter(has_text="resolved").locator("a").click()
            await bob.locator("#chat-inner:not([hidden])").wait_for()
            await expect(bob.locator("#visitor-panel h2")).to_have_text("Ann Lee")
            await expect(bob.locator("#message-list .msg .text").last).to_have_text(
                "Hi Ann, one moment."
            )
            assert bob.errors.errors == [] and visitor.errors.errors == []

            zh = await signed_in_agent(
                browser, kefu.base, "c1", site.agent.email, locale="zh-CN", viewport=FULL_HD
            )
            await zh.goto(f"{kefu.base}console/contacts#v=ann-lee")
            await zh.locator("body[data-contacts-ready]").wait_for()
            await expect(zh.locator(".contacts-list h1")).to_have_text("联系人")
            await expect(zh.locator(".contact-detail h3").first).to_have_text("对话（2）")  # noqa: RUF001
            assert await english_left(zh) == []
            await zh.screenshot(path=screenshot_path("contacts-zh.png"), full_page=True)
            await zh.screenshot(path=screenshot_path("ui-zh-contacts.jpg"), quality=70)
            assert zh.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()


async def test_edit_export_and_erase_a_contact(tmp_path):
    kefu = await start_kefu(tmp_path)
    site = await add_site(kefu.kernel, "c2")
    storage = kefu.kernel.storage
    await storage.upsert_visitor(
        Visitor("wang", "c2", name="王芳", attributes={"plan": "gold", "orders": 3})
    )
    await storage.create_conversation(Conversation("wang-1", "c2", "wang", state="resolved"))
    for i in range(3):
        await storage.append_message(Message("c2", "wang-1", f"m{i}", "visitor", "wang",
                                             text=f"订单 8812 第{i}条"))  # fmt: skip
    try:
        async with chromium() as browser:
            bob = await signed_in_agent(
                browser, kefu.base, "c2", site.agent.email, viewport=FULL_HD,
                accept_downloads=True,
            )  # fmt: skip
            await bob.goto(f"{kefu.base}console/contacts#v=wang")
            await bob.locator("body[data-contacts-ready]").wait_for()
            # an agent edits the profile: name, e-mail, phone, one attribute changed, one added
            await bob.locator(".contact-edit summary").click()
            form = bob.locator("#contact-edit")
            await form.locator("[name=name]").fill("王芳 Wang Fang")
            await form.locator("[name=email]").fill("fang@example.test")
            await form.locator("[name=phone]").fill("+86 139 0000 0000")
            plan = form.locator(".attribute-row", has=bob.locator('[name=key][value="plan"]'))
            await plan.locator("[name=value]").fill("platinum")
            await form.locator("fieldset button.ghost").last.click()  # add an attribute
            await form.locator(".attribute-row [name=key]").last.fill("city")
            await form.locator(".attribute-row [name=value]").last.fill("杭州")
            await form.locator("button[type=submit]").click()
            await expect(bob.locator("#contact-name")).to_have_text("王芳 Wang Fang")
            await expect(bob.locator("#edit-message")).to_have_text("Saved.")
            stored = await storage.get_visitor("c2", "wang")
            assert (stored.name, stored.email) == ("王芳 Wang Fang", "fang@example.test")
            assert stored.attributes == {
                "plan": "platinum",
                "orders": 3,
                "city": "杭州",
                "phone": "+86 139 0000 0000",
            }  # fmt: skip (the number stays a number: it was not changed)
            await bob.fill("#contact-search", "杭州")
            await expect(bob.locator("#contact-list li[data-id]")).to_have_count(1)

            # the export is a download of the person's data with their messages
            async with bob.expect_download() as download_info:
                await bob.locator("#contact-export").click()
            saved = tmp_path / "export.json"
            await (await download_info.value).save_as(saved)
            exported = json.loads(saved.read_text(encoding="utf-8"))
            assert exported["visitor"]["email"] == "fang@example.test"
            assert [m["text"] for m in exported["conversations"][0]["messages"]] == [
                "订单 8812 第0条", "订单 8812 第1条", "订单 8812 第2条",
            ]  # fmt: skip
            # only admins erase
            assert await bob.locator("#contact-erase").count() == 0
            ada = await signed_in_agent(
                browser, kefu.base, "c2", site.admin.email, viewport=FULL_HD
            )
            ada.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await ada.goto(f"{kefu.base}console/contacts#v=wang")
            await ada.locator("body[data-contacts-ready]").wait_for()
            await ada.screenshot(path=screenshot_path("contacts-edit.png"), full_page=True)
            await ada.locator("#contact-erase").click()
            await expect(ada.locator("#erase-message")).to_have_text("Erased: 3 messages removed.")
            await expect(ada.locator("#contact-list li[data-id]")).to_have_count(0)
            assert await storage.get_visitor("c2", "wang") is None
            assert await storage.search_messages("c2", "8812") == []
            (record,) = await storage.list_records("c2", "audit.erasure")
            assert record.data["by"] == site.admin.id and record.data["messages"] == 3
            assert bob.errors.errors == [] and ada.errors.errors == []
    finally:
        await kefu.runner.cleanup()
