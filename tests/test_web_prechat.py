"""The pre-chat form in the real browser (Debian's Chromium under Playwright), issue 14: an
admin configures two fields on Admin > Widget, a visitor on a phone (375x667) must fill them
before the first message (a missing required field and a bad e-mail are blocked with a
message), and the agent sees the answers in the console's visitor panel; then the same in
Chinese. Screenshots for docs/ui.md land in build/screenshots/ui-{en,zh}-prechat*.jpg and
ui-{en,zh}-admin-widget.jpg. The HTTP side is tests/test_widget_prechat.py."""

from __future__ import annotations

import pytest

from tests.chat_support import add_site
from tests.test_web_i18n import ENGLISH_WORDS, NOT_TEXT
from tests.web_support import (
    chromium,
    expect,
    open_conversation,
    screenshot_path,
    signed_in_agent,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]

PHONE = {"width": 375, "height": 667}
WIDGET = "#kefu-widget"


async def configure_two_fields(admin, base: str) -> None:
    """Admin > Widget: a greeting, a colour, the form on with an e-mail and a topic."""
    await admin.goto(f"{base}admin/widget")
    form = admin.locator("#widget-form")
    await form.wait_for()
    await form.locator("textarea[name=greeting]").fill("Welcome to Teapot & Co.")
    await form.locator("textarea[name=greeting_zh]").fill("欢迎光临茶壶小店")
    await form.locator("input[name=color]").fill("#9a3412")
    await form.locator("input[name=prechat_enabled]").check()
    rows = form.locator("#prechat-fields li")
    await form.locator("#prechat-add").click()
    email = rows.nth(0)
    await email.locator("select[name=key]").select_option("email")
    await expect(email.locator("select[name=type]")).to_have_value("email")  # fixed by the key
    await email.locator("input[name=label_en]").fill("Your e-mail")
    await email.locator("input[name=label_zh]").fill("您的邮箱")
    await email.locator("input[name=required]").check()
    await form.locator("#prechat-add").click()
    topic = rows.nth(1)
    await topic.locator("input[name=custom_key]").fill("topic")
    await topic.locator("select[name=type]").select_option("select")
    await topic.locator("input[name=label_en]").fill("What is it about?")
    await topic.locator("input[name=label_zh]").fill("咨询主题")
    await topic.locator("input[name=required]").check()
    await topic.locator("textarea[name=options]").fill("Orders | 订单\nReturns | 退货")
    await form.locator("button[type=submit]").click()


async def prechat_widget(browser, url: str, **context_args):
    """The shop on a phone with the widget opened: the pre-chat form instead of the composer."""
    page = await visitor_page(browser, url, **context_args)
    await page.set_viewport_size(PHONE)
    await page.locator(f"{WIDGET} .launcher").click()
    await page.locator(f"{WIDGET} form.prechat").wait_for()
    await expect(page.locator(f"{WIDGET} .composer")).to_be_hidden()
    return page


async def expect_contact_answers(page, base: str, visitor_id: str, label: str, value: str):
    """The contact page shows the answer under the form's label, not as the attribute key."""
    await page.goto(f"{base}console/contacts#v={visitor_id}")
    await page.locator("body[data-contacts-ready]").wait_for()
    answers = page.locator("#contact-detail .prechat-answers")
    await expect(answers.locator("dt")).to_have_text([label])
    await expect(answers.locator("dd")).to_have_text([value])
    profile = page.locator("#contact-detail .contact-profile")
    await expect(profile).to_be_visible()
    await expect(profile.locator("dt", has_text="topic")).to_have_count(0)


