"""The console and admin pages in Chinese (issue 14), the agent's Profile page, and the widget
as a full-screen sheet on a phone.

- Every text the templates (``_("...")``) and the scripts (``tr("...")``) show is in the
  zh-CN table with the same placeholders: a new text without its translation fails here.
- In the real browser (Debian's Chromium under Playwright) with a Chinese browser, every
  console and admin page shows no English word that is not data (names, e-mails, ids,
  code); the agent's own setting beats the browser's language both ways.
- Profile: a new name and picture reach the widget and the console, the password changes
  (the old one stops working).
- A phone (375x667): the open widget covers the screen.

Screenshots of every screen in both languages land in build/screenshots/ui-*.png
(docs/ui.md shows them)."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
import pytest_asyncio

from kefu.core.domain import Conversation, Visitor, new_id
from tests.chat_support import PASSWORD, add_site
from tests.conftest import ROOT
from tests.test_protocol_docs import PROTOCOL_MD, documented_codes
from tests.test_web_ui import tiny_png
from tests.web_support import (
    chromium,
    console_say,
    expect,
    open_conversation,
    open_widget,
    screenshot_path,
    start_kefu,
    start_shop,
    visitor_page,
    widget_say,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

WEB = ROOT / "plugins" / "web"
TABLE = json.loads((WEB / "static" / "i18n" / "zh-CN.json").read_text(encoding="utf-8"))
TEXT_CALL = {
    "html": re.compile(r"""\b_\(\s*"((?:[^"\\]|\\.)*)"|\b_\(\s*'((?:[^'\\]|\\.)*)'"""),
    "js": re.compile(r"""\btr\(\s*"((?:[^"\\]|\\.)*)"|\btr\(\s*'((?:[^'\\]|\\.)*)'"""),
}
#: Texts the code builds from data (states, presence, buttons, days): in the table too.
BUILT = [
    "queued", "assigned", "resolved", "online", "away", "offline", "Visitor", "Agent", "Bot",
    "System", "Take", "Accept", "Decline", "Transfer", "Resolve", "Reopen", "Status",
    "Agents", "Sites", "Routing", "Hours", "Canned", "Bot", "FAQ", "Plugins", "Mon", "Tue",
    "Wed", "Thu", "Fri", "Sat", "Sun", "Version", "Created", "Source", "States / intents",
    "Assigned to {name}: only they can reply.", "Assigned to {name}; you reply as an admin.",
]  # fmt: skip
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def shown_texts() -> set[str]:
    found = set(BUILT)
    sources = [*(WEB / "templates").glob("*.html"), *(WEB / "static").rglob("*.js")]
    for path in sources:
        if "widget" in path.parts:  # the widget has its own two-language table (lib/i18n.js)
            continue
        pattern = TEXT_CALL["html" if path.suffix == ".html" else "js"]
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.add((match.group(1) or match.group(2)).replace("\\'", "'").replace('\\"', '"'))
    return found


async def test_every_text_has_its_chinese_translation():
    texts = shown_texts()
    assert len(texts) > 200
    missing = sorted(t for t in texts if t not in TABLE)
    assert missing == [], f"add to plugins/web/static/i18n/zh-CN.json: {missing}"
    untranslated = sorted(t for t in texts if TABLE[t] == t)
    assert untranslated == []
    wrong = [t for t in texts if set(PLACEHOLDER.findall(t)) != set(PLACEHOLDER.findall(TABLE[t]))]
    assert wrong == [], "placeholders differ between English and Chinese"


#: The code -> text table of the console and admin pages (one entry per line: ``  code: ...``).
ERROR_TABLE = re.compile(r"^export const ERROR_TEXTS = \{$(.*?)^\};$", re.M | re.S)


def worded_codes() -> set[str]:
    source = (WEB / "static" / "lib" / "errors.js").read_text(encoding="utf-8")
    table = ERROR_TABLE.search(source)
    assert table, "static/lib/errors.js has no ERROR_TEXTS table"
    return set(re.findall(r"^  (\w+): ", table.group(1), re.M))


