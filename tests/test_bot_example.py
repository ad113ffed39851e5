"""The example flow of docs/bot.md (examples/flows/shop.yaml) and its `[bot]` config: the
page's copies are the files, the flow uses every part of the DSL, the server's name checks
pass with the config, and its dynamic greeting follows the campaign calendar, the VIP
segment and the A/B test, in English and Chinese."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from kefu.plugins.bot_intents.classifier import TrainingOptions, train_classifier
from kefu.plugins.bot_intents.engine import CompiledFlow
from kefu.plugins.bot_intents.settings import BotSettings
from kefu.plugins.bot_intents.strategy import Strategy, choose
from kefu.plugins.bot_intents.validate import check_flow

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "flows" / "shop.yaml"
BOT_MD = ROOT / "docs" / "bot.md"
HEADING = "### Example: a bilingual shop flow\n"
CST = timezone(timedelta(hours=8))


def example_section() -> str:
    text = BOT_MD.read_text(encoding="utf-8")
    start = text.index(HEADING)
    return text[start : text.index("\n### ", start + len(HEADING))]


def fenced(kind: str) -> str:
    (block,) = re.findall(rf"^```{kind}\n(.*?)^```$", example_section(), re.S | re.M)
    return block


#: The example's `[bot]` config as docs/bot.md shows it.
SHOP_CONFIG = fenced("toml")


def shop_config(flow: Path = SHOP) -> str:
    """The page's `[bot]` config with ``flow`` as its (absolute) flow file, not watched."""
    flows = 'flows = ["flows/shop.yaml"]'
    assert flows in SHOP_CONFIG
    return SHOP_CONFIG.replace(flows, f'flows = ["{flow}"]\nwatch = false', 1)


def strategy() -> Strategy:
    section = tomllib.loads(SHOP_CONFIG)["bot"]
    return Strategy.from_settings(BotSettings(**section))


def compiled() -> CompiledFlow:
    checked, found = check_flow(SHOP.read_bytes(), known=strategy().names())
    assert found == []
    return CompiledFlow(checked.spec, "0" * 64, checked.patterns, None)


def test_the_page_shows_the_file():
    assert fenced("yaml") == SHOP.read_text(encoding="utf-8")


def test_the_flow_uses_every_part_of_the_dsl():
    spec = compiled().spec
    assert {n for n, i in spec.intents.items() if i.title} == set(spec.intents) - {"oos"}
    assert spec.intents["refund"].title.variants == {"en": ("A refund",), "zh": ("退款",)}
    assert spec.clarify.min_confidence < spec.threshold and spec.clarify.then == "handoff"
    assert spec.clarify.handoff.department == "support"
    assert spec.states["order"].clarify is False
    assert [t.kind for t in spec.global_transitions] == ["keyword", "intent"]
    assert all(t.handoff.department == "support" for t in spec.global_transitions)
    slot = spec.states["order"].slots[0]
    assert slot.regex and slot.retries == 2 and slot.on_fail_handoff.department == "support"
    assert spec.states["order"].action == "order_lookup"
    cases = spec.states["welcome"].say.cases
    assert [c.when.campaigns for c in cases[:2]] == [("double_eleven",), ("black_friday",)]
    assert cases[2].when.segments == ("vip",) and cases[3].experiment == "welcome_offer"
    experiment = spec.experiments["welcome_offer"]
    assert experiment.names == ("control", "coupon") and experiment.convert_on == "track:purchase"
    assert spec.states["hours"].say.cases[0].when.hours
    assert spec.fallback.max_misses == 2 and spec.fallback.handoff.department == "support"
    # every text of the flow is there in English and in Chinese
    replies = [spec.fallback.say, spec.clarify.say, spec.clarify.give_up]
    replies += [t.say for t in spec.global_transitions]
    for state in spec.states.values():
        replies += [state.say, state.then, *(slot.prompt for slot in state.slots)]
        replies += [t.say for t in state.transitions]
    texts = [part for reply in replies if reply is not None for part in parts(reply)]
    assert len(texts) >= 17
    assert all(set(part.variants) == {"en", "zh"} for part in texts)


def parts(response):
    """The response's own texts and those of its cases and experiment arms."""
    if response.variants:
        yield response
    for case in response.cases:
        for part in (case.response, *case.arms.values()):
            if part is not None:
                yield from parts(part)


async def greeting(flow, rules, moment, language="en", visitor="v1", attributes=None):
    rules.clock = lambda: moment
    context = rules.context("shop", visitor, attributes)
    text = "你好" if language == "zh" else ""
    _session, turn = await flow.start("c1", text=text, context=context)
    return turn.texts[0], [(e.id, v) for e, v in turn.exposures]