async def test_admin_configures_the_form_the_visitor_fills_it_the_agent_sees_it(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "prechat")
    storage = kefu.kernel.storage
    try:
        async with chromium() as browser:
            admin = await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            await configure_two_fields(admin, kefu.base)
            await expect(admin.locator("#widget-message")).to_have_text("Saved.")
            widget = (await storage.get_site(site.site.id)).settings["widget"]
            assert widget["greeting"] == "Welcome to Teapot & Co." and widget["color"] == "#9a3412"
            assert widget["greeting_zh"] == "欢迎光临茶壶小店"
            fields = widget["prechat"]["fields"]
            assert [(f["key"], f["type"], f["required"]) for f in fields] == [
                ("email", "email", True),
                ("topic", "select", True),
            ]
            assert fields[1]["options"][1] == {
                "value": "Returns",
                "label": {"en": "Returns", "zh": "退货"},
            }
            await admin.reload()  # what was saved is what the page shows again
            await expect(admin.locator("#prechat-fields li")).to_have_count(2)
            await expect(admin.locator("input[name=custom_key]").nth(1)).to_have_value("topic")
            greeting_zh = admin.locator("textarea[name=greeting_zh]")
            await expect(greeting_zh).to_have_value("欢迎光临茶壶小店")
            await admin.set_viewport_size({"width": 1280, "height": 800})
            await admin.screenshot(
                path=screenshot_path("ui-en-admin-widget.jpg"), full_page=True, quality=70
            )

            visitor = await prechat_widget(browser, f"{shop_base}shop/{site.site.widget_key}")
            sheet = visitor.locator(WIDGET)
            await expect(sheet.locator(".greeting")).to_have_text("Welcome to Teapot & Co.")
            accent = await sheet.locator(".prechat button[type=submit]").evaluate(
                "b => getComputedStyle(b).backgroundColor"
            )
            assert accent == "rgb(154, 52, 18)"  # the colour the admin chose
            await expect(sheet.locator("label[for=kefu-prechat-email]")).to_contain_text(
                "Your e-mail"
            )
            await visitor.screenshot(path=screenshot_path("ui-en-prechat.jpg"), quality=70)
            # nothing filled in: both blocked with a message, nothing sent
            await sheet.locator(".prechat button[type=submit]").click()
            email_error = sheet.locator("#kefu-prechat-email-error")
            await expect(email_error).to_have_text("Please fill this in.")
            await expect(sheet.locator("#kefu-prechat-topic-error")).to_have_text(
                "Please fill this in."
            )
            await expect(sheet.locator(".prechat-summary")).to_be_visible()
            await expect(sheet.locator(".composer")).to_be_hidden()
            await visitor.screenshot(path=screenshot_path("ui-en-prechat-errors.jpg"), quality=70)
            # a bad e-mail, then a topic still missing
            await sheet.locator("#kefu-prechat-email").fill("li@shop")
            await sheet.locator("#kefu-prechat-topic").select_option("Orders")
            await sheet.locator(".prechat button[type=submit]").click()
            await expect(email_error).to_have_text("Please enter a valid e-mail address.")
            await expect(sheet.locator("#kefu-prechat-topic-error")).to_be_hidden()
            visitors = await storage.list_visitors(site.site.id, limit=10)
            assert [v.email for v in visitors] == [None]  # nothing stored yet
            # the server checks too: a page that skips the form's checks is refused
            refused = await visitor.evaluate(
                """async ([base, key]) => {
                  const saved = JSON.parse(localStorage.getItem("kefu:" + key));
                  const resp = await fetch(`${base}v1/widget/prechat?token=${saved.token}`,
                    {method: "POST", body: JSON.stringify({answers: {email: "x@y.cn"}})});
                  return [resp.status, await resp.json()];
                }""",
                [kefu.base, site.site.widget_key],
            )
            assert refused[0] == 400
            assert refused[1]["error"]["fields"] == {"topic": "required"}

            await sheet.locator("#kefu-prechat-email").fill("li.lei@shop.cn")
            await sheet.locator(".prechat button[type=submit]").click()
            await sheet.locator(".composer textarea").wait_for()
            await expect(sheet.locator("form.prechat")).to_have_count(0)
            await widget_say(visitor, "Hello, my teapot has not arrived")
            await expect(sheet.locator(".msg.mine .text")).to_have_text(
                "Hello, my teapot has not arrived"
            )
            stored = (await storage.list_visitors(site.site.id, limit=10))[0]
            assert stored.email == "li.lei@shop.cn" and stored.attributes["topic"] == "Orders"

            await admin.goto(f"{kefu.base}console")
            await admin.locator("#conn-state.ws, #conn-state.longpoll").wait_for()
            await open_conversation(admin)
            panel = admin.locator("#visitor-panel")
            await expect(panel).to_contain_text("li.lei@shop.cn")
            # under the form's own label, not as a bare attribute key
            answers = panel.locator(".prechat-answers")
            await expect(answers.locator("dt")).to_have_text(["What is it about?"])
            await expect(answers.locator("dd")).to_have_text(["Orders"])
            await expect(panel.locator("dt", has_text="topic")).to_have_count(0)
            await admin.screenshot(path=screenshot_path("ui-en-prechat-console.jpg"), quality=70)
            await expect_contact_answers(admin, kefu.base, stored.id, "What is it about?", "Orders")

            # answered once: a reload goes straight to the chat
            await visitor.reload()
            await visitor.locator(f"{WIDGET} .launcher").click()
            await visitor.locator(f"{WIDGET} .composer textarea").wait_for()
            await expect(visitor.locator(f"{WIDGET} form.prechat")).to_have_count(0)
            assert admin.errors.errors == [] and visitor.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()


async def english_left(page, *data: str) -> list[str]:
    """English words on the page that are neither data (``data``: the site's id) nor names."""
    found = await page.evaluate(ENGLISH_WORDS, None)
    return sorted({w for w in found if w not in NOT_TEXT and w not in data})


