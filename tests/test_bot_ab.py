"""Dynamic replies and A/B tests of the bot: conditions over campaigns, segments and the
clock; sticky assignment; the statistics of a report (checked against published values and
scipy); and a visitor over a real WebSocket who sees a variant, converts with `track`, and
shows up in the REST and CLI reports."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from scipy.stats import binomtest, chi2

from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.bot_intents.engine import CompiledFlow
from kefu.plugins.bot_intents.experiments import (
    Experiment,
    build_report,
    chi2_sf,
    newcombe,
    srm_check,
    thompson_draw,
    wilson,
)
from kefu.plugins.bot_intents.settings import BotSettings
from kefu.plugins.bot_intents.strategy import Strategy
from kefu.plugins.bot_intents.validate import check_flow
from tests.chat_support import app_kernel, login
from tests.routing_support import ROUTING, Events, console, routing_client, site_of, visitor

CST = timezone(timedelta(hours=8))

# -- assignment ----------------------------------------------------------------------------


def test_assignment_is_deterministic_and_sticky():
    exp = Experiment("welcome_offer", (("control", 1.0), ("coupon", 1.0)), "track:purchase")
    same = Experiment("welcome_offer", (("control", 1.0), ("coupon", 1.0)), "track:purchase")
    other = Experiment("closing", (("control", 1.0), ("coupon", 1.0)), "track:purchase")
    ids = [f"visitor-{i}" for i in range(2000)]
    first = [exp.assign(v) for v in ids]
    assert first == [exp.assign(v) for v in ids] == [same.assign(v) for v in ids]
    assert set(first) == {"control", "coupon"}
    # another experiment id hashes independently: about half the visitors switch arm
    switched = sum(a != b for a, b in zip(first, (other.assign(v) for v in ids), strict=True))
    assert 800 < switched < 1200


@pytest.mark.parametrize("weights", [(50, 50), (50, 30, 20), (90, 10), (1, 1, 1, 1)])
def test_hundred_thousand_visitors_split_within_one_percent_of_the_weights(weights):
    names = [f"v{i}" for i in range(len(weights))]
    exp = Experiment("split", tuple(zip(names, map(float, weights), strict=True)), "track:x")
    rng = random.Random(6)
    counts = dict.fromkeys(names, 0)
    for _ in range(100_000):
        counts[exp.assign(f"{rng.getrandbits(64):016x}")] += 1
    total_w = sum(weights)
    for name, weight in zip(names, weights, strict=True):
        assert abs(counts[name] / 100_000 - weight / total_w) < 0.01, counts
    assert not srm_check(counts, exp.weights())["flagged"]  # a fair split passes


# -- statistics ----------------------------------------------------------------------------


def test_wilson_interval_matches_published_and_scipy_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table II (Wilson score, 95%)
    published = {(0, 10): (0.0, 0.2775), (5, 10): (0.2366, 0.7634), (81, 263): (0.2553, 0.3662),
                 (15, 148): (0.0624, 0.1605), (1, 29): (0.0061, 0.1718)}  # fmt: skip
    for (x, n), (lo, hi) in published.items():
        got = wilson(x, n)
        assert got == pytest.approx((lo, hi), abs=5e-5), (x, n, got)
    for x, n in [(0, 1), (1, 1), (3, 7), (50, 100), (999, 1000), (12, 5000), (2500, 5000)]:
        ci = binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson(x, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson(0, 0) == (0.0, 1.0)


def test_newcombe_difference_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10 (hybrid score)
    assert newcombe(56, 70, 48, 80) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-5)
    assert newcombe(9, 10, 3, 10) == pytest.approx((0.6, 0.1705, 0.8090), abs=5e-5)
    assert newcombe(6, 7, 2, 7) == pytest.approx((4 / 7, 0.0582, 0.8062), abs=5e-5)
    assert newcombe(5, 56, 0, 29) == pytest.approx((5 / 56, -0.0381, 0.1926), abs=5e-5)


def test_chi_square_tail_and_the_sample_ratio_check():
    for stat, df in [(0.5, 1), (3.841, 1), (10.83, 1), (16.0, 1), (20.0, 3), (100.0, 2), (7, 9)]:
        assert chi2_sf(stat, df) == pytest.approx(chi2.sf(stat, df), rel=1e-9, abs=1e-300)
    fair = srm_check({"a": 5010, "b": 4990}, {"a": 1, "b": 1})
    assert not fair["flagged"] and fair["p_value"] > 0.8
    skewed = srm_check({"a": 5200, "b": 4800}, {"a": 1, "b": 1})  # chi2 = 16, p = 6.3e-5
    assert skewed["chi2"] == pytest.approx(16.0) and skewed["flagged"]
    assert skewed["p_value"] == pytest.approx(chi2.sf(16.0, 1))
    three = srm_check({"a": 5000, "b": 3000, "c": 2000}, {"a": 50, "b": 30, "c": 20})
    assert three["chi2"] == pytest.approx(0.0) and not three["flagged"]
    assert srm_check({"a": 5000, "b": 2600, "c": 2400}, {"a": 5, "b": 3, "c": 2})["flagged"]


def test_report_rows_rates_intervals_and_difference_with_the_control():
    weights = {"control": 1.0, "coupon": 1.0}
    records = [
        {"variant": v, "exposed_at": i, "converted_at": i + 1 if conv else None,
         "weights": weights, "allocation": "hash", "convert_on": "track:purchase"}
        for i, (v, conv) in enumerate(
            [("control", k < 48) for k in range(80)] + [("coupon", k < 56) for k in range(70)]
        )
    ]  # fmt: skip
    report = build_report("welcome_offer", records)
    control, coupon = report["variants"]
    assert control["name"] == "control" and control["control"]
    assert (control["exposures"], control["conversions"]) == (80, 48)
    assert control["rate_ci95"] == pytest.approx(list(wilson(48, 80)))
    assert coupon["diff_vs_control"] == pytest.approx(0.2)
    assert coupon["diff_ci95"] == pytest.approx([0.0524, 0.3339], abs=5e-5)
    assert report["exposures"] == 150 and report["conversions"] == 104
    assert report["srm"]["applicable"] and not report["srm"]["flagged"]
    assert not report["weights_changed"]


def test_thompson_sampling_prefers_the_arm_that_converts_more():
    rng = random.Random(3)
    tallies = {"a": (1000, 50), "b": (1000, 120)}
    wins = sum(thompson_draw(["a", "b"], tallies, rng) == "b" for _ in range(2000))
    assert wins > 1950
    even = sum(thompson_draw(["a", "b"], {}, rng) == "b" for _ in range(2000))
    assert 850 < even < 1150  # no data: both posteriors are uniform


# -- the DSL and its checks ----------------------------------------------------------------

FLOW = """\
dsl: 1
id: promo
experiments:
  welcome_offer:
    variants: {control: 1, coupon: 1}
    convert_on: {track: purchase}
  closing:
    variants: {plain: 1, warm: 1}
    convert_on: {resolved_without_handoff: true}