async def test_every_error_code_has_a_text_in_chinese():
    """Every code of docs/protocol.md section 6 (the test there holds every code a plugin
    sends) is worded by static/lib/errors.js; its texts are ``tr()`` calls, which the test
    above holds to the zh-CN table."""
    codes = documented_codes(PROTOCOL_MD.read_text(encoding="utf-8"))
    assert len(codes) > 60
    worded = worded_codes()
    missing = sorted(codes - worded)
    assert missing == [], f"add to ERROR_TEXTS in plugins/web/static/lib/errors.js: {missing}"
    stale = sorted(worded - codes)
    assert stale == [], f"ERROR_TEXTS words codes docs/protocol.md section 6 lacks: {stale}"


# -- in the browser ------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("web-i18n"), '[web]\ndemo_site = "zh"\n')
    shop_runner, shop_base = await start_shop(running.base)
    running.shop_base = shop_base
    running.site = await add_site(running.kernel, "zh")
    # the walk visits install-level pages too (routing, plugins...: owners only since
    # issue 13's hole 11), so its admin is also the install's owner, as the demo admin is
    admin = running.site.admin
    admin.roles = [*admin.roles, "owner"]
    assert await running.kernel.storage.update_agent(admin)
    yield running
    await shop_runner.cleanup()
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


ADMIN_PAGES = [
    "status", "reports", "agents", "sites", "routing", "hours", "canned", "bot", "faq", "kb",
    "llm", "webhooks", "identity", "plugins",
]  # fmt: skip
#: Words on the pages that are data or names, not texts to translate.
NOT_TEXT = {
    "kefu", "Ada", "Bob", "admin", "agent", "test", "UTC", "IANA", "YYYY", "sha256", "docs",
    "bot", "PNG", "JPEG", "GIF", "WebP", "English", "Teapot", "kefu.toml", "https", "shop",
    "example", "billing", "sales", "hello", "then", "agent_tools", "bot_intents",
    "shop.example", "bot.md", "sha", "CSV", "Markdown", "URL", "JSON", "POST", "integrations.md",
    "crm.example.com", "llm_openai", "OpenAI",
}  # fmt: skip

ENGLISH_WORDS = """els => {
  const skip = "code, pre, .snippet, .hooks, script, style, .me";
  const words = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!el || el.closest(skip) || el.closest("[hidden]") || !el.checkVisibility()) continue;
    if (el.closest("[translate]")?.getAttribute("translate") === "no") continue; // data
    words.push(...(node.textContent.match(/[A-Za-z][A-Za-z_.]{2,}/g) || []));
  }
  for (const el of document.querySelectorAll("input[placeholder], textarea[placeholder]")) {
    if (!el.checkVisibility()) continue;
    words.push(...(el.placeholder.match(/[A-Za-z][A-Za-z_.]{2,}/g) || []));
  }
  return words;
}"""


async def signed_in(browser, kefu, email, locale, password=PASSWORD):
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale=locale)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto(f"{kefu.base}console/login")
    await page.fill("input[name=site_id]", "zh")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/console$"))
    await page.locator("#conn-state.ws").wait_for()
    return page


async def shoot(page, name: str) -> None:
    """``name``.png for review and ``name``.jpg, the copy docs/img keeps (docs/ui.md)."""
    await page.screenshot(path=screenshot_path(f"{name}.png"))
    await page.screenshot(path=screenshot_path(f"{name}.jpg"), quality=70)


async def english_left(page, ids: tuple[str, ...] = ()) -> list[str]:
    """English words on the page that are neither data nor an id ("访客 3fK9aZ")."""
    found = await page.evaluate(ENGLISH_WORDS, None)
    return sorted({w for w in found if w not in NOT_TEXT and not any(w in i[:6] for i in ids)})


