"""Clarifying questions at low confidence: the DSL's ``clarify`` block with a real trained
classifier (turn by turn, no server), and once end to end over WebSocket with the
candidates as ``meta.choices``."""

from __future__ import annotations

import asyncio
import re

from kefu.core.domain import BOT, QUEUED
from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.bot_intents.validate import check_flow
from kefu.plugins.bot_intents.versions import FlowRegistry
from tests.chat_support import app_kernel
from tests.routing_support import routing_client, site_of, visitor

FLOW = """\
dsl: 1
id: clarify
threshold: THRESHOLD
intents:
  order_status:
    title: {en: Track an order, zh: 查订单}
    examples: [where is my order, track my package, has my order shipped yet,
               when will my parcel arrive, 我的订单到哪了, 查一下物流, 快递什么时候到, 订单发货了吗]
  refund:
    title: {en: A refund, zh: 退款}
    examples: [I want a refund, how do I return this item, give me my money back,
               can I return my order, 我要退款, 怎么退货, 申请退款, 这个可以退吗]
  opening_hours:
    examples: [when are you open, what are your opening hours, are you open on sunday,
               what time do you close, 你们几点营业, 营业时间是什么, 周末上班吗, 几点下班]
  oos:
    examples: [hello, hi there, thanks, tell me a joke, what is the weather like, 你好, 谢谢,
               讲个笑话]
start: menu
clarify:
  min_confidence: MINIMUM
  max_attempts: 2
  then: THEN
  handoff: {department: support, reason: could not tell}
states:
  menu:
    on:
      - intent: order_status
        goto: order
      - intent: refund
        goto: refund
      - intent: opening_hours
        goto: hours
  order:
    say: {en: Your order is on its way., zh: 您的订单在路上。}
    next: menu
  refund:
    say: {en: Refunds take 3 days., zh: 退款需要三天。}
    next: menu
  hours:
    say: We open at nine.
    next: menu
fallback:
  say: Sorry?
  max_misses: 3
  handoff: {department: support, reason: not understood}
"""


def flow_text(threshold: float = 0.99, minimum: float = 0.15, then: str = "handoff") -> str:
    return (
        FLOW.replace("THRESHOLD", str(threshold))
        .replace("MINIMUM", str(minimum))
        .replace("THEN", then)
    )


async def compiled(**kw):
    return await FlowRegistry().publish(flow_text(**kw), "clarify.yaml")


# A threshold of 0.99 makes nearly every utterance "not confident enough", so the tests do
# not depend on the exact confidences of the classifier; a mixed utterance ranks both
# intents (the first of these that does with this classifier is used).
MIXES = ("refund or track my order", "where is my refund", "my order refund")
ZH_MIXES = ("退货 订单在哪", "退货 订单", "退款 快递")


def mixed(flow, texts=MIXES) -> str:
    for text in texts:
        ranking = dict(flow.classifier.predict(text).ranking)
        if min(ranking.get("refund", 0), ranking.get("order_status", 0)) >= 0.2:
            return text
    raise AssertionError(f"none of {texts} is ambiguous for this classifier")


def about_orders(flow) -> str:
    """An utterance whose only likely intent is order_status, below the 0.99 threshold."""
    for text in ("parcel", "shipping status", "my package", "delivery"):
        ranking = dict(flow.classifier.predict(text).ranking)
        others = [c for i, c in ranking.items() if i not in ("order_status", "oos")]
        if 0.2 <= ranking.get("order_status", 0) < 0.99 and max(others) < 0.15:
            return text
    raise AssertionError("no utterance is only about orders with a low confidence")


async def test_question_lists_candidates_and_a_number_or_a_title_resolves_it():
    flow = await compiled()
    mix = mixed(flow)
    session, _ = await flow.start("s1")
    turn = await flow.step(session, mix)
    assert turn.matched == "clarify" and set(turn.choices) == {"A refund", "Track an order"}
    first, second = turn.choices
    assert turn.texts == (f"Did you mean: 1) {first}, 2) {second}?",)
    assert session.state == "menu" and session.clarify
    turn = await flow.step(session, "2")  # a number of the list
    expected = "Refunds take 3 days." if second == "A refund" else "Your order is on its way."
    assert turn.matched == "clarify" and turn.texts == (expected,) and session.clarify == []

    turn = await flow.step(session, mix)
    assert turn.choices == (first, second)
    turn = await flow.step(session, "a REFUND.")  # a title, case and punctuation aside
    assert turn.texts == ("Refunds take 3 days.",) and session.clarify_misses == 0

    turn = await flow.step(session, mixed(flow, ZH_MIXES))  # CJK: asked in Chinese
    assert turn.matched == "clarify" and set(turn.choices) == {"退款", "查订单"}
    assert re.fullmatch(r"您是想问：1\) (退款|查订单)；2\) (退款|查订单)？", turn.texts[0])  # noqa: RUF001
    turn = await flow.step(session, "退款")
    assert turn.texts == ("退款需要三天。",)


