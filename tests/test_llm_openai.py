"""Generative answers (``kefu.plugins.llm_openai``) against a stand-in server.

No OpenAI-compatible model server exists on this machine: :mod:`tests.llm_standin` is a
mock that speaks the same HTTP API (Bearer key, ``POST /v1/chat/completions``, SSE
chunks, ``usage``, ``[DONE]``, error bodies) with scripted answers. A real server running
kefu, the example shop flow and the knowledge base answers a visitor over a real
WebSocket: the answer with its citation, streamed as ``bot_draft`` frames before the
stored message; a refusal or an uncited answer hands over; a timeout, an error, a busy
provider or a spent budget leave the best passage as it is; the sender is never held up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import orjson
import pytest

from kefu.core.domain import QUEUED
from kefu.core.kernel import reload_config
from kefu.core.types import KnowledgeAnswer
from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.llm_openai import LlmSettings, provider_of
from kefu.plugins.llm_openai.prompt import REFUSAL, judge, may_be_refusal, messages
from tests.chat_support import app_kernel, login, make_kernel
from tests.llm_standin import KEY, StandIn
from tests.routing_support import ROUTING, routing_client, site_of, visitor
from tests.test_bot_example import shop_config
from tests.test_bot_faq import SHOP
from tests.test_bot_flows import Actions

BOT = {"kind": "bot", "id": "shop"}
METRICS_MD = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
QUESTION = "can parrots sing in the shop before noon"
ARTICLES = {
    "pets": ("Pets in the shop", "## Parrots\nParrots may sing in the shop, quietly, before "
             "noon. After noon they rest.\n\n## Dogs\nDogs on a lead are welcome."),
    "wrapping": ("Gift wrapping", "We wrap gifts for free at the till; ribbons cost extra."),
}  # fmt: skip


@pytest.fixture
async def standin():
    server = await StandIn().start()
    yield server
    await server.stop()


def llm_toml(url: str, **settings) -> str:
    values = {"base_url": url, "api_key": KEY, "model": "standin-1", "timeout_s": 5.0,
              "max_tokens": 200, **settings}  # fmt: skip
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    return '\n[plugins]\nenable = ["kefu.plugins.llm_openai"]\n[llm_openai]\n' + "\n".join(lines)


async def shop_with_llm(aiohttp_client, tmp_path, url: str, **settings):
    """A running server: the shop flow, two help articles, the provider pointed at ``url``."""
    flow = tmp_path / "flows" / "shop.yaml"
    flow.parent.mkdir()
    flow.write_bytes(SHOP.read_bytes())
    client = await routing_client(
        aiohttp_client, tmp_path, ROUTING, extra=shop_config(flow) + llm_toml(url, **settings),
        extra_plugins=(("shop_actions", Actions()),),
    )  # fmt: skip
    site = await site_of(client)
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    for article_id, (title, body) in ARTICLES.items():
        resp = await client.put(f"/v1/kb/articles/{article_id}", headers=admin,
                                json={"title": title, "body": body, "lang": "en"})  # fmt: skip
        assert resp.status == 200, await resp.text()
    return client, site


async def ask(client, site, text: str = QUESTION, cid: str = "q1"):
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender=BOT)  # greeting
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=cid, text=text)
    ack = await guest.peer.expect("ack", cid=cid)
    return guest, ack


def frames_until_message(frames: list[dict], cid: str) -> tuple[list[dict], dict]:
    drafts = [f for f in frames if f.get("op") == "bot_draft" and f["cid"] == cid]
    stored = next(f for f in frames if f.get("op") == "message" and f["cid"] == cid)
    return drafts, stored


async def collect(peer, cid: str, within: float = 10.0) -> list[dict]:
    """Every frame up to and including the stored message ``cid``, in arrival order (later
    frames stay buffered for ``peer.expect``)."""

    def stored_at() -> int | None:
        return next((i for i, f in enumerate(frames)
                     if f.get("op") == "message" and f.get("cid") == cid), None)  # fmt: skip

    frames, peer.frames = list(peer.frames), []
    async with asyncio.timeout(within):
        while stored_at() is None:
            msg = await peer.ws.receive()
            assert msg.type.name == "TEXT", msg
            frames.append(orjson.loads(msg.data))
    end = stored_at() + 1
    peer.frames = frames[end:]
    return frames[:end]


# -- the prompt and the judge -----------------------------------------------------------


def test_the_prompt_confines_the_model_to_numbered_passages():
    passages = [KnowledgeAnswer("Parrots sing before noon.", "pets", "Pets", 9.0),
                KnowledgeAnswer("x" * 5000, "long", "Long", 7.0)]  # fmt: skip
    system, user = messages("can parrots sing?", passages, "zh", 100)
    assert user == {"role": "user", "content": "can parrots sing?"}
    text = system["content"]
    assert "ONLY the numbered" in text and REFUSAL in text and "[1]" in text
    assert "[1] Pets\nParrots sing before noon." in text and "[2] Long\n" + "x" * 100 in text
    assert "x" * 101 not in text and "Chinese" in text


def test_judge_citations_refusals():
    assert judge("Yes, before noon [1].", 2, 10).cited == (0,)
    assert judge("Yes [1][2], and [3] is no passage.", 2, 10).cited == (0, 1)
    assert judge("可以，中午前【2】。", 2, 10).cited == (1,)  # noqa: RUF001
    assert judge("Yes [1, 2]", 2, 10).cited == (0, 1)
    for text, reason in [
        ("NO_ANSWER", "no_answer"),
        ("Sorry. NO_ANSWER", "no_answer"),
        ("Yes, you can.", "uncited"),
        ("  ", "empty"),
        ("See [7]", "uncited"),
    ]:
        answer = judge(text, 2, 10)
        assert answer.refused and answer.reason == reason and answer.text == "", text
    assert may_be_refusal("NO_") and may_be_refusal(" NO_ANSWER") and not may_be_refusal("No,")


def test_disabled_by_default_enabled_from_the_config_key_from_the_environment(tmp_path):
    kernel = make_kernel(tmp_path)
    assert not kernel.hooks.bot_generates()
    assert kernel.plugins.record("kefu.plugins.llm_openai") is None
    (tmp_path / "b").mkdir()
    kernel = make_kernel(tmp_path / "b", llm_toml("http://127.0.0.1:9/v1").replace(
        f'api_key = "{KEY}"\n', ""))  # fmt: skip
    assert kernel.hooks.bot_generates()
    assert kernel.config.section("llm_openai").api_key == ""
    from kefu.core.kernel import load_kernel

    env = {"KEFU_LLM_OPENAI__API_KEY": "sk-from-env", "KEFU_LLM_OPENAI__TIMEOUT_S": "2.5"}
    kernel = load_kernel(tmp_path / "b" / "kefu.toml", environ=env, entry_points=False)
    settings = kernel.config.section("llm_openai")
    assert settings.api_key == "sk-from-env" and settings.timeout_s == 2.5
    assert "sk-from-env" not in repr(settings)
    with pytest.raises(ValueError):
        LlmSettings(timeout_s=60)  # past the bot's turn lease


# -- a running server -------------------------------------------------------------------


async def test_answer_with_citation_streams_drafts_before_the_stored_message(
    aiohttp_client, tmp_path, standin
):
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url)
    started = time.perf_counter()
    guest, ack = await ask(client, site)
    cid = f"bot-{ack['seq']}-0"
    frames = await collect(guest.peer, cid)
    drafts, stored = frames_until_message(frames, cid)
    assert len(drafts) >= 2, drafts  # the answer grew in several frames
    assert all(d["state"] == "streaming" and d["sender"] == BOT for d in drafts)
    texts = [d["text"] for d in drafts]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))
    assert frames.index(drafts[-1]) < frames.index(stored)  # drafts first, then the message
    assert stored["text"].startswith("According to our help pages: Parrots may sing in the shop")
    assert stored["text"].endswith('Sources: [1] "Pets in the shop"'), stored["text"]
    assert texts[-1] in stored["text"]
    helped = await guest.peer.expect("message", sender=BOT, within=5)
    assert helped["text"] == "Did this help?"
    assert time.perf_counter() - started < 10

    (request,) = standin.requests
    assert request["model"] == "standin-1" and request["stream"] is True
    assert request["max_tokens"] == 200 and request["stream_options"] == {"include_usage": True}
    system = request["messages"][0]["content"]
    assert "[1] Pets in the shop\nParrots may sing" in system and REFUSAL in system
    assert request["messages"][1] == {"role": "user", "content": QUESTION}
    assert standin.headers[0]["Authorization"] == f"Bearer {KEY}"

    kernel = app_kernel(client.app)
    provider = provider_of(kernel)
    assert provider.counts["answers"] == 1 and provider.counts["tokens"] > 0
    assert bot_of(kernel).counts["generated_answers"] == 1
    spent = await provider.budget.spent(site.site.id, "day")
    assert spent == provider.counts["tokens"]  # the reservation settled to the usage
    assert 0 < provider.first_text_s[0] < 2.0
    conversation = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert conversation.state == "bot"  # answered: nobody handed over


@pytest.mark.parametrize("mode", ["refuse", "uncited"])
async def test_a_refusal_hands_over(aiohttp_client, tmp_path, standin, mode):
    standin.mode = mode
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url)
    guest, ack = await ask(client, site)
    cid = f"bot-{ack['seq']}-0"
    frames = await collect(guest.peer, cid)
    drafts, stored = frames_until_message(frames, cid)
    assert "passing you to a colleague" in stored["text"]
    assert not any(REFUSAL[:3] in d["text"] for d in drafts)  # the marker is never shown
    if mode == "uncited":  # shown while it streamed, then withdrawn
        assert drafts and drafts[-1]["state"] == "dropped"
    else:
        assert drafts == []
    kernel = app_kernel(client.app)
    for _ in range(50):
        conversation = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
        if conversation.state == QUEUED:
            break
        await asyncio.sleep(0.05)
    assert conversation.state == QUEUED
    reason = {"refuse": "knowledge_no_answer", "uncited": "knowledge_uncited"}[mode]
    assert conversation.meta["bot_handoff"]["reason"] == reason
    assert provider_of(kernel).counts["refusals"] == 1


@pytest.mark.parametrize(
    ("mode", "settings"),
    [("hang", {"timeout_s": 1.0}),  # the whole answer's bound
     ("hang", {"timeout_s": 10.0, "idle_timeout_s": 1.0}),  # no byte for a second
     ("error", {}), ("stream_error", {})],
)  # fmt: skip
async def test_timeout_or_error_falls_back_to_the_passage(aiohttp_client, tmp_path, standin,
                                                          mode, settings):  # fmt: skip
    standin.mode = mode
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url, **settings)
    started = time.perf_counter()
    guest, ack = await ask(client, site)
    cid = f"bot-{ack['seq']}-0"
    frames = await collect(guest.peer, cid)
    drafts, stored = frames_until_message(frames, cid)
    assert stored["text"].startswith("Parrots may sing in the shop")
    assert stored["text"].endswith('(From the article: "Pets in the shop")')
    if mode == "hang":
        assert 1.0 <= time.perf_counter() - started < 5.0
        assert drafts[0]["state"] == "streaming" and drafts[-1]["state"] == "dropped"
    counts = provider_of(app_kernel(client.app)).counts
    assert counts["timeouts" if mode == "hang" else "failures"] == 1
    assert counts["answers"] == counts["refusals"] == 0


async def test_budget_spent_leaves_the_passage(aiohttp_client, tmp_path, standin):
    standin.usage = 4_900  # what the server says the first answer cost
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url,
                                       budget_tokens=5_000, budget_window="hour")  # fmt: skip
    guest, ack = await ask(client, site)
    cid = f"bot-{ack['seq']}-0"
    _, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert stored["text"].startswith("According to our help pages")
    provider = provider_of(app_kernel(client.app))
    assert await provider.budget.spent(site.site.id, "hour") == 4_900

    guest, ack = await ask(client, site, cid="q2")
    cid = f"bot-{ack['seq']}-0"
    drafts, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert drafts == [] and stored["text"].startswith("Parrots may sing")  # no model call
    assert len(standin.requests) == 1 and provider.counts["over_budget"] == 1
    assert await provider.budget.spent(site.site.id, "hour") == 4_900  # reservation returned


async def test_the_sender_is_never_held_up_and_busy_means_the_passage(
    aiohttp_client, tmp_path, standin
):
    standin.delay = 0.2  # about 2.6 s for the whole answer
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url, max_concurrent=1)
    slow, ack = await ask(client, site)
    await slow.peer.expect("bot_draft", within=5)  # the model is answering now
    # the same visitor writes again meanwhile: acknowledged at once
    sent = time.perf_counter()
    await slow.peer.send(op="send", conversation_id=slow.conversation_id, cid="more",
                         text="hello?")  # fmt: skip
    await slow.peer.expect("ack", cid="more")
    assert time.perf_counter() - sent < 0.5
    # another visitor while the one slot is taken: the passage at once, no queueing
    other, ack2 = await ask(client, site, cid="q2")
    cid = f"bot-{ack2['seq']}-0"
    waited = time.perf_counter()
    drafts, stored = frames_until_message(await collect(other.peer, cid), cid)
    assert drafts == [] and stored["text"].startswith("Parrots may sing")
    assert time.perf_counter() - waited < 1.5
    assert provider_of(app_kernel(client.app)).counts["busy"] == 1
    cid = f"bot-{ack['seq']}-0"
    _, stored = frames_until_message(await collect(slow.peer, cid), cid)
    assert stored["text"].startswith("According to our help pages")


async def test_a_server_that_does_not_stream_and_a_wrong_key(aiohttp_client, tmp_path, standin):
    standin.streams = False
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url)
    guest, ack = await ask(client, site)
    cid = f"bot-{ack['seq']}-0"
    drafts, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert drafts == [] and stored["text"].endswith('Sources: [1] "Pets in the shop"')

    kernel = app_kernel(client.app)  # a live change of the key: the next answer uses it
    path = tmp_path / "kefu.toml"
    path.write_text(path.read_text().replace(KEY, "sk-wrong"))
    assert "llm_openai" in reload_config(kernel, environ={})
    guest, ack = await ask(client, site, cid="q2")
    cid = f"bot-{ack['seq']}-0"
    _, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert stored["text"].startswith("Parrots may sing")  # HTTP 401: the passage
    assert standin.headers[-1]["Authorization"] == "Bearer sk-wrong"
    assert provider_of(kernel).counts["failures"] == 1


async def test_a_chinese_visitor_is_answered_in_chinese_and_other_sites_get_the_passage(
    aiohttp_client, tmp_path, standin
):
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url)
    kernel = app_kernel(client.app)
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    text = "## 鹦鹉\n鹦鹉可以在店里唱歌，中午前请小声。下午它们休息。"  # noqa: RUF001
    body = {"title": "宠物须知", "lang": "zh", "body": text}
    resp = await client.put("/v1/kb/articles/pets-zh", json=body, headers=admin)
    assert resp.status == 200, await resp.text()
    guest, ack = await ask(client, site, text="鹦鹉在店里唱歌行吗")
    cid = f"bot-{ack['seq']}-0"
    drafts, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert drafts and stored["text"].startswith("根据帮助文章：鹦鹉可以在店里唱歌"), stored["text"]  # noqa: RUF001
    assert stored["text"].endswith("来源：[1]《宠物须知》"), stored["text"]  # noqa: RUF001
    assert "answer in Chinese" in standin.requests[-1]["messages"][0]["content"]
    helped = await guest.peer.expect("message", sender=BOT, within=5)
    assert helped["text"] == "这个回答有帮助吗？"  # noqa: RUF001
    # every series the provider reports is documented
    metrics = METRICS_MD.read_text(encoding="utf-8")
    for name in provider_of(kernel).stats():
        assert f"| `kefu_{name}` |" in metrics, name

    path = tmp_path / "kefu.toml"  # the provider only for another site now
    path.write_text(path.read_text().replace("[llm_openai]\n", '[llm_openai]\nsites = ["x"]\n'))
    assert "llm_openai" in reload_config(kernel, environ={})
    guest, ack = await ask(client, site, cid="q2")
    cid = f"bot-{ack['seq']}-0"
    drafts, stored = frames_until_message(await collect(guest.peer, cid), cid)
    assert drafts == [] and stored["text"].startswith("Parrots may sing")
    assert len(standin.requests) == 1


async def test_site_settings_rest_key_write_only_null_resets_and_off_means_the_passage(
    aiohttp_client, tmp_path, standin
):
    """/v1/llm/settings (Admin > Generative answers): admins only; a bad value is refused;
    the key is never in an answer; ``enabled: false`` makes the bot answer with the passage;
    ``null`` goes back to the install's value."""
    client, site = await shop_with_llm(aiohttp_client, tmp_path, standin.url)
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    agent = {"Authorization": f"Bearer {await login(client, site.site.id, site.agent.email)}"}
    assert (await client.get("/v1/llm/settings", headers=agent)).status == 403
    assert (
        await client.patch("/v1/llm/settings", json={"model": "x"}, headers=agent)
    ).status == 403
    shown = await (await client.get("/v1/llm/settings", headers=admin)).json()
    assert shown["model"] == "standin-1" and shown["enabled"] is True
    assert shown["api_key_set"] is True and shown["api_key_from"] == "config"
    assert shown["overridden"] == [] and shown["bounds"]["max_concurrent"] == 4
    assert KEY not in json.dumps(shown)
    for bad in ({"base_url": "ftp://x"}, {"max_tokens": 5}, {"budget_window": "week"},
                {"sites": ["x"]}, {"temperature": 3}):  # fmt: skip
        resp = await client.patch("/v1/llm/settings", json=bad, headers=admin)
        assert resp.status in (400, 422), (bad, resp.status)

    resp = await client.patch("/v1/llm/settings", headers=admin,
                              json={"enabled": False, "api_key": "sk-other"})  # fmt: skip
    changed = await resp.json()
    assert changed["enabled"] is False and changed["api_key_from"] == "site"
    assert "sk-other" not in await resp.text() and changed["overridden"] == ["api_key", "enabled"]
    guest, _ack = await ask(client, site)
    answer = await guest.peer.expect("message", sender=BOT, within=10)
    assert answer["text"].startswith("Parrots may sing") and standin.requests == []

    reset = {"enabled": None, "api_key": None, "model": "standin-9"}
    resp = await client.patch("/v1/llm/settings", headers=admin, json=reset)
    back = await resp.json()
    assert back["enabled"] is True and back["api_key_from"] == "config"
    assert back["model"] == "standin-9" and back["overridden"] == ["model"]
    record = await app_kernel(client.app).storage.get_record(site.site.id, "llm.settings",
                                                             "provider")  # fmt: skip
    assert record.data == {"model": "standin-9"}