async def test_every_screen_in_chinese_and_english(kefu, browser):
    site = kefu.site
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}?lang=zh")
    for locale, lang in (("zh-CN", "zh"), ("en-US", "en")):
        login = await (await browser.new_context(viewport={"width": 1280, "height": 800},
                                                 locale=locale)).new_page()  # fmt: skip
        await login.goto(f"{kefu.base}console/login")
        await expect(login.locator("html")).to_have_attribute(
            "lang", "zh-CN" if lang == "zh" else "en"
        )
        if lang == "zh":
            await expect(login.locator("button[type=submit]")).to_have_text("登录")
            left = await english_left(login)
            assert left == [], f"login: {left}"
        await shoot(login, f"ui-{lang}-login")
        await login.context.close()

        ada = await signed_in(browser, kefu, site.admin.email, locale)
        if lang == "zh":
            await open_widget(visitor)
            await widget_say(visitor, "你好，有现货吗？")  # noqa: RUF001
        await open_conversation(ada)
        if lang == "zh":
            await console_say(ada, "有的，今天发货。")  # noqa: RUF001
            await expect(ada.locator("#message-list .msg.mine .who")).to_have_text("我")
        await expect(ada.locator('.tabs [data-tab="queued"]')).to_contain_text(
            "排队中" if lang == "zh" else "Queued"
        )
        if lang == "zh":
            conversations = await kefu.kernel.storage.list_conversations(site.site.id)
            ids = tuple(c.visitor_id for c in conversations)
            left = await english_left(ada, ids)
            assert left == [], f"console: {left}"
        await shoot(ada, f"ui-{lang}-console")
        for name in ADMIN_PAGES:
            await ada.goto(f"{kefu.base}admin/{name}")
            await ada.locator(".admin-main h1").wait_for()
            await ada.wait_for_load_state("networkidle")
            if lang == "zh":
                left = await english_left(ada)
                assert left == [], f"admin/{name}: {left}"
            await shoot(ada, f"ui-{lang}-admin-{name}")
        await ada.goto(f"{kefu.base}console/profile")
        if lang == "zh":
            left = await english_left(ada)
            assert left == [], f"profile: {left}"
        await shoot(ada, f"ui-{lang}-profile")
        assert ada.errors == []
        await ada.context.close()
    await visitor.context.close()


async def test_the_agent_setting_beats_the_browser_language(kefu, browser):
    bob = await signed_in(browser, kefu, kefu.site.agent.email, "zh-CN")
    await expect(bob.locator('.tabs [data-tab="mine"]')).to_contain_text("我的")
    await bob.goto(f"{kefu.base}console/profile")
    await bob.locator("select[name=language]").select_option("en")
    await bob.locator("#profile-form button[type=submit]").click()
    await expect(bob.locator("#profile-message")).to_have_text("Profile saved.")
    await bob.goto(f"{kefu.base}console")
    await expect(bob.locator('.tabs [data-tab="mine"]')).to_contain_text("Mine")
    await bob.goto(f"{kefu.base}console/profile")
    await bob.locator("select[name=language]").select_option("zh-CN")
    await bob.locator("#profile-form button[type=submit]").click()
    await expect(bob.locator("#profile-message")).to_have_text("个人资料已保存。")
    await bob.locator("select[name=language]").select_option("auto")  # back to the browser's
    await bob.locator("#profile-form button[type=submit]").click()
    assert bob.errors == []
    await bob.context.close()


POST_CANNED = """body => import("/static/lib/api.js")
  .then(({ api }) => api("/v1/canned_replies", { method: "POST", json: body }))
  .then(() => "saved", (err) => err.message)"""
PATCH_WIDGET = """([site, widget]) => import("/static/lib/api.js")
  .then(({ api }) => api(`/v1/sites/${site}`, { method: "PATCH", json: { widget } }))
  .then(() => "saved", (err) => err.message)"""