async def test_one_candidate_takes_a_yes_and_a_non_answer_is_an_ordinary_message():
    flow = await compiled()
    orders = about_orders(flow)
    session, _ = await flow.start("s2")
    turn = await flow.step(session, orders)
    assert turn.matched == "clarify" and turn.choices == ("Track an order",)
    assert turn.texts == ("Did you mean: Track an order?",)
    assert (await flow.step(session, "yes")).texts == ("Your order is on its way.",)
    again = await flow.step(session, "yes")  # no question pending: a yes chooses nothing
    assert again.texts != ("Your order is on its way.",) and session.state == "menu"

    await flow.step(session, orders)
    turn = await flow.step(session, "hello")  # not an answer: handled as any message
    assert turn.matched == "fallback" and turn.texts == ("Sorry?",)
    assert session.clarify == []


async def test_confident_input_is_not_questioned_and_out_of_scope_is_not_either():
    flow = await compiled(threshold=0.3)
    mix = mixed(flow)
    session, _ = await flow.start("s3")
    assert (await flow.step(session, "I want a refund")).texts == ("Refunds take 3 days.",)
    assert (await flow.step(session, "hello")).matched == "fallback"  # oos won
    plain = await FlowRegistry().publish(
        re.sub(r"clarify:\n(  .*\n)+", "", flow_text()), "plain.yaml"
    )
    session, _ = await plain.start("s4")
    assert (await plain.step(session, mix)).matched == "fallback"  # no block: as before


async def test_after_max_attempts_unanswered_it_hands_off_or_falls_back():
    flow = await compiled(then="handoff")
    mix = mixed(flow)
    session, _ = await flow.start("s5")
    for _ in range(2):  # asked, not answered (an ambiguous message again), asked again
        turn = await flow.step(session, mix)
        assert turn.matched == "clarify" and turn.handoff is None and turn.choices
    turn = await flow.step(session, mix)  # the second question went unanswered too
    assert turn.handoff is not None and turn.handoff.department == "support"
    assert turn.handoff.reason == "could not tell" and turn.choices == ()
    assert turn.texts == ("Let me connect you with a colleague.",) and session.handed_off

    flow = await compiled(then="fallback")
    session, _ = await flow.start("s6")
    await flow.step(session, mix)
    await flow.step(session, mix)
    turn = await flow.step(session, mix)
    assert turn.matched == "fallback" and turn.texts == ("Sorry?",) and turn.handoff is None
    assert (await flow.step(session, mix)).matched == "clarify"  # asks again afterwards


async def test_a_state_can_turn_it_off_and_the_checks_refuse_bad_blocks():
    off = flow_text().replace("  menu:\n", "  menu:\n    clarify: false\n")
    registry = FlowRegistry()
    flow = await registry.publish(off, "off.yaml")
    mix = mixed(flow)
    session, _ = await flow.start("s7")
    assert (await flow.step(session, mix)).matched == "fallback"

    def problems(text: str) -> list[str]:
        checked, found = check_flow(text)
        assert checked is None
        return [f"{p.line}: {p.message}" for p in found]

    assert "21: clarify.min_confidence (0.995) must be below the threshold (0.99)" in problems(
        flow_text(minimum=0.995)
    )
    assert any(
        "clarify.then must be handoff or fallback" in p for p in problems(flow_text(then="x"))
    )
    colour = flow_text().replace("  max_attempts: 2", "  colour: red")
    assert any("clarify: unknown key 'colour'" in p for p in problems(colour))


# -- end to end: the widget's frames carry the choices ------------------------------------


async def test_visitor_gets_choices_in_meta_and_answering_one_fires_the_transition(
    aiohttp_client, tmp_path
):
    path = tmp_path / "clarify.yaml"
    path.write_text(flow_text(), encoding="utf-8")
    client = await routing_client(
        aiohttp_client, tmp_path, extra=f'[bot]\nflows = ["{path}"]\nwatch = false\n'
    )
    kernel = app_kernel(client.app)
    site = await site_of(client)
    mix = mixed(bot_of(kernel).registry.for_site(site.site.id))
    guest = await visitor(client, site)
    await guest.peer.send(op="send", conversation_id=guest.conversation_id, cid="c1", text=mix)
    question = await guest.peer.expect("message", sender={"kind": "bot", "id": "clarify"})
    assert question["text"].startswith("Did you mean: 1) ")
    choices = question["meta"]["choices"]
    assert set(choices) == {"A refund", "Track an order"}
    stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
    assert stored.state == BOT and stored.meta["bot"]["clarify"]
    history = await kernel.storage.list_messages(site.site.id, guest.conversation_id)
    assert history[-1].meta == {"choices": choices}  # stored too: a reload shows the buttons
    await guest.peer.send(
        op="send", conversation_id=guest.conversation_id, cid="c2", text="Track an order"
    )
    answer = await guest.peer.expect("message", sender={"kind": "bot", "id": "clarify"})
    assert answer["text"] == "Your order is on its way." and not answer["meta"]
    for n in range(3):  # unanswered twice: handed to people
        await guest.peer.send(
            op="send", conversation_id=guest.conversation_id, cid=f"m{n}", text=mix
        )
        await guest.peer.expect("message", sender={"kind": "bot", "id": "clarify"})
    for _ in range(100):
        stored = await kernel.storage.get_conversation(site.site.id, guest.conversation_id)
        if stored.state != BOT:
            break
        await asyncio.sleep(0.02)
    assert stored.state == QUEUED and stored.meta["bot_handoff"]["reason"] == "could not tell"
    assert bot_of(kernel).counts["handoffs"] == 1