async def test_the_form_and_its_admin_page_in_chinese(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "zhform")
    try:
        async with chromium() as browser:
            admin = await signed_in_agent(
                browser, kefu.base, site.site.id, site.admin.email, locale="zh-CN"
            )
            await configure_two_fields(admin, kefu.base)
            await expect(admin.locator("#widget-message")).to_have_text("已保存。")
            await admin.reload()
            await expect(admin.locator("#prechat-fields li")).to_have_count(2)
            await expect(admin.locator(".admin-main h1")).to_have_text("聊天窗口")
            await admin.wait_for_load_state("networkidle")
            left = await english_left(admin, site.site.id)
            assert left == [], f"admin/widget: {left}"
            await admin.screenshot(
                path=screenshot_path("ui-zh-admin-widget.jpg"), full_page=True, quality=70
            )

            url = f"{shop_base}shop/{site.site.widget_key}?lang=zh"
            visitor = await prechat_widget(browser, url, locale="zh-CN")
            sheet = visitor.locator(WIDGET)
            await expect(sheet.locator(".prechat h3")).to_have_text("开始咨询前")
            # the greeting follows the visitor's language (the English one went to the first test)
            await expect(sheet.locator(".greeting")).to_have_text("欢迎光临茶壶小店")
            await expect(sheet.locator("label[for=kefu-prechat-email]")).to_contain_text("您的邮箱")
            await expect(sheet.locator("label[for=kefu-prechat-topic]")).to_contain_text("咨询主题")
            options = await sheet.locator("#kefu-prechat-topic option").all_text_contents()
            assert options == ["请选择…", "订单", "退货"]
            await visitor.screenshot(path=screenshot_path("ui-zh-prechat.jpg"), quality=70)
            await sheet.locator("#kefu-prechat-email").fill("wang@shop.cn")
            await sheet.locator(".prechat button[type=submit]").click()
            await expect(sheet.locator("#kefu-prechat-topic-error")).to_have_text("请填写此项。")
            await expect(sheet.locator(".prechat-summary")).to_have_text("请检查上面标出的项目。")
            await visitor.screenshot(path=screenshot_path("ui-zh-prechat-errors.jpg"), quality=70)
            await sheet.locator("#kefu-prechat-topic").select_option("Returns")
            await sheet.locator(".prechat button[type=submit]").click()
            await sheet.locator(".composer textarea").wait_for()
            await widget_say(visitor, "你好，我想退货")  # noqa: RUF001

            await admin.goto(f"{kefu.base}console")
            await admin.locator("#conn-state.ws, #conn-state.longpoll").wait_for()
            await open_conversation(admin)
            panel = admin.locator("#visitor-panel")
            await expect(panel).to_contain_text("wang@shop.cn")
            # the agent's language: the Chinese label and the choice's Chinese label
            await expect(panel.locator(".prechat-answers h3")).to_have_text("咨询前表单")
            await expect(panel.locator(".prechat-answers dt")).to_have_text(["咨询主题"])
            await expect(panel.locator(".prechat-answers dd")).to_have_text(["退货"])
            await admin.screenshot(path=screenshot_path("ui-zh-prechat-console.jpg"), quality=70)
            (stored,) = await kefu.kernel.storage.list_visitors(site.site.id, limit=10)
            await expect_contact_answers(admin, kefu.base, stored.id, "咨询主题", "退货")
            assert admin.errors.errors == [] and visitor.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()


IDENTIFY = """async (profile) => { await window.kefu.identify(profile); return true; }"""


async def test_the_offline_form_wins_and_an_identified_visitor_is_not_asked(tmp_path):
    kefu = await start_kefu(tmp_path)
    shop_runner, shop_base = await start_shop(kefu.base)
    site = await add_site(kefu.kernel, "gates")
    field = {"key": "email", "type": "email", "label": {"en": "Your e-mail"}, "required": True}
    site.site.settings = {"widget": {"prechat": {"enabled": True, "fields": [field]}}}
    await kefu.kernel.storage.update_site(site.site)
    url = f"{shop_base}shop/{site.site.widget_key}"
    try:
        async with chromium() as browser:
            # nobody online: the leave-a-message form (it asks a name and an e-mail itself)
            away = await visitor_page(browser, url)
            sheet = away.locator(WIDGET)
            await sheet.locator(".launcher").click()
            offline = sheet.locator("form.offline")
            await expect(offline).to_be_visible()
            await expect(sheet.locator("form.prechat")).to_be_hidden()
            await offline.locator("input[name=name]").fill("Mei")
            await offline.locator("input[name=email]").fill("mei@example.com")
            await offline.locator("textarea[name=message]").fill("Do you ship to Hangzhou?")
            await offline.locator("button[type=submit]").click()
            await expect(sheet.locator(".notice")).to_contain_text("We got your message")
            # the message left, the pre-chat form does not come back in front of the chat
            await expect(sheet.locator(".composer")).to_be_visible()
            await expect(sheet.locator("form.prechat")).to_have_count(0)

            await signed_in_agent(browser, kefu.base, site.site.id, site.admin.email)
            known = await prechat_widget(browser, url)
            assert await known.evaluate(IDENTIFY, {"name": "Grace", "email": "grace@navy.test"})
            await expect(known.locator(f"{WIDGET} form.prechat")).to_have_count(0)
            await known.locator(f"{WIDGET} .composer textarea").wait_for()
            await widget_say(known, "hello")
            await expect(known.locator(f"{WIDGET} .msg.mine .text")).to_have_text("hello")
            assert away.errors.errors == [] and known.errors.errors == []
    finally:
        await shop_runner.cleanup()
        await kefu.runner.cleanup()
