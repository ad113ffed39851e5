"""The example flow as shipped (issue 14): the embedded default serves it with a demo
``order_lookup``; `kefu bot validate --config` and the server agree on the actions; a flow
added to ``[bot] flows`` of a running server is loaded at once; the greeting speaks the
visitor's language; a handoff to a department nobody serves falls back to any agent."""

from __future__ import annotations

import subprocess
import sys

from kefu.core.domain import BOT, Conversation, Visitor, new_id
from kefu.core.kernel import load_kernel
from kefu.core.reload import apply_reload
from kefu.core.web_app import create_app
from kefu.plugins.bot_intents import service_of
from kefu.plugins.bot_intents.demo import DEMO_FLOW, actions_of, bot_settings
from kefu.plugins.bot_intents.strategy import Strategy
from kefu.plugins.bot_intents.validate import check_flow
from tests.chat_support import add_site, make_kernel
from tests.conftest import ROOT

SHOP = ROOT / "examples" / "flows" / "shop.yaml"


def test_the_embedded_default_serves_the_example_flow_with_its_demo_action(tmp_path):
    kernel = load_kernel(None, environ={"KEFU_SERVER__DATA_DIR": str(tmp_path)})
    settings = bot_settings(kernel)
    assert settings.flows == [DEMO_FLOW] and SHOP.read_bytes() == open(DEMO_FLOW, "rb").read()
    known = Strategy.from_settings(settings).names()
    checked, problems = check_flow(SHOP.read_bytes(), set(actions_of(kernel)), known)
    assert problems == [] and checked.spec.id == "shop"


def example_config() -> str:
    """The example's `[bot]` config with the example flow, not watched."""
    example = (ROOT / "plugins" / "bot_intents" / "demo.toml").read_text(encoding="utf-8")
    return example.replace('flows = ["flows/shop.yaml"]', f'flows = ["{SHOP}"]\nwatch = false')


def validate(config, cwd):
    return subprocess.run(
        [sys.executable, "-m", "kefu.core.cli", "bot", "validate", "--config", str(config),
         str(SHOP)],
        capture_output=True, text=True, cwd=cwd,
    )  # fmt: skip


def test_validate_with_a_config_checks_actions_as_the_server_does(tmp_path):
    example = (ROOT / "plugins" / "bot_intents" / "demo.toml").read_text(encoding="utf-8")
    config = tmp_path / "kefu.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n' + example, encoding="utf-8")
    ok = validate(config, tmp_path)
    assert ok.returncode == 0, ok.stderr
    config.write_text(config.read_text().replace("[bot]\n", "[bot]\ndemo_actions = false\n"))
    refused = validate(config, tmp_path)
    assert refused.returncode == 1
    assert "unknown action 'order_lookup' (none installed)" in refused.stderr


async def test_a_flow_added_to_a_running_server_is_loaded(aiohttp_client, tmp_path, caplog):
    kernel = make_kernel(tmp_path)
    await aiohttp_client(create_app(kernel))
    service = service_of(kernel)
    assert service.registry.for_site("any") is None
    config = tmp_path / "kefu.toml"
    config.write_text(config.read_text() + example_config(), encoding="utf-8")
    caplog.set_level("INFO")
    assert await apply_reload(kernel)
    assert service.registry.for_site("any") is not None
    assert f"bot flow {SHOP.resolve()} added: active" in caplog.text


async def test_greeting_in_the_visitor_language_and_unserved_department_falls_back(
    aiohttp_client, tmp_path
):
    kernel = make_kernel(tmp_path, example_config())
    await aiohttp_client(create_app(kernel))
    site = await add_site(kernel)
    storage, service = kernel.storage, service_of(kernel)
    visitor = Visitor(new_id(), site.site.id, attributes={"language": "zh-CN"})
    await storage.upsert_visitor(visitor)
    conversation = Conversation(new_id(), site.site.id, visitor.id, state=BOT)
    await storage.create_conversation(conversation)
    await service.greet(site.site.id, conversation.id)
    (greeting, *_) = await storage.list_messages(site.site.id, conversation.id, after_seq=0)
    assert greeting.sender_kind == "bot" and "您好" in greeting.text

    assert await service.hand_off(conversation, "visitor asked for a human", "support")
    queued = await storage.get_conversation(site.site.id, conversation.id)
    assert queued.department is None and queued.meta["requested_department"] == "support"
