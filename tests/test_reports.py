"""Reports over HTTP (plugins/reports): the figures, the CSV tables and who may read them,
on the embedded default storage (SQLite); the figures come from stored facts with known times."""

from __future__ import annotations

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest

from kefu.core.domain import ASSIGNED, BOT, RESOLVED, Agent, Conversation, Message, Visitor
from tests.chat_support import FAST_HASH, app_kernel, login, make_kernel
from tests.rest_support import bearer, build_world

SHANGHAI = ZoneInfo("Asia/Shanghai")
RANGE = {"since": "2026-11-30", "until": "2026-12-01", "tz": "Asia/Shanghai"}


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    month = 12 if day < 15 else 11
    return dt.datetime(2026, month, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    from kefu.core.web_app import create_app

    return await aiohttp_client(create_app(make_kernel(tmp_path, storage="sql")))


async def chat(kernel, site_id, conv_id, created, said, **kw) -> None:
    """A conversation created at ``created`` with ``said``: (sender kind, seconds after)."""
    visitor = await kernel.storage.upsert_visitor(Visitor(f"v-{conv_id}", site_id))
    conv = await kernel.storage.create_conversation(
        Conversation(conv_id, site_id, visitor.id, created_at=created, **kw)
    )
    for i, (kind, after) in enumerate(said):
        await kernel.storage.append_message(
            Message(site_id, conv.id, f"m{i}", kind, f"{kind}-x", text="hi",
                    created_at=created + after)
        )  # fmt: skip


@pytest.fixture
async def world(client):
    kernel = app_kernel(client.app)
    world = await build_world(client, kernel)
    site_id, ada, bob = world.site.site.id, world.site.admin, world.site.agent
    t1, t2 = at(30, 9), at(30, 9, 30)
    await chat(
        kernel,
        site_id,
        "c1",
        t1,
        [("visitor", 1), ("agent", 30), ("agent", 40)],
        state=RESOLVED,
        resolved_at=t1 + 600,
        assignee_id=ada.id,
        department="sales",
        meta={"rating": {"score": 5, "scale": 5}},
    )
    await chat(
        kernel,
        site_id,
        "c2",
        t2,
        [("visitor", 1), ("agent", 90)],
        state=RESOLVED,
        resolved_at=t2 + 1200,
        assignee_id=bob.id,
        department="sales",
        meta={"rating": {"score": 2, "scale": 5}},
    )
    t3, t4 = at(1, 14), at(1, 14, 10)
    await chat(
        kernel,
        site_id,
        "c3",
        t3,
        [("bot", 0), ("visitor", 5), ("bot", 6)],
        state=RESOLVED,
        resolved_at=t3 + 60,
    )
    await chat(
        kernel,
        site_id,
        "c4",
        t4,
        [("bot", 0), ("visitor", 100), ("agent", 150)],
        state=ASSIGNED,
        assignee_id=bob.id,
        department='=HYPERLINK("x")',
        meta={"bot_handoff": {"reason": "asked", "at": t4 + 120}},
    )
    # just before the range in Shanghai (but on 11-29 in UTC as well), and another site's
    await chat(kernel, site_id, "c0", at(29, 23, 59, 59), [("visitor", 1)], state=BOT)
    other = await build_world(client, kernel)
    await chat(kernel, other.site.site.id, "c9", t1, [("visitor", 1)], state=BOT)
    return world  # fmt: skip


async def report(client, headers, **params) -> dict:
    resp = await client.get("/v1/reports", params={**RANGE, **params}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_the_figures_of_a_range_in_a_time_zone(client, world):
    body = await report(client, world.admin())
    assert (body["since"], body["until"], body["tz"], body["truncated"]) == (
        "2026-11-30", "2026-12-01", "Asia/Shanghai", False,
    )  # fmt: skip
    summary = body["summary"]
    assert (summary["conversations"], summary["resolved"]) == (4, 3)
    # first responses 30 s, 90 s and 30 s (c4: from the bot's handoff, not its creation)
    assert summary["first_response"] == {"count": 3, "median_s": 30.0, "p90_s": 78.0,
                                         "average_s": 50.0}  # fmt: skip
    assert summary["resolution"] == {"count": 3, "median_s": 600.0, "p90_s": 1080.0,
                                     "average_s": 620.0}  # fmt: skip
    assert summary["csat"] == {"ratings": 2, "average": 3.5, "satisfied_pct": 50.0}
    assert summary["bot"] == {"handled": 2, "contained": 1, "handed_off": 1,
                              "containment_pct": 50.0}  # fmt: skip
    assert [(d["date"], d["conversations"], d["resolved"]) for d in body["days"]] == [
        ("2026-11-30", 2, 2), ("2026-12-01", 2, 1),
    ]  # fmt: skip
    assert {h["hour"]: h["conversations"] for h in body["hours"] if h["conversations"]} == {
        9: 2, 14: 2,
    }  # fmt: skip
    agents = {a["name"]: a for a in body["agents"]}
    assert list(agents) == ["Bob", "Ada"]  # most conversations first
    assert (agents["Bob"]["conversations"], agents["Bob"]["first_response_median_s"]) == (2, 60.0)
    assert agents["Bob"]["first_response_p90_s"] == 84.0 and agents["Bob"]["csat_pct"] == 0.0
    assert (agents["Ada"]["resolution_median_s"], agents["Ada"]["csat_pct"]) == (600.0, 100.0)
    departments = {d["department"]: d["conversations"] for d in body["departments"]}
    assert departments == {"sales": 2, '=HYPERLINK("x")': 1, "": 1}
    # the same instants counted in UTC: c0 (15:59 UTC on 11-29) joins when the 29th is in
    utc = await report(client, world.admin(), since="2026-11-29", tz="UTC")
    assert [(d["date"], d["conversations"]) for d in utc["days"]] == [
        ("2026-11-29", 1), ("2026-11-30", 2), ("2026-12-01", 2),
    ]  # fmt: skip
    assert {h["hour"] for h in utc["hours"] if h["conversations"]} == {1, 6, 15}


async def table(resp) -> list[dict]:
    return list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))


