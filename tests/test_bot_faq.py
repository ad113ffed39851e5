"""FAQ mining: normalisation, the Zipf-sampled CLINC150 recovery figure, trend, the bot's
failure rate and the agents' answer from real storage, and publishing a cluster as a new
intent through the admin API of a running server (a refused publication changes nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
import time
from pathlib import Path

import pytest

from kefu.core.domain import Conversation, Message, Site, Visitor
from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.bot_intents.faq import (
    MiningOptions,
    collect_questions,
    content_words,
    failed,
    mine,
    normalize_question,
    record_turn,
)
from kefu.plugins.bot_intents.faq_publish import add_faq_intent
from kefu.plugins.bot_intents.flow_yaml import load_yaml
from tests.chat_support import add_owner, app_kernel, login, make_kernel
from tests.routing_support import ROUTING, routing_client, site_of, visitor
from tests.test_bot_example import shop_config
from tests.test_bot_flows import Actions

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "flows" / "shop.yaml"
sys.path.insert(0, str(ROOT / "tests" / "bench"))

import bot_faq_bench  # noqa: E402


def test_normalisation_placeholders_and_scripts():
    assert normalize_question("Where is order #12345?!") == "where is order {num}"
    assert normalize_question("ＷＨＥＲＥ  is my order １２３") == "where is my order {num}"  # noqa: RUF001
    assert normalize_question("mail me at a.b@shop.example, thanks") == "mail me at {email} thanks"
    assert normalize_question("see https://x.test/a?b=1 now") == "see {url} now"
    assert normalize_question("我的订单123到哪了？") == "我的订单 {num} 到哪了"  # noqa: RUF001
    assert normalize_question("what's up") == "what's up"


def test_zipf_sampled_clinc150_log_recovers_the_frequent_intents():
    """Issue 6: at least 8 of the 10 most frequent intents among the top 10 clusters."""
    if not bot_faq_bench.DATASET.is_file():
        # The shared datasets live outside the repository (never copied into it); a
        # checkout without them cannot run this one: the bench prints the figure.
        searched = ", ".join(str(d) for d in bot_faq_bench.DATASET_DIRS)
        pytest.skip(f"CLINC150 not found (searched {searched}; set KEFU_DATASETS)")
    by_intent, sha = bot_faq_bench.load_clinc()
    result = asyncio.run(bot_faq_bench.run_one(by_intent, 0, 10000, 1.0))
    print(f"\nCLINC150 sha256 {sha}: Zipf s=1 log of {result['questions']:,} questions "
          f"({result['unique']:,} distinct), seed 0: {result['recovered']}/10 of the top "
          f"intents recovered by the top 10 clusters in {result['seconds']:.1f} s")  # fmt: skip
    for size, label, purity, top in result["rows"]:
        print(f"  {size:>5} {label:<28} {purity:.2f} {'top-10' if top else ''}")
    assert result["questions"] == 10000
    assert result["recovered"] >= 8


def test_chinese_questions_content_words_and_script_decision():
    assert content_words(normalize_question("我的訂單到哪了呢？")) == "订单 到 哪"  # noqa: RUF001
    assert content_words("修改收货地址") == "修改 收货 地址"  # 地 only as a word of its own
    assert content_words("吗") == "吗"  # nothing left: the text itself
    assert content_words("where is my order") == "where is my order"
    report = mine([_q("我的订单到哪了"), _q("订单到哪了"), _q("hello")], MiningOptions(now=1.0))
    assert report["chinese"] is True
    assert mine([_q("where is it"), _q("hello")], MiningOptions(now=1.0))["chinese"] is False


def _q(text):
    from kefu.plugins.bot_intents.faq import Question

    return Question(text, 0.0, "c", 1)


def test_zipf_sampled_chinese_log_recovers_the_frequent_intents():
    """Issue 15 (Chinese FAQ mining): a Zipf log of the Chinese dev set's train + val
    utterances (the data the Chinese path was tuned on), seed 0, as measured (docs/bot.md)."""
    by_intent, _sha = bot_faq_bench.load_clinc(ROOT / "tests" / "data" / "clinc_zh_cs.json",
                                               ("train", "val"))  # fmt: skip
    result = asyncio.run(bot_faq_bench.run_one(by_intent, 0, 10000, 1.0))
    for size, label, purity, top in result["rows"]:
        print(f"  {size:>5} {label:<28} {purity:.2f} {'top-10' if top else ''}")
    assert result["recovered"] >= 7


async def _conversation(storage, site, n, at, turns):
    """A conversation at ``at``: (visitor text, bot outcome or None, agent reply or None)."""
    cid = f"c{n}"
    await storage.upsert_visitor(Visitor(f"v{n}", site))
    conversation = await storage.create_conversation(
        Conversation(cid, site, f"v{n}", state="resolved", created_at=at, updated_at=at)
    )
    k = 0
    for text, outcome, reply in turns:
        k += 1
        stored, _ = await storage.append_message(
            Message(site, cid, f"m{k}", "visitor", f"v{n}", text=text, created_at=at + k)
        )
        if outcome is not None:
            record_turn(conversation, stored.seq, outcome, outcome == "handoff-fallback")
            k += 1
            await storage.append_message(
                Message(site, cid, f"m{k}", "bot", "shop", text="bot says", created_at=at + k)
            )
        if reply is not None:
            k += 1
            await storage.append_message(
                Message(site, cid, f"m{k}", "agent", "a1", text=reply, created_at=at + k)
            )
    await storage.update_conversation(conversation)


async def test_trend_failure_rate_and_agents_answer_from_sqlite(tmp_path):
    kernel = make_kernel(tmp_path, storage="sql")
    storage = kernel.make_storage()
    await storage.open()
    try:
        await storage.create_site(Site("s1", "Shop", "wk-s1"))
        now = time.time()
        day = 86400.0
        n = 0
        # "do you ship to canada": 6 this week, 2 the week before; the bot fell back on 3 of
        # its 4 turns; agents answered 3 times, twice the same (up to case and punctuation)
        ship = [
            ("Do you ship to Canada?", "fallback", "Yes, we ship to Canada in 5 days."),
            ("do you ship to canada", "fallback", "yes we ship to canada in 5 days"),
            ("Do you ship to Canada??", "transition", None),
            ("do you ship to canada!", "handoff-fallback", "We do, shipping takes a week."),
            ("do you ship to canada", None, None),
            ("DO YOU SHIP TO CANADA", None, None),
        ]
        for turn in ship:
            n += 1
            await _conversation(storage, "s1", n, now - 2 * day, [turn])
        for _ in range(2):
            n += 1
            await _conversation(storage, "s1", n, now - 10 * day,
                                [("do you ship to canada?", None, None)])  # fmt: skip
        # another question, asked 3 times, all 20 days ago; a visitor's follow-up before the
        # agent's reply takes the reply, not the first question
        for _ in range(3):
            n += 1
            await _conversation(storage, "s1", n, now - 20 * day, [
                ("how do I reset my password", None, None),
                ("i forgot my password, how do i reset it", None, "Use the reset link."),
            ])  # fmt: skip
        questions, scanned = await collect_questions(storage, "s1")
        assert scanned == n and len(questions) == 6 + 2 + 6
        report = mine(questions, MiningOptions(now=now, window_days=7, min_size=2))
        first = report["clusters"][0]
        assert first["size"] == 8 and first["unique"] == 1  # normalised: one distinct question
        assert (first["recent"], first["previous"], first["trend"]) == (6, 2, 2.0)
        assert (first["bot_turns"], first["bot_failures"], first["failure_rate"]) == (4, 3, 0.75)
        answer = first["agent_answer"]
        assert answer["count"] == 2 and answer["answered"] == 3
        assert normalize_question(answer["text"]) == "yes we ship to canada in {num} days"
        assert first["representatives"][0]["text"].lower().startswith("do you ship to canada")
        assert "canada" in first["suggested_intent"]
        reset = report["clusters"][1]
        assert reset["size"] == 6 and reset["recent"] == 0 and reset["trend"] is None
        assert reset["agent_answer"]["count"] == 3 and reset["failure_rate"] is None
        # --since keeps the recent questions only
        recent, _ = await collect_questions(storage, "s1", since=now - 5 * day)
        assert len(recent) == 6
    finally:
        await storage.close()


def test_add_faq_intent_keeps_comments_and_adds_exactly_the_intent_and_rule():
    text = SHOP.read_text(encoding="utf-8")
    edited = add_faq_intent(text, "shipping_canada", ["do you ship to canada", "送货到加拿大吗"],
                            {"en": "Yes: 5 days.", "zh": "可以, 5 天。"}, "menu", 0.4)  # fmt: skip
    assert edited.startswith(text.splitlines()[0])  # the header comment is still there
    assert edited.count("#") >= text.count("#")
    before, after = load_yaml(text), load_yaml(edited)
    assert after["intents"]["shipping_canada"] == {
        "examples": ["do you ship to canada", "送货到加拿大吗"]
    }
    assert after["global"][-1] == {"intent": "shipping_canada", "min_confidence": 0.4,
                                   "say": {"en": "Yes: 5 days.", "zh": "可以, 5 天。"},
                                   "goto": "menu"}  # fmt: skip
    assert after["global"][:-1] == before["global"] and after["states"] == before["states"]


async def shop_flow_client(aiohttp_client, tmp_path):
    """A running server whose bot serves a copy of the example shop flow, and that file."""
    flow_file = tmp_path / "flows" / "shop.yaml"
    flow_file.parent.mkdir()
    shutil.copy(SHOP, flow_file)
    client = await routing_client(
        aiohttp_client, tmp_path, ROUTING, extra=shop_config(flow_file),
        extra_plugins=(("shop_actions", Actions()),),
    )  # fmt: skip
    return client, flow_file


async def test_publish_a_cluster_as_an_intent_then_the_bot_answers_it(aiohttp_client, tmp_path):
    client, flow_file = await shop_flow_client(aiohttp_client, tmp_path)
    kernel = app_kernel(client.app)
    site = await site_of(client)
    service = bot_of(kernel)
    old_sha = service.registry.for_site(site.site.id).sha256
    question = "is the parrot allowed to sing"

    # visitors ask a question the flow does not know: the bot falls back or hands off
    for i in range(3):
        guest = await visitor(client, site)
        await guest.peer.expect("message", sender={"kind": "bot", "id": "shop"})  # greeting
        await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid=f"q{i}",
                              text=question + "?" * i)  # fmt: skip
        await guest.peer.expect("ack", cid=f"q{i}")
        await guest.peer.expect("message", sender={"kind": "bot", "id": "shop"})
        stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
        (outcome,) = stored.meta["bot_turns"].values()
        assert failed(outcome), outcome
        await guest.peer.ws.close()

    site_admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    # the shop flow serves every site: publishing into it is for owners (issue 13, hole 1)
    owner = await add_owner(kernel, site.site.id)
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, owner.email)}"}
    resp = await client.get("/v1/bot/faq?top=5", headers=site_admin)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    cluster = report["clusters"][0]
    assert cluster["size"] == 3 and cluster["failure_rate"] == 1.0
    assert cluster["representatives"][0]["text"].startswith(question)

    # a clash with an intent of the flow is refused with a clear message; nothing changes
    body = {"intent": "refund", "examples": cluster["examples"], "response": "No."}
    resp = await client.post("/v1/bot/faq/publish", json=body, headers=admin)
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "intent_exists" and "already has an intent 'refund'" in error["message"]
    # a reply whose placeholder no slot fills fails the flow checks (file:line); nothing changes
    body = {"intent": "parrot", "examples": cluster["examples"], "response": "Yes, {planet}!"}
    resp = await client.post("/v1/bot/faq/publish", json=body, headers=admin)
    assert resp.status == 400, await resp.text()
    assert "planet" in (await resp.json())["error"]["message"]
    body = {"intent": "parrot", "examples": cluster["examples"], "response": "x", "goto": "nowhere"}
    resp = await client.post("/v1/bot/faq/publish", json=body, headers=admin)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "unknown_state"
    assert service.registry.for_site(site.site.id).sha256 == old_sha
    assert hashlib.sha256(flow_file.read_bytes()).hexdigest() == old_sha

    body = {
        "intent": "parrot_song",
        "examples": cluster["examples"] + ["may my parrot sing"],
        "response": {"en": "Parrots may sing here."},
        "min_confidence": 0.2,
    }
    refused = await client.post("/v1/bot/faq/publish", json=body, headers=site_admin)
    assert refused.status == 403
    resp = await client.post("/v1/bot/faq/publish", json=body, headers=admin)  # fmt: skip
    assert resp.status == 201, await resp.text()
    published = await resp.json()
    assert published["previous"] == old_sha and published["goto"] == "menu"
    assert published["file"] == str(flow_file.resolve())
    new_sha = published["sha256"]
    assert service.registry.for_site(site.site.id).sha256 == new_sha != old_sha
    assert hashlib.sha256(flow_file.read_bytes()).hexdigest() == new_sha  # survives restarts
    flows = await (await client.get("/v1/bot/flows", headers=admin)).json()
    active = next(v for v in flows["flows"][0]["versions"] if v["active"])
    assert active["sha256"] == new_sha and active["activated_by"] == "faq"

    # the same name again is now a clash
    resp = await client.post("/v1/bot/faq/publish", json=body, headers=admin)
    assert resp.status == 409

    # a new visitor asking it gets the published answer
    guest = await visitor(client, site)
    await guest.peer.expect("message", sender={"kind": "bot", "id": "shop"})
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid="n1",
                          text=question)  # fmt: skip
    reply = await guest.peer.expect("message", within=10, sender={"kind": "bot", "id": "shop"})
    assert reply["text"] == "Parrots may sing here."


def test_cli_mine_faq_json(tmp_path):
    import json
    import subprocess

    config = tmp_path / "kefu.toml"  # SQLite in the data dir
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[storage]\nbackend = "sql"\n',
        encoding="utf-8",
    )

    async def fill() -> None:
        from kefu.core.kernel import load_kernel

        storage = load_kernel(config, environ={}, entry_points=False).make_storage()
        await storage.open()
        await storage.create_site(Site("s1", "Shop", "wk-s1"))
        for n in range(4):
            await _conversation(storage, "s1", n, time.time() - 3600,
                                [("How much is shipping?", None, "Shipping is free.")])  # fmt: skip
        await storage.close()

    asyncio.run(fill())
    done = subprocess.run(
        [sys.executable, "-m", "kefu.core.cli", "bot", "mine-faq", "--config", str(config),
         "--site", "s1", "--since", "1d", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["questions"] == 4 and report["clusters"][0]["size"] == 4
    assert report["clusters"][0]["agent_answer"]["text"] == "Shipping is free."
    table = subprocess.run(
        [sys.executable, "-m", "kefu.core.cli", "bot", "mine-faq", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "How much is shipping?" in table.stdout and "Shipping is free." in table.stdout


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-s", "-q"])


@pytest.mark.timeout(60)
async def test_admin_page_lists_clusters_and_publishes_one_in_a_browser(tmp_path):
    from tests.chat_support import add_site
    from tests.test_bot_clarify import flow_text
    from tests.web_support import chromium, expect, signed_in_agent, start_kefu

    flow_file = tmp_path / "clarify.yaml"
    flow_file.write_text(flow_text(), encoding="utf-8")
    kefu = await start_kefu(tmp_path, f'[bot]\nflows = ["{flow_file}"]\nwatch = false\n')
    try:
        site = await add_site(kefu.kernel)
        storage, sid = kefu.kernel.storage, site.site.id
        turn = ("Can my parrot sing?", "fallback", "Yes, parrots sing.")
        for n in range(3):
            await _conversation(storage, sid, 100 + n, time.time() - 60, [turn])
        async with chromium() as browser:
            owner = await add_owner(kefu.kernel, sid)  # the flow serves every site
            admin = await signed_in_agent(browser, kefu.base, sid, owner.email)
            await admin.goto(f"{kefu.base}admin/faq")
            row = admin.locator("#faq-clusters tbody tr").first
            await expect(row).to_contain_text("Can my parrot sing?")
            await expect(row).to_contain_text("100% of 3")
            await expect(row.locator("textarea")).to_have_value("Yes, parrots sing.")
            result = row.locator(".faq-result")
            await row.locator("input[name=intent]").fill("refund")
            await row.locator("button[type=submit]").click()
            await expect(result).to_contain_text("already has an intent 'refund'")
            await row.locator("input[name=intent]").fill("parrot_song")
            await row.locator("button[type=submit]").click()
            await expect(result).to_contain_text("Published: clarify@")
            assert admin.errors.errors == []
        flow = bot_of(kefu.kernel).registry.for_site(sid)
        assert "parrot_song" in flow.spec.intents
        assert hashlib.sha256(flow_file.read_bytes()).hexdigest() == flow.sha256
    finally:
        await kefu.runner.cleanup()
