"""Messages in the widget and the console (issue 14), in the real browser (Debian's Chromium
under Playwright): links made safely (http(s) and e-mail only, never HTML), the image
lightbox, file cards and their preview (a PDF in a frame, a text file as text), the emoji
picker and an agent's message delete with its live tombstone. docs/ui.md, "Messages".
Screenshots land in build/screenshots/ui-{en,zh}-messages-*.jpg."""

from __future__ import annotations

import asyncio
import re
import struct
import zlib

import aiohttp
import pytest
import pytest_asyncio

from tests.chat_support import add_site, login
from tests.rest_support import bearer
from tests.test_web_i18n import english_left
from tests.web_support import (
    Frames,
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

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

#: (text, the hrefs its links must have, in order). Everything else stays text.
LINK_CASES = [
    ("see https://example.com/a?b=1&c=2.", ["https://example.com/a?b=1&c=2"]),
    ("(https://en.wikipedia.org/wiki/Foo_(bar))", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
    ("HTTP://EXAMPLE.COM/X, then", ["http://example.com/X"]),
    ("mail ann@example.test.", ["mailto:ann@example.test"]),
    ("javascript:alert(1)", []),
    ("JaVaScRiPt:alert(document.cookie)", []),
    ("javascript://example.com/%0aalert(1)", []),
    ("vbscript:msgbox(1) data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", []),
    ("file:///etc/passwd ftp://example.com/x //evil.example/x www.example.com", []),
    ("<script>window.__xss = 1</script>", []),
    ('<img src=x onerror="window.__xss = 1">', []),
    ('<a href="javascript:window.__xss=1">click</a>', []),
    ('https://example.com/"><img src=x onerror=window.__xss=1>', ["https://example.com/"]),
    ("http:// https://", []),
    ("java\u0000script:alert(1) java&#115;cript:alert(1)", []),
    ("mailto:ann@example.test?subject=<script>", ["mailto:ann@example.test"]),
]

UNIT = """async ([cases]) => {
  const { linkify } = await import("/static/lib/rich.js");
  return cases.map(([text]) => {
    const box = document.createElement("p");
    box.append(...linkify(text));
    const elements = [...box.querySelectorAll("*")];
    return {
      text: box.textContent,
      tags: elements.map((e) => e.tagName),
      hrefs: elements.map((e) => e.getAttribute("href")),
      rels: elements.map((e) => e.rel),
      targets: elements.map((e) => e.target),
      attrs: elements.map((e) => e.getAttributeNames().sort().join(",")),
    };
  });
}"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def kefu(tmp_path_factory):
    running = await start_kefu(tmp_path_factory.mktemp("web-messages"))
    shop_runner, running.shop_base = await start_shop(running.base)
    yield running
    await shop_runner.cleanup()
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser():
    async with chromium() as launched:
        yield launched


def picture_png(width: int = 240, height: int = 150) -> bytes:
    """A real PNG, a teal-to-amber gradient (uploads are sniffed by content)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((15 + x, 118 + y // 2, 110 + x // 2)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def document_pdf(title: str = "Invoice 1182") -> bytes:
    """A one-page PDF with a line of text, with its cross-reference table."""
    stream = f"BT /F1 28 Tf 60 300 Td ({title}) Tj 0 -40 Td /F1 16 Tf (2 x teapot, 39.00) Tj ET"
    objects = [
        "<</Type/Catalog/Pages 2 0 R>>",
        "<</Type/Pages/Kids[3 0 R]/Count 1>>",
        "<</Type/Page/Parent 2 0 R/MediaBox[0 0 420 400]/Contents 4 0 R"
        "/Resources<</Font<</F1 5 0 R>>>>>>",
        f"<</Length {len(stream)}>>stream\n{stream}\nendstream",
        "<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj{body}endobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{at:010d} 00000 n \n".encode() for at in offsets)
    trailer = f"trailer<</Size {len(objects) + 1}/Root 1 0 R>>\nstartxref\n{xref}\n%%EOF\n"
    return out + trailer.encode()


def widget(page):
    return page.locator("#kefu-widget")


async def test_linkify_keeps_every_payload_text_and_links_only_http_and_mail(kefu, browser):
    """The module itself, in the page's real DOM: each text comes back as the same text, the
    only elements are <a> with an http(s) or mailto href, rel and target."""
    page = await browser.new_page()
    await page.goto(f"{kefu.base}console/login")
    results = await page.evaluate(UNIT, [LINK_CASES])
    for (text, hrefs), got in zip(LINK_CASES, results, strict=True):
        assert got["text"] == text, text
        assert got["tags"] == ["A"] * len(hrefs), (text, got)
        assert got["hrefs"] == hrefs, text
        assert set(got["rels"]) <= {"noopener noreferrer nofollow"}
        assert set(got["targets"]) <= {"_blank"}
        assert set(got["attrs"]) <= {"class,href,rel,target"}
    assert await page.evaluate("window.__xss") is None
    await page.close()


async def chat(kefu, browser, site):
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email)
    visitor = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
    await open_widget(visitor)
    await widget_say(visitor, "hello")
    conversation_id = await open_conversation(agent)
    await expect(widget(visitor).locator(".notice")).to_have_text("Bob joined the chat.")
    return agent, visitor, conversation_id


async def test_links_images_and_files_in_both_uis(kefu, browser):
    site = await add_site(kefu.kernel, "m1")
    agent, visitor, _ = await chat(kefu, browser, site)

    # a visitor's XSS attempt and links: text on the agent's screen, two safe links
    payload = (
        '<img src=x onerror="window.__xss=1"> javascript:alert(1) '
        "order https://shop.example/o/1182?x=1. or ann@example.test"
    )
    await widget_say(visitor, payload)
    text = agent.locator("#message-list .msg.theirs .text").last
    await expect(text).to_have_text(payload)
    links = text.locator("a")
    await expect(links).to_have_count(2)
    assert await links.evaluate_all("els => els.map(e => e.getAttribute('href'))") == [
        "https://shop.example/o/1182?x=1",
        "mailto:ann@example.test",
    ]
    assert await links.first.get_attribute("rel") == "noopener noreferrer nofollow"
    assert await links.first.get_attribute("target") == "_blank"
    assert await text.locator("img").count() == 0
    # the agent's link reaches the widget as a link too
    await console_say(agent, "Track it at https://track.example/1182 (24h)")
    sent = widget(visitor).locator(".msg.theirs:not(.notice) .text").last
    await expect(sent.locator("a")).to_have_attribute("href", "https://track.example/1182")
    await expect(sent).to_have_text("Track it at https://track.example/1182 (24h)")

    # an image from the visitor: a click opens the lightbox, Esc closes it, a click too
    picture = {"name": "pot.png", "mimeType": "image/png", "buffer": picture_png()}
    await widget(visitor).locator("input.file").set_input_files(picture)
    image = agent.locator("#message-list .msg.theirs img.image")
    await expect(image).to_be_visible()
    await image.click()
    box = agent.locator("body > .lightbox")
    await expect(box).to_be_visible()
    await expect(box.locator(".lightbox-name")).to_have_text("pot.png")
    await agent.wait_for_function(
        "() => document.querySelector('.lightbox-image').naturalWidth === 240"
    )
    await agent.screenshot(path=screenshot_path("ui-en-messages-lightbox.jpg"), quality=70)
    await agent.keyboard.press("Escape")
    await expect(box).to_have_count(0)
    await expect(agent.locator("#message-list .image-link")).to_be_focused()
    await agent.keyboard.press("Enter")  # the keyboard opens it too
    await expect(box).to_be_visible()
    await box.click()
    await expect(box).to_have_count(0)
    mine = widget(visitor).locator(".msg.mine img.image")
    await mine.click()
    wbox = widget(visitor).locator(".lightbox")
    await expect(wbox).to_be_visible()
    await visitor.keyboard.press("Escape")
    await expect(wbox).to_have_count(0)

    # a PDF from the agent: a file card with its name and size; Ctrl+click: a new tab
    pdf = b"%PDF-1.4\n" + b"%" * 2100 + b"\n%%EOF\n"
    await agent.locator("#composer-file").set_input_files(
        {"name": "invoice 1182.pdf", "mimeType": "application/pdf", "buffer": pdf}
    )
    card = widget(visitor).locator(".msg.theirs .file-card")
    await expect(card).to_be_visible()
    await expect(card.locator(".file-name")).to_have_text("invoice_1182.pdf")
    await expect(card.locator(".file-size")).to_have_text("2 KB")
    await expect(card.locator(".file-icon")).to_have_text("PDF")
    assert await card.get_attribute("target") == "_blank"
    assert await card.get_attribute("download") is None
    own = agent.locator("#message-list .msg.mine .file-card")
    await expect(own.locator(".file-name")).to_have_text("invoice_1182.pdf")
    async with agent.context.expect_page() as opened:  # a plain click previews (below)
        await own.click(modifiers=["Control"])
    tab = await opened.value
    await tab.wait_for_load_state("commit")
    assert "/v1/uploads/m1/" in tab.url and tab.url.endswith(".pdf")
    await tab.close()
    # and the served file says inline: the browser shows it instead of downloading it
    url = await own.get_attribute("href")
    resp = await agent.request.get(url)
    assert resp.status == 200 and resp.headers["content-disposition"].startswith("inline;")
    await visitor.screenshot(path=screenshot_path("ui-en-messages-widget.jpg"), quality=70)
    await agent.screenshot(path=screenshot_path("ui-en-messages-console.jpg"), quality=70)

    assert await agent.evaluate("window.__xss") is None
    assert await visitor.evaluate("window.__xss") is None
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await asyncio.gather(agent.context.close(), visitor.context.close())


async def test_agent_deletes_a_message_and_every_screen_shows_the_tombstone(kefu, browser):
    site = await add_site(kefu.kernel, "m2")
    storage = kefu.kernel.storage
    bob, visitor, conversation_id = await chat(kefu, browser, site)
    answers = []  # what Bob answers the confirmation: False first, then True
    bob.on("dialog", lambda d: asyncio.ensure_future(d.accept() if answers.pop(0) else d.dismiss()))
    await widget_say(visitor, "my card is 4242 4242 4242 4242")
    ada = await signed_in_agent(browser, kefu.base, "m2", site.admin.email)
    assert await open_conversation(ada) == conversation_id  # under All open
    await console_say(ada, "Ada (admin) here")
    await console_say(bob, "Please never send card numbers here.")
    card = bob.locator("#message-list .msg[data-seq='2']")
    await expect(card.locator(".text")).to_have_text("my card is 4242 4242 4242 4242")

    # Bob's menu: on the visitor's message and his own, not on the admin's
    ada_message = bob.locator("#message-list .msg", has_text="Ada (admin) here")
    await expect(ada_message).to_have_count(1)
    assert await ada_message.locator(".msg-menu-button").count() == 0
    await expect(bob.locator("#message-list .msg.self .msg-menu-button")).to_have_count(1)
    button = card.locator(".msg-menu-button")
    await button.focus()  # keyboard: Enter opens the menu with its item focused, Esc closes
    await bob.keyboard.press("Enter")
    item = card.locator('.msg-menu [data-action="delete"]')
    await expect(item).to_be_focused()
    await bob.keyboard.press("Escape")
    await expect(card.locator(".msg-menu")).to_be_hidden()
    await expect(button).to_be_focused()
    answers.append(False)  # a dismissed confirmation deletes nothing
    await button.click()
    await item.click()
    await asyncio.sleep(0.3)
    await expect(card.locator(".text")).to_have_text("my card is 4242 4242 4242 4242")
    answers.append(True)
    await button.click()
    await bob.screenshot(path=screenshot_path("ui-en-messages-delete-menu.jpg"), quality=70)
    await item.click()

    # the tombstone everywhere, live: Bob, the widget, Ada's console
    await expect(card.locator(".text.tombstone")).to_have_text("You deleted this message.")
    shown = widget(visitor).locator(".msg.mine[data-seq='2'] .text")
    await expect(shown).to_have_text("This message was deleted.")
    await expect(ada.locator("#message-list .msg[data-seq='2'] .text")).to_have_text(
        "Bob deleted this message."
    )
    await expect(widget(visitor).locator(".messages")).not_to_contain_text("4242")
    stored = await storage.list_messages("m2", conversation_id, after_seq=1, limit=1)
    assert stored[0].text == "" and stored[0].meta["deleted"]["by"] == site.agent.id
    (record,) = await storage.list_records("m2", "audit.message_delete")
    assert (record.data["seq"], record.data["by"], record.data["sender_kind"]) == (
        2, site.agent.id, "visitor"
    )  # fmt: skip
    # the admin may delete a colleague's message
    bobs = ada.locator("#message-list .msg", has_text="Please never send card numbers here.")
    ada.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await bobs.locator(".msg-menu-button").click()
    await bobs.locator('[data-action="delete"]').click()
    await expect(bob.locator("#message-list .msg.self .text.tombstone")).to_have_text(
        "Ada deleted this message."
    )
    await bob.screenshot(path=screenshot_path("ui-en-messages-deleted.jpg"), quality=70)
    await visitor.screenshot(path=screenshot_path("ui-en-messages-widget-deleted.jpg"), quality=70)

    # after a reload the history has the tombstones, not the texts
    await visitor.reload()
    await open_widget(visitor)
    await expect(widget(visitor).locator(".text.tombstone")).to_have_count(2)
    await expect(widget(visitor).locator(".messages")).not_to_contain_text("4242")
    await bob.reload()
    await bob.locator("#chat-inner:not([hidden])").wait_for()
    await expect(bob.locator("#message-list .text.tombstone")).to_have_count(2)
    for page in (bob, visitor, ada):
        assert page.errors.errors == []
    await asyncio.gather(bob.context.close(), visitor.context.close(), ada.context.close())


async def test_emoji_picker_in_both_composers_by_mouse_and_keyboard(kefu, browser):
    site = await add_site(kefu.kernel, "m3")
    agent, visitor, _ = await chat(kefu, browser, site)
    asked = []  # every request from here on: the picker needs none
    for page in (agent, visitor):
        page.on("request", lambda r: asked.append(r.url))

    # the widget: a click opens the grid, a click inserts at the caret, the grid closes
    box = widget(visitor).locator(".composer textarea")
    await box.fill("Thanks !")
    await box.evaluate("el => el.setSelectionRange(7, 7)")
    button = widget(visitor).locator(".emoji-button")
    await expect(button).to_have_attribute("aria-label", "Insert an emoji")
    await button.click()
    grid = widget(visitor).locator(".emoji-panel")
    await expect(grid).to_be_visible()
    await expect(grid.locator(".emoji")).to_have_count(40)
    await visitor.screenshot(path=screenshot_path("ui-en-messages-emoji-widget.jpg"), quality=70)
    await grid.locator('.emoji[aria-label="thumbs up"]').click()
    await expect(grid).to_be_hidden()
    await expect(box).to_have_value("Thanks 👍!")
    await expect(box).to_be_focused()
    await box.press("Enter")
    await expect(agent.locator("#message-list .msg.theirs .text").last).to_have_text("Thanks 👍!")
    await button.click()  # a click elsewhere closes it
    await expect(grid).to_be_visible()
    await widget(visitor).locator(".scroll").click()
    await expect(grid).to_be_hidden()

    # the console, by keyboard only: Enter opens with the first focused, arrows, Enter inserts
    text = agent.locator("#composer-text")
    await text.fill("Glad to help ")
    await text.press("End")
    await text.press("Tab")
    cbutton = agent.locator("#composer .emoji-button")
    await expect(cbutton).to_be_focused()
    await agent.keyboard.press("Enter")
    cells = agent.locator("#composer .emoji-panel .emoji")
    await expect(cells.first).to_be_focused()
    await agent.keyboard.press("ArrowRight")
    await agent.keyboard.press("ArrowDown")  # the second row: index 9, "cool face"
    await expect(cells.nth(9)).to_be_focused()
    await agent.screenshot(path=screenshot_path("ui-en-messages-emoji-console.jpg"), quality=70)
    await agent.keyboard.press("Escape")  # Esc closes, the focus back on the button
    await expect(agent.locator("#composer .emoji-panel")).to_be_hidden()
    await expect(cbutton).to_be_focused()
    await agent.keyboard.press("ArrowDown")  # opens again where it was
    await expect(cells.nth(9)).to_be_focused()
    await agent.keyboard.press("End")
    await agent.keyboard.press("ArrowLeft")
    await agent.keyboard.press("Enter")
    await expect(text).to_have_value("Glad to help ☕")
    await expect(text).to_be_focused()
    await text.press("Enter")
    await expect(widget(visitor).locator(".msg.theirs:not(.notice) .text").last).to_have_text(
        "Glad to help ☕"
    )
    assert [u for u in asked if "/static/" in u or not u.startswith(kefu.base)] == []
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await asyncio.gather(agent.context.close(), visitor.context.close())


async def test_messages_in_chinese(kefu, browser):
    """The same features on a Chinese console and widget: every new text translated (no
    English left on the console), the emoji named in Chinese; the close-ups of docs/ui.md
    in Chinese (the message menu, tombstones, the emoji pickers, the lightbox)."""
    site = await add_site(kefu.kernel, "m4")
    bob = await signed_in_agent(browser, kefu.base, "m4", site.agent.email, locale="zh-CN")
    bob.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    visitor = await visitor_page(  # a Chinese browser: times as 21:05, not 09:05 PM
        browser, f"{kefu.shop_base}shop/{site.site.widget_key}?lang=zh", locale="zh-CN"
    )
    await open_widget(visitor)
    await widget_say(visitor, "你好 订单在这里 https://shop.example/o/88 谢谢")
    conversation_id = await open_conversation(bob)
    await expect(
        bob.locator("#message-list .msg.theirs .text a")
    ).to_have_attribute("href", "https://shop.example/o/88")  # fmt: skip
    await widget_say(visitor, "我的手机号 13800000000")
    picture = {"name": "pot.png", "mimeType": "image/png", "buffer": picture_png()}
    await widget(visitor).locator("input.file").set_input_files(picture)
    await expect(bob.locator("#message-list img.image")).to_be_visible()
    await console_say(bob, "收到 请稍等 🙏")
    seq = await bob.locator("#message-list .msg", has_text="13800000000").get_attribute("data-seq")
    phone = bob.locator(f"#message-list .msg[data-seq='{seq}']")
    await expect(widget(visitor).locator("img.image")).to_be_visible()
    await visitor.screenshot(path=screenshot_path("ui-zh-messages-widget.jpg"), quality=70)
    await bob.screenshot(path=screenshot_path("ui-zh-messages-console.jpg"), quality=70)
    await phone.locator(".msg-menu-button").click()
    await expect(phone.locator('[data-action="delete"]')).to_have_text("删除消息")
    await bob.screenshot(path=screenshot_path("ui-zh-messages-delete-menu.jpg"), quality=70)
    await phone.locator('[data-action="delete"]').click()
    await expect(phone.locator(".text.tombstone")).to_have_text("您删除了这条消息。")
    await expect(widget(visitor).locator(".text.tombstone")).to_have_text("此消息已被删除。")
    await expect(bob.locator("#suggestions")).to_contain_text("订单在这里")  # asked again
    await expect(bob.locator("body")).not_to_contain_text("13800000000")
    await bob.screenshot(path=screenshot_path("ui-zh-messages-deleted.jpg"), quality=70)
    await visitor.screenshot(path=screenshot_path("ui-zh-messages-widget-deleted.jpg"), quality=70)
    button = widget(visitor).locator(".emoji-button")
    await expect(button).to_have_attribute("aria-label", "插入表情")
    await button.click()
    await expect(widget(visitor).locator('.emoji[data-emoji="👍"]')).to_have_attribute(
        "aria-label", "赞"
    )
    await visitor.screenshot(path=screenshot_path("ui-zh-messages-emoji-widget.jpg"), quality=70)
    await widget(visitor).locator(".scroll").click()
    await bob.locator("#composer .emoji-button").click()
    await expect(bob.locator("#composer .emoji-panel")).to_have_attribute("aria-label", "表情")
    await bob.screenshot(path=screenshot_path("ui-zh-messages-emoji-console.jpg"), quality=70)
    await bob.keyboard.press("Escape")
    conversation = await kefu.kernel.storage.get_conversation("m4", conversation_id)
    left = await english_left(bob, ids=(conversation.visitor_id,))
    assert left == [], f"English left on the console: {left}"
    await bob.locator("#message-list img.image").click()
    await expect(bob.locator(".lightbox-close")).to_have_attribute("aria-label", "关闭")
    await bob.wait_for_function(
        "() => document.querySelector('.lightbox-image').naturalWidth === 240"
    )
    await bob.screenshot(path=screenshot_path("ui-zh-messages-lightbox.jpg"), quality=70)
    await bob.keyboard.press("Escape")
    assert bob.errors.errors == [] and visitor.errors.errors == []
    await asyncio.gather(bob.context.close(), visitor.context.close())


async def test_deleted_while_offline_and_the_inbox_preview(kefu, browser):
    """A widget and a console that were offline when a message was deleted show its tombstone
    after they reconnect, without a reload (the ``resume`` carries the deletion); the inbox's
    preview of a deleted message shows the tombstone, live and after a reconnect."""
    site = await add_site(kefu.kernel, "m6")
    storage = kefu.kernel.storage
    bob, visitor, conversation_id = await chat(kefu, browser, site)
    async with aiohttp.ClientSession(base_url=kefu.base.rstrip("/")) as http:
        ada = bearer(await login(http, "m6", site.admin.email))

        async def delete(conv_id: str, text: str) -> None:
            stored = await storage.list_messages("m6", conv_id, after_seq=0)
            (seq,) = [m.seq for m in stored if m.text == text]
            url = f"/v1/conversations/{conv_id}/messages/{seq}"
            async with http.delete(url, headers=ada) as resp:
                assert resp.status == 200, await resp.text()

        # the widget offline while its message is deleted
        await widget_say(visitor, "my card is 4242 4242")
        await widget_say(visitor, "and my address is 12 Elm St")
        card_seq = await bob.locator("#message-list .msg", has_text="4242").get_attribute(
            "data-seq"
        )
        card = bob.locator(f"#message-list .msg[data-seq='{card_seq}']")
        await expect(bob.locator("#message-list .msg", has_text="Elm St")).to_have_count(1)
        await visitor.context.set_offline(True)
        await expect(widget(visitor).locator(".status")).to_be_visible()  # "Reconnecting…"
        await delete(conversation_id, "my card is 4242 4242")
        await expect(card.locator(".text.tombstone")).to_have_text("Ada deleted this message.")
        frames = Frames(visitor)
        await visitor.context.set_offline(False)
        assert await frames.next("resumed", within_ms=20000) is not None
        await expect(widget(visitor).locator(".msg.mine .text.tombstone")).to_have_text(
            "This message was deleted."
        )
        await expect(widget(visitor).locator(".messages")).not_to_contain_text("4242")

        # the console offline while a message of its open conversation is deleted
        await bob.context.set_offline(True)
        await expect(bob.locator("#conn-state.down")).to_be_visible()
        await delete(conversation_id, "and my address is 12 Elm St")
        await expect(widget(visitor).locator(".text.tombstone")).to_have_count(2)
        await bob.context.set_offline(False)
        await expect(bob.locator("#conn-state.ws")).to_be_visible(timeout=20000)
        await expect(bob.locator("#message-list .text.tombstone")).to_have_count(2)
        await expect(bob.locator("#message-list")).not_to_contain_text("Elm St")

        # a second chat, not on Bob's screen: its preview in the inbox
        other = await visitor_page(browser, f"{kefu.shop_base}shop/{site.site.widget_key}")
        await open_widget(other)
        await widget_say(other, "hi, a second chat")
        await bob.locator('.tabs [data-tab="mine"]').click()
        rows = bob.locator("#conversation-list li[data-id]")
        await expect(rows).to_have_count(2, timeout=15000)
        row = bob.locator(f"#conversation-list li[data-id]:not([data-id='{conversation_id}'])")
        second_id = await row.get_attribute("data-id")
        await expect(
            widget(other).locator(".msg.theirs", has_text="Bob")
        ).not_to_have_count(0)  # fmt: skip
        await widget_say(other, "call me on 555 0101")
        preview = row.locator(".preview")
        await expect(preview).to_have_text("call me on 555 0101")
        # a real message frame to a conversation not on screen: its badge and the page title
        # (every message since Bob last read it: he never opened this one)
        await expect(row.locator(".badge")).to_have_text(re.compile(r"^[1-9]\d*$"))
        await expect(bob).to_have_title(re.compile(r"^\([1-9]\d*\) "))
        await delete(second_id, "call me on 555 0101")  # live: the frame reaches the console
        await expect(preview).to_have_text("This message was deleted.")
        await widget_say(other, "my e-mail is zoe@example.com")
        await expect(preview).to_have_text("my e-mail is zoe@example.com")
        await bob.context.set_offline(True)
        await expect(bob.locator("#conn-state.down")).to_be_visible()
        await delete(second_id, "my e-mail is zoe@example.com")  # while Bob is offline
        await bob.context.set_offline(False)
        await expect(bob.locator("#conn-state.ws")).to_be_visible(timeout=20000)
        await expect(preview).to_have_text("This message was deleted.")
        await expect(bob.locator("#conversation-list")).not_to_contain_text("zoe@")
        await expect(bob.locator("#message-list .text.tombstone")).to_have_count(2)
    for page in (bob, visitor, other):
        assert page.errors.errors == []
    await asyncio.gather(bob.context.close(), visitor.context.close(), other.context.close())


#: The texts of the preview overlay, per language: (card's title, "open in a tab",
#: "download", close button, the note under a cut text).
PREVIEW_TEXTS = {
    "en": ("Preview the file", "Open in a new tab", "Download the file", "Close", "Only the"),
    "zh": ("预览文件", "在新标签页中打开", "下载文件", "关闭", "仅显示文件开头部分"),
}
#: An .html file: uploads are typed by content, so it is stored as text and shown as such.
PAGE_HTML = (
    "<!doctype html><h1>Big offer</h1><script>window.__xss = 1</script>"
    '<img src=x onerror="window.__xss = 1"><iframe src="javascript:window.__xss=1"></iframe>\n'
)


async def pdf_viewer_shown(page, url: str, name: str) -> None:
    """Wait for the browser's PDF viewer in the frame of ``url`` (a child frame of it) to have
    read the document: its title is the file's name, its page selector at page 1."""
    for _ in range(150):
        viewers = [
            child
            for f in page.frames
            if f.url == url
            for child in f.child_frames
            if child.url.startswith("chrome-extension://")
        ]
        for viewer in viewers:
            title = viewer.locator("#title")
            selector = viewer.locator("viewer-page-selector input")
            if (
                await title.count()
                and await title.text_content() == name
                and await selector.count()
                and await selector.input_value() == "1"
            ):
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no PDF viewer with {name} in {[f.url for f in page.frames]}")


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_pdf_and_text_previews_over_the_page(kefu, browser, lang):
    """A PDF opens in the page's overlay in a frame of the download address (the browser's
    viewer), a text file as the text of a <pre> from a 64 KiB range, an uploaded .html as its
    markup; Esc, the close button and a click beside the sheet close it, in the console and
    in the widget, with the page's language."""
    title, open_tab, download, close, cut_note = PREVIEW_TEXTS[lang]
    site = await add_site(kefu.kernel, f"pv-{lang}")
    locale = {"locale": "zh-CN"} if lang == "zh" else {}
    agent = await signed_in_agent(browser, kefu.base, site.site.id, site.agent.email, **locale)
    visitor = await visitor_page(
        browser, f"{kefu.shop_base}shop/{site.site.widget_key}?lang={lang}", **locale
    )
    await open_widget(visitor)
    await widget_say(visitor, "hello" if lang == "en" else "你好")
    await open_conversation(agent)
    ranges = []  # the Range header of every request for a .txt upload, from either page
    for page in (agent, visitor):
        page.on(
            "request",
            lambda r: ranges.append(r.headers.get("range")) if ".txt" in r.url else None,
        )

    # the visitor's PDF: a click on its card in the console opens the overlay with the frame
    visitor_file = widget(visitor).locator("input.file")
    pdf = {"name": "invoice 1182.pdf", "mimeType": "application/pdf", "buffer": document_pdf()}
    await visitor_file.set_input_files(pdf)
    card = agent.locator("#message-list .msg.theirs .file-card")
    await expect(card).to_have_attribute("title", title)
    href = await card.get_attribute("href")
    await card.click()
    box = agent.locator("body > .lightbox.file-preview")
    await expect(box).to_be_visible()
    frame = box.locator("iframe.preview-frame")
    await expect(frame).to_have_attribute("src", href)
    await expect(box.locator(".preview-name")).to_have_text("invoice_1182.pdf")
    await expect(box.locator(".preview-action").first).to_have_text(open_tab)
    await expect(box.locator(".preview-action").last).to_have_text(download)
    await expect(box.locator(".lightbox-close")).to_have_attribute("aria-label", close)
    await expect(box.locator(".lightbox-close")).to_be_focused()
    await pdf_viewer_shown(agent, href, "invoice_1182.pdf")
    await asyncio.sleep(0.3)  # the viewer draws the page
    await agent.screenshot(path=screenshot_path(f"ui-{lang}-messages-preview-pdf.jpg"), quality=70)
    await agent.keyboard.press("Escape")
    await expect(box).to_have_count(0)
    await expect(card).to_be_focused()
    # what makes the frame safe is the file's own response: a sandbox, nosniff, inline
    resp = await agent.request.get(href)
    assert resp.headers["content-type"] == "application/pdf"
    assert "sandbox" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in resp.headers  # the console's own origin may frame it

    # the agent's long text file: the first 64 KiB as text, the note says it is cut
    first = "Order 1182: 2 teapots, 39.00 €\n订单 1182 茶壶两个\n"
    long_text = first + "".join(f"line {n:05d} {'-' * 40}\n" for n in range(1800))
    assert len(long_text.encode()) > 70_000
    await agent.locator("#composer-file").set_input_files(
        {"name": "order.txt", "mimeType": "text/plain", "buffer": long_text.encode()}
    )
    wcard = widget(visitor).locator(".msg.theirs .file-card")
    await expect(wcard.locator(".file-name")).to_have_text("order.txt")
    await wcard.click()
    wbox = widget(visitor).locator(".lightbox.file-preview")
    pre = wbox.locator("pre.preview-text")
    await expect(pre).to_contain_text("订单 1182 茶壶两个")
    shown = await pre.text_content()
    assert shown.startswith(first) and len(shown.encode()) <= 64 * 1024
    assert "line 01799" not in shown
    await expect(wbox.locator(".preview-note")).to_contain_text(cut_note)
    await expect(wbox.locator(".lightbox-close")).to_have_attribute("aria-label", close)
    await visitor.screenshot(
        path=screenshot_path(f"ui-{lang}-messages-preview-text-widget.jpg"), quality=70
    )
    await visitor.keyboard.press("Escape")
    await expect(wbox).to_have_count(0)
    own = agent.locator("#message-list .msg.mine .file-card")
    await own.click()
    await expect(box.locator("pre.preview-text")).to_contain_text("Order 1182")
    await box.locator(".lightbox-close").click()  # the close button
    await expect(box).to_have_count(0)
    assert ranges and set(ranges) == {"bytes=0-65535"}, ranges

    # an uploaded .html page: stored as text, shown as its markup, nothing of it runs
    offer = {"name": "offer.html", "mimeType": "text/html", "buffer": PAGE_HTML.encode()}
    await visitor_file.set_input_files(offer)
    page_card = agent.locator("#message-list .msg.theirs .file-card", has_text="offer")
    await expect(page_card.locator(".file-name")).to_have_text("offer.txt")
    await page_card.click()
    await expect(box.locator("pre.preview-text")).to_have_text(PAGE_HTML)
    assert await box.locator("pre.preview-text *").count() == 0
    assert await box.locator("iframe, h1, script, img").count() == 0
    await agent.screenshot(path=screenshot_path(f"ui-{lang}-messages-preview-html.jpg"), quality=70)
    await box.click(position={"x": 8, "y": 8})  # beside the sheet
    await expect(box).to_have_count(0)
    wpage = widget(visitor).locator(".msg.mine .file-card", has_text="offer")
    await wpage.click()
    await expect(wbox.locator("pre.preview-text")).to_have_text(PAGE_HTML)
    await visitor.keyboard.press("Escape")

    assert await agent.evaluate("window.__xss") is None
    assert await visitor.evaluate("window.__xss") is None
    assert visitor.errors.errors == [] and agent.errors.errors == []
    await asyncio.gather(agent.context.close(), visitor.context.close())