async def test_csv_tables(client, world):
    resp = await client.get("/v1/reports/agents.csv", params=RANGE, headers=world.admin())
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert 'filename="kefu-agents-2026-11-30-2026-12-01.csv"' in resp.headers["Content-Disposition"]
    raw = await resp.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [(r["name"], r["conversations"], r["first_response_median_s"]) for r in rows] == [
        ("Bob", "2", "60.0"), ("Ada", "1", "30.0"),
    ]  # fmt: skip
    resp = await client.get("/v1/reports/departments.csv", params=RANGE, headers=world.admin())
    departments = [r["department"] for r in await table(resp)]
    assert '\'=HYPERLINK("x")' in departments  # a formula is quoted, not run
    resp = await client.get("/v1/reports/conversations.csv", params=RANGE, headers=world.admin())
    rows = await table(resp)
    assert [r["conversation_id"] for r in rows] == ["c1", "c2", "c3", "c4"]
    assert rows[0]["created_at"] == "2026-11-30T09:00:00+08:00"
    assert (rows[3]["first_response_s"], rows[3]["bot_handled"], rows[2]["bot_contained"]) == (
        "30.0", "True", "True",
    )  # fmt: skip
    resp = await client.get("/v1/reports/days.csv", params=RANGE, headers=world.admin())
    assert (await resp.read()).decode("utf-8-sig").splitlines()[1].startswith("2026-11-30,2,2,")
    resp = await client.get("/v1/reports/hours.csv", params=RANGE, headers=world.admin())
    assert len((await resp.text()).splitlines()) == 25
    resp = await client.get("/v1/reports/secrets.csv", params=RANGE, headers=world.admin())
    assert resp.status == 404


async def test_supervisors_and_admins_read_reports_agents_and_visitors_do_not(client, world):
    kernel = app_kernel(client.app)
    site_id = world.site.site.id
    resp = await client.get("/v1/reports", params=RANGE, headers=world.agent())
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    resp = await client.get("/v1/reports/agents.csv", params=RANGE, headers=world.agent())
    assert resp.status == 403
    assert (await client.get("/v1/reports", params=RANGE)).status == 401
    # an admin makes Bob a supervisor through the API; his next token reads reports
    bob = world.site.agent
    resp = await client.patch(
        f"/v1/agents/{bob.id}", json={"roles": ["agent", "supervisor"]}, headers=world.admin()
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["roles"] == ["agent", "supervisor"]
    token = await login(client, site_id, bob.email)
    assert (await report(client, bearer(token)))["summary"]["conversations"] == 4
    # a supervisor is no admin
    resp = await client.get("/v1/agents", headers=bearer(token))
    assert resp.status == 403
    sue = await kernel.storage.create_agent(
        Agent("sue", site_id, "sue@example.test", "Sue", FAST_HASH, ["supervisor"])
    )
    token = await login(client, site_id, sue.email)
    resp = await client.get("/v1/reports/days.csv", params=RANGE, headers=bearer(token))
    assert resp.status == 200
    session = await client.post(
        "/v1/visitors/session", json={"widget_key": world.site.site.widget_key}
    )
    visitor = bearer((await session.json())["token"])
    assert (await client.get("/v1/reports", params=RANGE, headers=visitor)).status == 403


async def test_bad_ranges_and_zones_are_refused(client, world):
    for params, code in (
        ({"tz": "Mars/Olympus"}, "invalid_time_zone"),
        ({"since": "2026-12-02"}, "invalid_range"),
        ({"since": "2025-01-01"}, "range_too_long"),
        ({"since": "yesterday"}, "invalid_query"),
    ):
        resp = await client.get("/v1/reports", params={**RANGE, **params}, headers=world.admin())
        assert resp.status == 400, params
        assert (await resp.json())["error"]["code"] == code
    # no range: the last seven days, today included, in UTC
    resp = await client.get("/v1/reports", headers=world.admin())
    body = await resp.json()
    today = dt.datetime.now(dt.UTC).date()
    assert (body["until"], len(body["days"])) == (today.isoformat(), 7)


async def test_a_report_says_when_it_left_conversations_out(aiohttp_client, tmp_path):
    from kefu.core.web_app import create_app

    kernel = make_kernel(tmp_path, "[reports]\nmax_conversations = 3\n", storage="sql")
    client = await aiohttp_client(create_app(kernel))
    world = await build_world(client, kernel)
    for i in range(3):
        await chat(kernel, world.site.site.id, f"c{i}", at(30, 10, i), [("visitor", 1)])
    await chat(kernel, world.site.site.id, "c3", at(1, 10), [("visitor", 1)])
    body = await report(client, world.admin())
    assert body["truncated"] is True and body["summary"]["conversations"] == 3
    body = await report(client, world.admin(), until="2026-11-30")  # exactly the most
    assert body["truncated"] is False and body["summary"]["conversations"] == 3
