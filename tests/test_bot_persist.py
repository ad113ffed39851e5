"""Flow versions survive a restart: kefu on SQLite is stopped and started again on the same
data folder; the active version (even one chosen by a rollback through the admin API)
comes back, the history is listed, a running dialogue continues on its own version, and
a file changed while the server was down becomes the active version."""

from __future__ import annotations

import aiohttp

from kefu.core.domain import BOT, Message, Visitor, new_id
from kefu.core.storage import INSTALL
from kefu.plugins.bot_intents import service_of as bot_of
from kefu.plugins.bot_intents.store import VERSION_KIND, FlowStore
from kefu.plugins.bot_intents.versions import FlowRegistry
from tests.chat_support import add_site
from tests.rest_support import add_conversation
from tests.web_support import start_kefu

FLOW = """\
dsl: 1
id: kept
intents:
  greet: {examples: [hello, hi, good morning]}
  bye: {examples: [bye, goodbye, see you]}
start: a
states:
  a:
    say: "welcome to version N"
    on:
      - keyword: next
        goto: b
  b:
    say: "hello from version N"
    end: true
"""


def version(n: int) -> str:
    return FLOW.replace("version N", f"version {n}")


async def say(kefu, site_id: str, conversation_id: str, text: str) -> list[str]:
    """The visitor's message and the bot's turn (as the gateway's event would run it)."""
    storage = kefu.kernel.storage
    stored, _ = await storage.append_message(
        Message(site_id, conversation_id, new_id(), "visitor", "v1", text=text)
    )
    before = {m.seq for m in await storage.list_messages(site_id, conversation_id)}
    await bot_of(kefu.kernel).turn(site_id, conversation_id, stored.seq)
    after = await storage.list_messages(site_id, conversation_id)
    return [m.text for m in after if m.seq not in before and m.sender_kind == "bot"]


async def chat(kefu, site_id: str) -> str:
    visitor = await kefu.kernel.storage.upsert_visitor(Visitor(new_id(), site_id))
    return (await add_conversation(kefu.kernel, site_id, visitor.id, state=BOT)).id


async def api(kefu, token: str, method: str, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"{kefu.base}{path.lstrip('/')}", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def login(kefu, site) -> str:
    """An owner's token: the flows serve every site, so changing them is install-level."""
    from tests.chat_support import PASSWORD

    email = f"owner@{site.site.id}.test"
    if await kefu.kernel.storage.get_agent_by_email(site.site.id, email) is None:
        from kefu.core.domain import Agent, new_id
        from tests.chat_support import FAST_HASH

        owner = Agent(new_id(), site.site.id, email, "Olga", FAST_HASH, ["owner", "admin"])
        await kefu.kernel.storage.create_agent(owner)
    body = {"site_id": site.site.id, "email": email, "password": PASSWORD}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{kefu.base}v1/auth/login", json=body) as resp,
    ):
        return (await resp.json())["token"]