start: welcome
states:
  welcome:
    say:
      - when: {campaign: black_friday}
        text: {en: "Black Friday: BF20 takes 20% off today.", zh: "黑五: 输入 BF20 立减 20%"}
      - when: {segment: vip, hours: "09:00-18:00", weekdays: mon-fri}
        text: "Welcome back! Your VIP line is open."
      - experiment: welcome_offer
        variants:
          control: "Hello! How can I help?"
          coupon: "Hello! WELCOME10 takes 10% off your first order."
    then:
      - experiment: closing
        variants:
          plain: "Type your question."
          warm: "Take your time, I am here."
    next: menu
  menu:
    on:
      - keyword: [human]
        handoff: {reason: asked}
"""

CONFIG = """\
[bot]
flows = ["{flow}"]
watch = false
timezone = "Asia/Shanghai"
track_per_minute = 5
[bot.segments]
vip = {{tier = ["gold", "platinum"]}}
[[bot.campaigns]]
name = "black_friday"
start = 2026-11-27T00:00:00+08:00
end = 2026-12-01T00:00:00+08:00
"""


def problems(text: str, known: dict | None = None) -> list[str]:
    checked, found = check_flow(text, known=known)
    assert checked is None
    return [f"{p.line}: {p.message}" for p in found]


def test_conditions_are_checked_with_their_lines():
    assert check_flow(FLOW, known={"campaign": {"black_friday"}, "segment": {"vip"}})[1] == []
    found = problems(FLOW.replace("{segment: vip,", "{segmnet: vip,"))
    assert found == ["16: state 'welcome'.say[1].when: unknown condition 'segmnet' (expected "
                     "campaign, segment, attribute, hours, weekdays, language)"]  # fmt: skip
    found = problems(FLOW.replace('"09:00-18:00"', '"09:00-25:00"'))
    assert found == ["16: state 'welcome'.say[1].hours: '09:00-25:00' is not a time of day "
                     "(00:00..24:00)"]  # fmt: skip
    assert "is an empty range" in problems(FLOW.replace('"09:00-18:00"', '"9:00-09:00"'))[0]
    assert "not mon..sun" in problems(FLOW.replace("mon-fri", "monday-fri"))[0]
    assert problems(FLOW.replace("{campaign: black_friday}", "{attribute: {orders: '>=x'}}")) == [
        "14: state 'welcome'.say[0].attribute 'orders': '>=x' compares with a non-number"
    ]
    # names: the server checks them against [bot] campaigns and segments
    assert problems(FLOW, known={"campaign": {"cyber_monday"}, "segment": {"vip"}}) == [
        "14: when: unknown campaign 'black_friday' (cyber_monday)"
    ]
    assert problems(FLOW, known={"campaign": {"black_friday"}, "segment": set()}) == [
        "16: when: unknown segment 'vip' (none in [bot] segments)"
    ]


def test_experiment_references_are_checked():
    found = problems(FLOW.replace("- experiment: welcome_offer", "- experiment: welcome"))
    assert found == ["18: unknown experiment 'welcome' (experiments: closing, welcome_offer)"]
    found = problems(FLOW.replace('coupon: "Hello!', 'cupon: "Hello!'))
    assert found == ["18: experiment 'welcome_offer': the reply's variants ['control', 'cupon'] "
                     "must be its variants ['control', 'coupon']"]  # fmt: skip
    found = problems(FLOW.replace("{track: purchase}", "{state: paid}"))
    assert found == ["4: experiment 'welcome_offer': convert_on: no state 'paid'"]
    assert (
        "the weight must be a positive number"
        in problems(FLOW.replace("coupon: 1}", "coupon: 0}"))[0]
    )
    assert "unknown kind 'click'" in problems(FLOW.replace("{track: purchase}", "{click: x}"))[0]
    # a default text beside an experiment without when: could never be said
    found = problems(FLOW.replace("    next: menu", '      - text: "hi"\n    next: menu'))
    assert found == ["23: state 'welcome'.then: an experiment without when: leaves no room "
                     "for a default"]  # fmt: skip


def test_config_campaigns_and_segments_are_checked():
    with pytest.raises(ValueError, match="end must be after start"):
        BotSettings(campaigns=[{"name": "x", "start": "2026-02-01T00:00:00Z",
                                "end": "2026-01-01T00:00:00Z"}])  # fmt: skip
    with pytest.raises(ValueError, match="an offset"):
        BotSettings(campaigns=[{"name": "x", "start": "2026-01-01T00:00:00",
                                "end": "2026-02-01T00:00:00"}])  # fmt: skip
    with pytest.raises(ValueError, match="unique"):
        window = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
        BotSettings(campaigns=[{"name": "x", **window}, {"name": "x", **window}])
    with pytest.raises(ValueError, match="no segment 'vip'"):
        window = {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}
        BotSettings(campaigns=[{"name": "x", "segments": ["vip"], **window}])
    with pytest.raises(ValueError, match="compares with a non-number"):
        BotSettings(segments={"big": {"orders": ">=many"}})
    local = BotSettings(campaigns=[{"name": "x", "start": "2026-01-01T00:00:00",
                                    "end": "2026-02-01T00:00:00", "timezone": "Asia/Shanghai"}])  # fmt: skip  # noqa: E501
    assert Strategy.from_settings(local).campaigns[0].start == datetime(
        2025, 12, 31, 16, tzinfo=UTC
    )


async def test_coupon_variant_is_said_only_within_the_campaign_window():
    checked, found = check_flow(FLOW)
    assert found == []
    flow = CompiledFlow(checked.spec, "0" * 64, checked.patterns, None)
    settings = BotSettings(
        timezone="Asia/Shanghai",
        segments={"vip": {"tier": ["gold", "platinum"]}},
        campaigns=[{"name": "black_friday", "start": datetime(2026, 11, 27, tzinfo=CST),
                    "end": datetime(2026, 12, 1, tzinfo=CST)}],
    )  # fmt: skip
    strategy = Strategy.from_settings(settings)

    async def greeting(moment: datetime, attributes: dict | None = None) -> str:
        strategy.clock = lambda: moment
        _session, turn = await flow.start("c1", context=strategy.context("s", "v1", attributes))
        return turn.texts[0]

    coupon = "Black Friday: BF20 takes 20% off today."
    start = datetime(2026, 11, 27, tzinfo=CST)
    assert await greeting(start - timedelta(seconds=1)) != coupon
    assert await greeting(start) == coupon  # start is inclusive
    assert await greeting(datetime(2026, 11, 29, 3, tzinfo=UTC)) == coupon
    assert await greeting(datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)) == coupon
    assert await greeting(datetime(2026, 12, 1, tzinfo=CST)) != coupon  # end is exclusive
    # a VIP on a weekday, 09:00-18:00 Shanghai time (Wednesday 2026-11-25)
    vip = "Welcome back! Your VIP line is open."
    assert await greeting(datetime(2026, 11, 25, 9, tzinfo=CST), {"tier": "gold"}) == vip
    assert await greeting(datetime(2026, 11, 25, 18, tzinfo=CST), {"tier": "gold"}) != vip
    assert await greeting(datetime(2026, 11, 25, 2, tzinfo=UTC), {"tier": "gold"}) == vip
    assert await greeting(datetime(2026, 11, 28, 10, tzinfo=CST), {"tier": "gold"}) == coupon
    assert await greeting(datetime(2026, 11, 22, 10, tzinfo=CST), {"tier": "gold"}) != vip  # Sun
    assert await greeting(datetime(2026, 11, 25, 10, tzinfo=CST), {"tier": "bronze"}) != vip
    # outside any campaign, the experiment decides (and says so)
    strategy.clock = lambda: datetime(2026, 11, 20, tzinfo=UTC)
    _session, turn = await flow.start("c2", context=strategy.context("s", "v7"))
    shown = {e.id: v for e, v in turn.exposures}
    assert shown == {"welcome_offer": flow.spec.experiments["welcome_offer"].assign("v7"),
                     "closing": flow.spec.experiments["closing"].assign("v7")}  # fmt: skip
    strategy.clock = lambda: datetime(2026, 11, 28, tzinfo=UTC)
    _session, turn = await flow.start("c3", context=strategy.context("s", "v7"))
    assert [e.id for e, _ in turn.exposures] == ["closing"]  # the campaign text won


def test_hours_wrap_past_midnight_and_attribute_comparisons():
    from kefu.plugins.bot_intents.strategy import parse_condition

    night = parse_condition({"hours": "22:00-06:00", "attribute": {"orders": ">=3"}})
    strategy = Strategy(timezone="Europe/Berlin")
    for hour, expected in [(21, False), (22, True), (23, True), (3, True), (6, False)]:
        strategy.clock = lambda h=hour: (
            datetime(2026, 1, 10, h, 30, tzinfo=UTC) - timedelta(hours=1)
        )
        assert night.holds(strategy.context("s", "v", {"orders": 5})) is expected, hour
    strategy.clock = lambda: datetime(2026, 1, 10, 22, 30, tzinfo=UTC)
    assert not night.holds(strategy.context("s", "v", {"orders": 2}))
    assert not night.holds(strategy.context("s", "v", {}))


# -- end to end: widget -> bot variant -> track -> report ----------------------------------


async def _greeting(peer, count: int = 2) -> list[str]:
    return [
        (await peer.expect("message", within=5, sender={"kind": "bot", "id": "promo"}))["text"]
        for _ in range(count)
    ]


async def _until(check, within: float = 5.0):
    """Poll ``check`` (a storage read) until it returns something true."""
    async with asyncio.timeout(within):
        for _ in range(int(within / 0.02) + 1):
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.02)
    raise AssertionError("the condition did not hold in time")


async def test_visitor_sees_a_variant_converts_with_track_and_the_report_shows_it(
    aiohttp_client, tmp_path
):
    flow_path = tmp_path / "promo.yaml"
    flow_path.write_text(FLOW, encoding="utf-8")
    events = Events()
    client = await routing_client(
        aiohttp_client, tmp_path, ROUTING, extra=CONFIG.format(flow=flow_path),
        storage="sql", extra_plugins=(("events", events),),
    )  # fmt: skip
    kernel = app_kernel(client.app)
    bot = bot_of(kernel)
    spec = bot.registry.active_flow("promo").spec
    bot.ab.strategy.clock = lambda: datetime(2026, 11, 20, 10, tzinfo=CST)  # before the sale
    site = await site_of(client)
    storage = kernel.storage

    guest = await visitor(client, site)
    stored = await storage.get_conversation(site.site.id, guest.conversation_id)
    vid = stored.visitor_id
    offer, closing = (
        spec.experiments["welcome_offer"].assign(vid),
        spec.experiments["closing"].assign(vid),
    )
    texts = await _greeting(guest.peer)
    offer_texts = {"control": "Hello! How can I help?",
                   "coupon": "Hello! WELCOME10 takes 10% off your first order."}  # fmt: skip
    assert texts == [offer_texts[offer],
                     {"plain": "Type your question.", "warm": "Take your time, I am here."}[closing]]  # fmt: skip  # noqa: E501
    stored = await storage.get_conversation(site.site.id, guest.conversation_id)
    record = stored.meta["bot_ab"]["welcome_offer"]
    assert record["variant"] == offer and record["converted_at"] is None
    assert record["weights"] == {"control": 1.0, "coupon": 1.0}
    assert stored.meta["bot_ab"]["closing"]["variant"] == closing
    exposed = {e.data["experiment"]: e.data for e in events.of("bot.exposure")}
    assert (
        exposed["welcome_offer"]["variant"] == offer
        and exposed["welcome_offer"]["visitor_id"] == vid
    )

    # the widget's kefu.track("purchase") -> the `track` frame converts, once
    await guest.peer.send(op="track", name="purchase", props={"value": 30}, ref="t1")
    done = await guest.peer.expect("track_ok", ref="t1")
    assert done["converted"] == ["welcome_offer"]
    await guest.peer.send(op="track", name="purchase", ref="t2")
    assert (await guest.peer.expect("track_ok", ref="t2"))["converted"] == []
    stored = await storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.meta["bot_ab"]["welcome_offer"]["converted_at"] >= record["exposed_at"]
    assert stored.meta["bot_ab"]["closing"]["converted_at"] is None  # another event converts it
    assert events.of("bot.conversion")[0].data["experiment"] == "welcome_offer"
    stats = bot.stats()  # exported as kefu_bot_ab_* by the Prometheus plugin
    assert stats["bot_ab_conversions"] == 1 and stats["bot_ab_tracks"] == 2
    assert stats["bot_ab_exposures"] >= 1
    await guest.peer.send(op="track", name="no spaces", ref="t3")
    assert (await guest.peer.expect("error", ref="t3"))["code"] == "invalid_field"
    await guest.peer.send(op="track", ref="t4")
    assert (await guest.peer.expect("error", ref="t4"))["code"] == "missing_field"
    for n in range(5, 9):  # 5 a minute (refused calls cost nothing): the 6th is refused
        await guest.peer.send(op="track", name="view", ref=f"t{n}")
    for n in range(5, 8):
        assert (await guest.peer.expect("track_ok", ref=f"t{n}"))["converted"] == []
    assert (await guest.peer.expect("error", ref="t8"))["code"] == "rate_limited"
    desk = await console(client, site.agent, online=False)
    await desk.peer.send(op="track", name="purchase", ref="a1")
    assert (await desk.peer.expect("error", ref="a1"))["code"] == "forbidden"

    # resolved by the visitor, never handed off: `closing` converts
    await guest.peer.send(op="resolve", conversation_id=guest.conversation_id, ref="r")
    await guest.peer.expect("resolve_ok", ref="r")

    async def closed():
        found = await storage.get_conversation(site.site.id, guest.conversation_id)
        return found.meta["bot_ab"]["closing"]["converted_at"]

    assert await _until(closed)

    # during the sale the campaign text wins: no welcome_offer exposure
    bot.ab.strategy.clock = lambda: datetime(2026, 11, 28, 10, tzinfo=CST)
    buyer = await visitor(client, site)
    assert (await _greeting(buyer.peer))[0] == "Black Friday: BF20 takes 20% off today."
    stored = await storage.get_conversation(site.site.id, buyer.conversation_id)
    assert set(stored.meta["bot_ab"]) == {"closing"}
    # a human handoff: resolving it later does not convert `closing`
    await buyer.peer.send(op="send", conversation_id=buyer.conversation_id, cid="h", text="human")
    await _until(lambda: _state(storage, site.site.id, buyer.conversation_id, "queued"))
    bot.ab.strategy.clock = lambda: datetime(2026, 12, 1, 0, 0, tzinfo=CST)  # the sale ended
    late = await visitor(client, site)
    assert (await _greeting(late.peer))[0] in offer_texts.values()

    # the report: REST (admins only) and the CLI on the same database
    admin = {"Authorization": f"Bearer {await login(client, site.site.id, site.admin.email)}"}
    resp = await client.get("/v1/bot/experiments/welcome_offer/report", headers=admin)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert (report["exposures"], report["conversions"]) == (2, 1)
    rows = {v["name"]: v for v in report["variants"]}
    assert rows[offer]["conversions"] == 1 and rows["control"]["control"]
    assert sum(v["exposures"] for v in rows.values()) == 2
    assert report["srm"]["applicable"] and report["conversations_scanned"] == 3
    for row in rows.values():
        n, x = row["exposures"], row["conversions"]
        assert row["rate_ci95"] == pytest.approx(list(wilson(x, n)))
    closing_report = await (
        await client.get("/v1/bot/experiments/closing/report", headers=admin)
    ).json()
    assert (closing_report["exposures"], closing_report["conversions"]) == (3, 1)
    listing = await (await client.get("/v1/bot/experiments", headers=admin)).json()
    assert {e["id"]: e["exposures"] for e in listing["experiments"]} == {
        "welcome_offer": 2, "closing": 3,
    }  # fmt: skip
    assert (await client.get("/v1/bot/experiments/nope/report", headers=admin)).status == 404
    agent = {"Authorization": f"Bearer {desk.token}"}
    assert (await client.get("/v1/bot/experiments/closing/report", headers=agent)).status == 403
    spec_doc = await (await client.get("/v1/openapi.json")).json()
    assert "/v1/bot/experiments/{experiment_id}/report" in spec_doc["paths"]

    run = [sys.executable, "-m", "kefu.core.cli", "bot", "ab-report", "welcome_offer",
           "--site", site.site.id, "--config", str(tmp_path / "kefu.toml")]  # fmt: skip
    cli = await asyncio.to_thread(
        subprocess.run, [*run, "--json"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["variants"] == report["variants"]
    table = await asyncio.to_thread(subprocess.run, run, capture_output=True, text=True, timeout=60)
    assert "sample-ratio check: chi2=" in table.stdout and "(control)" in table.stdout


async def _state(storage, site_id: str, conversation_id: str, state: str) -> bool:
    found = await storage.get_conversation(site_id, conversation_id)
    return found.state == state