async def test_server_refusals_in_the_agents_language(kefu, browser):
    """A refusal of the REST API on an admin page is worded from its code (and a validation
    error from its field, under the form's label for it, and problem) in Chinese; an English
    page keeps the server's words."""
    ada = await signed_in(browser, kefu, kefu.site.admin.email, "zh-CN")
    await ada.goto(f"{kefu.base}admin/canned")
    form, said = ada.locator("#canned-form"), ada.locator("#canned-message")
    for _ in range(2):
        await form.locator("input[name=shortcut]").fill("tk")
        await form.locator("textarea[name=text]").fill("七天内退款。")
        await form.locator("button[type=submit]").click()
        await expect(said).not_to_be_hidden()
    await expect(said).to_have_text("此快捷码已存在。")
    await expect(said).to_have_class("error")
    left = await english_left(ada)
    assert left == [], f"admin/canned: {left}"
    # a field under the label the form shows it with; one the form lacks under its API name
    bad = {"shortcut": "Refund!", "text": "hi", "scope": "site"}
    assert await ada.evaluate(POST_CANNED, bad) == "“快捷码”：含有不允许的字符。"  # noqa: RUF001
    long = {"shortcut": "long", "text": "x" * 4001, "scope": "site"}
    assert await ada.evaluate(POST_CANNED, long) == "“内容”：最多 4000 个字符。"  # noqa: RUF001
    assert await ada.evaluate(POST_CANNED, {"shortcut": "x", "text": "hi", "colour": 1}) == (
        "“colour”：不是此表单的字段。"  # noqa: RUF001
    )
    await form.locator("input[name=shortcut]").fill("Refund!")  # past the browser's pattern
    await form.evaluate("f => f.noValidate = true")
    await form.locator("button[type=submit]").click()
    await expect(said).to_have_text("“快捷码”：含有不允许的字符。")  # noqa: RUF001
    # a nested field (settings.widget.greeting_zh): its label without the explanation
    await ada.goto(f"{kefu.base}admin/widget")
    widget = [kefu.site.site.id, {"greeting_zh": "长" * 501}]
    assert await ada.evaluate(PATCH_WIDGET, widget) == "“中文欢迎语”：最多 500 个字符。"  # noqa: RUF001
    # an op's error frame (the agent tools' `tag`) in the console
    site_id = kefu.site.site.id
    storage = kefu.kernel.storage
    visitor = await storage.upsert_visitor(Visitor(new_id(), site_id, name="Tao"))
    tagged = await storage.create_conversation(
        Conversation(
            new_id(),
            site_id,
            visitor.id,
            state="assigned",
            assignee_id=kefu.site.admin.id,
            tags=[f"t{n}" for n in range(20)],
        )
    )
    await ada.goto(f"{kefu.base}console#c={tagged.id}")
    await ada.reload()
    await ada.locator("#annotations .tag-form input").fill("one-more")
    await ada.locator("#annotations .tag-form button").click()
    refusal = ada.locator("#annotations .annot-error")
    await expect(refusal).to_have_text("一个对话最多有 20 个标签。")
    assert ada.errors == []
    await ada.context.close()
    english = await signed_in(browser, kefu, kefu.site.admin.email, "en-US")
    await english.goto(f"{kefu.base}admin/canned")
    assert await english.evaluate(POST_CANNED, long) == (
        "text: String should have at most 4000 characters"
    )
    await english.context.close()


async def test_profile_name_picture_and_password(kefu, browser):
    site = await add_site(kefu.kernel)
    email = site.agent.email
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    bob = await context.new_page()
    await bob.goto(f"{kefu.base}console/login")
    await bob.fill("input[name=site_id]", site.site.id)
    await bob.fill("input[name=email]", email)
    await bob.fill("input[name=password]", PASSWORD)
    await bob.click("button[type=submit]")
    await bob.wait_for_url(re.compile(r"/console$"))
    await bob.goto(f"{kefu.base}console/profile")
    await bob.fill("input[name=name]", "Bob Li")
    picture = {"name": "me.png", "mimeType": "image/png", "buffer": tiny_png()}
    await bob.locator("input[name=avatar]").set_input_files(picture)
    await bob.locator("#profile-form button[type=submit]").click()
    await expect(bob.locator("img.avatar.big")).to_be_visible()
    form = bob.locator("#password-form")
    await form.locator("input[name=current_password]").fill("not my password")
    await form.locator("input[name=new_password]").fill("a new long password")
    await form.locator("input[name=repeat]").fill("a new long password")
    await form.locator("button[type=submit]").click()
    await expect(bob.locator("#password-message")).to_have_text(
        "The current password is not right."
    )
    await form.locator("input[name=current_password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(bob.locator("#password-message")).to_have_text("Password changed.")
    async with aiohttp.ClientSession() as http:
        for password, status in ((PASSWORD, 401), ("a new long password", 200)):
            body = {"site_id": site.site.id, "email": email, "password": password}
            async with http.post(f"{kefu.base}v1/auth/login", json=body) as resp:
                assert resp.status == status

    # the visitor sees the new name with the picture
    await bob.goto(f"{kefu.base}console")
    await bob.locator("#conn-state.ws").wait_for()
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "hi")
    await open_conversation(bob)
    await console_say(bob, "Hello from Bob")
    who = visitor.locator("#kefu-widget .msg.theirs.agent .who")
    await expect(who).to_have_text("Bob Li")
    await expect(who.locator("img.avatar")).to_be_visible()
    await expect(bob.locator("#message-list .msg.mine img.avatar")).to_have_count(1)
    await context.close()
    await visitor.context.close()