async def test_active_version_history_and_sessions_survive_a_restart(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(version(1), encoding="utf-8")
    extra = f'[bot]\nflows = ["{path}"]\nwatch = false\n'
    kefu = await start_kefu(tmp_path, extra)  # storage: SQLite in tmp_path/data
    try:
        bot = bot_of(kefu.kernel)
        v1 = bot.registry.active["kept"]
        path.write_text(version(2), encoding="utf-8")
        v2 = (await bot.load(str(path))).sha256
        site = await add_site(kefu.kernel)
        running = await chat(kefu, site.site.id)
        assert await say(kefu, site.site.id, running, "zzz") == [
            "Sorry, I did not understand that."
        ]
        token = await login(kefu, site)
        status, flow = await api(kefu, token, "POST", "/v1/bot/flows/kept/rollback")
        assert status == 200 and flow["active"] == v1
        await bot.registry.publish(version(1), "copy.yaml")  # the same content: stored once
        kept = await kefu.kernel.storage.list_records(INSTALL, VERSION_KIND)
        assert sorted(r.id for r in kept) == sorted([v1, v2])
        assert (await bot.registry.store.read(v2)).decode() == version(2)
    finally:
        await kefu.runner.cleanup()
    assert not (tmp_path / "data" / "bot").exists()  # storage records, no folder

    # restart: the rollback's choice is active again, not the file's (unchanged) content
    kefu = await start_kefu(tmp_path, extra)
    try:
        bot = bot_of(kefu.kernel)
        assert bot.registry.active["kept"] == v1
        assert bot.registry.get(v2) is None  # kept, compiled when first needed
        token = await login(kefu, site)
        status, listing = await api(kefu, token, "GET", "/v1/bot/flows")
        versions = listing["flows"][0]["versions"]
        assert [(v["sha256"], v["active"], v["activated_by"]) for v in versions] == [
            (v2, False, "file"),
            (v1, True, "rollback"),
        ]
        status, source = await api(kefu, token, "GET", f"/v1/bot/flows/kept/versions/{v2}")
        assert status == 200 and source["text"] == version(2)
        # the dialogue begun on version 2 goes on there; a new one starts on version 1
        assert await say(kefu, site.site.id, running, "next") == ["hello from version 2"]
        stored = await kefu.kernel.storage.get_conversation(site.site.id, running)
        assert stored.meta["bot"]["version"] == v2
        fresh = await chat(kefu, site.site.id)
        assert await say(kefu, site.site.id, fresh, "next") == ["hello from version 1"]
        status, flow = await api(kefu, token, "POST", f"/v1/bot/flows/kept/versions/{v2}/activate")
        assert status == 200 and flow["active"] == v2
        status, flow = await api(kefu, token, "POST", "/v1/bot/flows/kept/rollback")
        assert status == 200 and flow["active"] == v1  # the activation log survived too
    finally:
        await kefu.runner.cleanup()

    # the file changed while the server was down: loaded as a new version, made active
    path.write_text(version(3), encoding="utf-8")
    kefu = await start_kefu(tmp_path, extra)
    try:
        bot = bot_of(kefu.kernel)
        v3 = bot.registry.active["kept"]
        assert v3 not in (v1, v2) and bot.registry.history["kept"] == [v1, v2, v3]
        fresh = await chat(kefu, site.site.id)
        assert await say(kefu, site.site.id, fresh, "next") == ["hello from version 3"]
    finally:
        await kefu.runner.cleanup()


async def test_a_refused_file_at_start_up_keeps_the_stored_version(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(version(1), encoding="utf-8")
    extra = f'[bot]\nflows = ["{path}"]\nwatch = false\n'
    kefu = await start_kefu(tmp_path, extra)
    v1 = bot_of(kefu.kernel).registry.active["kept"]
    await kefu.runner.cleanup()
    path.write_text(version(2).replace("goto: b", "goto: nowhere"), encoding="utf-8")
    kefu = await start_kefu(tmp_path, extra)
    try:
        bot = bot_of(kefu.kernel)
        assert bot.registry.active["kept"] == v1 and bot.counts["reload_failures"] == 1
        assert f"{path}:13: " in bot.registry.stats.last_error[str(path)]
    finally:
        await kefu.runner.cleanup()


async def test_the_folder_of_an_older_kefu_is_copied_into_storage(tmp_path):
    """An older kefu kept versions in <data_dir>/bot: at the first start they become
    storage records (the rollback's choice stays active, the file is not published again),
    and the folder is left as it was."""
    path = tmp_path / "flow.yaml"
    path.write_text(version(1), encoding="utf-8")
    folder = FlowStore(tmp_path / "data" / "bot")
    registry = FlowRegistry()
    registry.store = folder
    v1 = (await registry.publish(version(1), str(path))).sha256
    v2 = (await registry.publish(version(2), "other.yaml")).sha256
    await registry.rollback("kept")
    assert registry.active["kept"] == v1
    before = sorted(p.name for p in folder.root.rglob("*"))
    extra = f'[bot]\nflows = ["{path}"]\nwatch = false\n'
    kefu = await start_kefu(tmp_path, extra)
    try:
        bot = bot_of(kefu.kernel)
        assert bot.registry.active["kept"] == v1
        assert bot.registry.history["kept"] == [v1, v2]
        kept = await kefu.kernel.storage.list_records(INSTALL, VERSION_KIND)
        assert sorted(r.id for r in kept) == sorted([v1, v2])
        assert await bot.registry.store.seen(str(path)) == v1
    finally:
        await kefu.runner.cleanup()
    assert sorted(p.name for p in folder.root.rglob("*")) == before