async def test_the_greeting_follows_campaigns_segment_and_experiment():
    flow, rules = compiled(), strategy()
    eleven = datetime(2026, 11, 11, 9, tzinfo=CST)
    text, shown = await greeting(flow, rules, eleven)
    assert text.startswith("Happy Double 11! Code D11") and shown == []
    assert (await greeting(flow, rules, eleven, "zh"))[0].startswith("双十一快乐")
    friday = datetime(2026, 11, 27, 0, tzinfo=CST)  # the start is inclusive
    assert (await greeting(flow, rules, friday))[0].startswith("Black Friday: code BF20")
    assert (await greeting(flow, rules, friday, "zh"))[0].startswith("黑色星期五")
    ordinary = datetime(2026, 11, 20, 10, tzinfo=CST)
    vip = await greeting(flow, rules, ordinary, attributes={"tier": "gold"})
    assert vip == (vip[0], []) and vip[0].startswith("Welcome back! Your VIP orders")
    # everyone else: the experiment's sticky variant, exposure noted
    experiment = flow.spec.experiments["welcome_offer"]
    seen = set()
    for visitor in ("v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"):
        text, shown = await greeting(flow, rules, ordinary, visitor=visitor)
        variant = experiment.assign(visitor)
        assert shown == [("welcome_offer", variant)]
        assert ("WELCOME10" in text) is (variant == "coupon"), text
        seen.add(variant)
    assert seen == {"control", "coupon"}
    after = datetime(2026, 12, 1, 0, tzinfo=CST)  # the end is exclusive
    assert (await greeting(flow, rules, after, visitor="v1"))[1] == [
        ("welcome_offer", experiment.assign("v1"))
    ]


def test_the_opening_hours_reply_follows_the_local_time():
    flow, rules = compiled(), strategy()
    say = flow.spec.states["hours"].say

    def said(moment: datetime, language: str = "en") -> str:
        rules.clock = lambda: moment
        picked = choose(say, rules.context("shop", "v1"), {}, [], language)
        return picked.pick(language, "salt", {})

    assert said(datetime(2026, 11, 20, 9, tzinfo=CST)).startswith("We are open now")
    assert said(datetime(2026, 11, 20, 13, tzinfo=UTC)).startswith("We are closed")
    assert said(datetime(2026, 11, 20, 20, 59, tzinfo=CST), "zh").startswith("我们正在营业")
    assert said(datetime(2026, 11, 20, 21, 0, tzinfo=CST), "zh").startswith("现在已经打烊")


def test_cli_validate_checks_when_names_against_a_config(tmp_path):
    """``kefu bot validate --config``: the page's config names every campaign and segment
    the example uses; a config without them is refused with the names and lines."""
    run = [sys.executable, "-m", "kefu.core.cli", "bot", "validate", str(SHOP)]
    good = tmp_path / "kefu.toml"
    good.write_text(shop_config(), encoding="utf-8")
    ok = subprocess.run([*run, "--config", str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text("[bot]\n", encoding="utf-8")
    refused = subprocess.run(
        [*run, "--config", str(bare)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert re.search(rf"{re.escape(str(SHOP))}:\d+: .*double_eleven", refused.stderr)
    assert "vip" in refused.stderr


async def test_hello_in_either_language_gets_the_menu_not_the_fallback():
    """Issue 14: "hello" / "你好" once got "did not understand"; the greeting intent answers
    with the menu in the visitor's language."""
    plain, rules = compiled(), strategy()
    spec = plain.spec  # trained as the server trains it (versions.py), default settings
    texts = [e for intent in spec.intents.values() for e in intent.examples]
    labels = [intent.name for intent in spec.intents.values() for _ in intent.examples]
    classifier = train_classifier(texts, labels, TrainingOptions(threshold=0.0))
    flow = CompiledFlow(spec, plain.sha256, plain.patterns, classifier)
    rules.clock = lambda: datetime(2026, 11, 20, 10, tzinfo=CST)
    fallback = {
        text for part in parts(spec.fallback.say) for v in part.variants.values() for text in v
    }
    assert "Sorry, I did not understand." in fallback
    for text, start in (
        ("hello", "Hello! I can track an order"),
        ("你好", "我可以帮您查订单"),
    ):
        session, _ = await flow.start("c1", context=rules.context("shop", "v1"))
        turn = await flow.step(session, text, context=rules.context("shop", "v1"))
        assert turn.texts and start in turn.texts[0], (text, turn.texts)
        assert not set(turn.texts) & fallback