async def test_the_widget_is_a_full_screen_sheet_on_a_phone(kefu, browser):
    for lang, locale in (("zh", "zh-CN"), ("en", "en-US")):
        context = await browser.new_context(
            viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True, locale=locale
        )
        phone = await context.new_page()
        await phone.goto(kefu.base)  # the demo shop: a mobile page (<meta name=viewport>)
        await phone.locator("#kefu-widget .launcher").wait_for()
        await shoot(phone, f"ui-{lang}-phone-closed")
        await open_widget(phone)
        box = await phone.locator("#kefu-widget .panel").bounding_box()
        assert box == {"x": 0, "y": 0, "width": 375, "height": 667}, box
        await expect(phone.locator("#kefu-widget .launcher")).to_be_hidden()
        await shoot(phone, f"ui-{lang}-phone-open")
        await phone.locator("#kefu-widget .close").click()
        await expect(phone.locator("#kefu-widget .launcher")).to_be_visible()
        await phone.context.close()


async def login_status(kefu, site_id: str, email: str, password: str) -> int:
    async with aiohttp.ClientSession() as http:
        body = {"site_id": site_id, "email": email, "password": password}
        async with http.post(f"{kefu.base}v1/auth/login", json=body) as resp:
            return resp.status


async def test_admin_disables_resets_and_deletes_an_agent(kefu, browser):
    site = await add_site(kefu.kernel)
    sid, bob_email = site.site.id, site.agent.email
    bob_context = await browser.new_context(viewport={"width": 1280, "height": 800})
    bob = await bob_context.new_page()
    await bob.goto(f"{kefu.base}console/login")
    await bob.fill("input[name=site_id]", sid)
    await bob.fill("input[name=email]", bob_email)
    await bob.fill("input[name=password]", PASSWORD)
    await bob.click("button[type=submit]")
    await bob.locator("#conn-state.ws").wait_for()

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    ada = await context.new_page()
    await ada.goto(f"{kefu.base}console/login")
    await ada.fill("input[name=site_id]", sid)
    await ada.fill("input[name=email]", site.admin.email)
    await ada.fill("input[name=password]", PASSWORD)
    await ada.click("button[type=submit]")
    await ada.wait_for_url(re.compile(r"/console$"))
    await ada.goto(f"{kefu.base}admin/agents")
    row = ada.locator(f'tr[data-agent="{site.agent.id}"]')
    await expect(row.locator(".pill.role")).to_have_text("Agent")
    await expect(ada.locator(f'tr[data-agent="{site.admin.id}"] .pill.role')).to_have_text(
        "Administrator"
    )
    await expect(ada.locator(f'tr[data-agent="{site.admin.id}"] .account button')).to_have_count(0)

    await row.locator("button.disable").click()
    await expect(row.locator(".pill.offline")).to_have_text("Disabled")
    await bob.wait_for_url(re.compile(r"/console/login$"))  # signed out at once
    assert await login_status(kefu, sid, bob_email, PASSWORD) == 403
    await row.locator("button.enable").click()
    await expect(row.locator("button.disable")).to_be_visible()
    assert await login_status(kefu, sid, bob_email, PASSWORD) == 200

    await row.locator("form.reset input").fill("reset by ada 123")
    await row.locator("form.reset button").click()
    await expect(ada.locator("#agents-message")).to_contain_text("was reset")
    assert await login_status(kefu, sid, bob_email, PASSWORD) == 401
    assert await login_status(kefu, sid, bob_email, "reset by ada 123") == 200

    ada.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await row.locator("button.delete").click()
    await expect(ada.locator("#agents-message")).to_contain_text("was deleted")
    await expect(row).to_be_hidden()
    assert await login_status(kefu, sid, bob_email, "reset by ada 123") == 401
    await ada.screenshot(path=screenshot_path("ui-en-admin-agents-actions.png"))
    await context.close()
    await bob_context.close()
