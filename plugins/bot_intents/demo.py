"""What the embedded default (``kefu run`` with no config) brings so that the demo site has
a bot at once: the example flow shipped in this package (``shop.yaml``, the same file as
``examples/flows/shop.yaml``) and a demo ``order_lookup`` action.

The demo action answers with made-up data; a plugin that provides its own ``order_lookup``
(``kefu_bot_actions``) replaces it, and ``[bot] demo_actions = false`` removes it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from kefu.core.config import DEFAULT_SOURCE

HERE = Path(__file__).resolve().parent
#: The example flow, packaged: served by the embedded default.
DEMO_FLOW = str(HERE / "shop.yaml")
#: The example's ``[bot]`` config (docs/bot.md): the campaigns and segment it names.
DEMO_CONFIG = HERE / "demo.toml"

_STATUS = {
    "en": "shipped yesterday, arriving in 2 days (demo data)",
    "zh": "昨天已发货，预计 2 天后送达（演示数据）",  # noqa: RUF001
}


async def order_lookup(context: dict[str, Any]) -> dict[str, Any]:
    """A demo order status in the dialogue's language."""
    return {"status": _STATUS.get(context.get("language", "en"), _STATUS["en"])}


DEMO_ACTIONS = {"order_lookup": order_lookup}


def bot_settings(kernel: Any) -> Any:
    """``[bot]`` in force: with no config file at all (``kefu run`` as it comes), the
    example's, serving the packaged example flow; else the config's."""
    settings = kernel.config.section("bot")
    if settings.flows or kernel.config.source != DEFAULT_SOURCE:
        return settings
    section = tomllib.loads(DEMO_CONFIG.read_text(encoding="utf-8"))["bot"]
    return type(settings)(**{**section, "flows": [DEMO_FLOW], "watch": False})


def actions_of(kernel: Any) -> dict[str, Any]:
    """The actions flows may use: the plugins' ones, over the demo ones when enabled."""
    installed = kernel.hooks.bot_actions()
    if not kernel.config.section("bot").demo_actions:
        return installed
    return {**DEMO_ACTIONS, **installed}
