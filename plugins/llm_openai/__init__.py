"""Generative answers from an OpenAI-compatible chat API (the company's own model server,
or a hosted one): ``kefu_bot_generate`` composes the bot's answer from the knowledge
base's passages only, citing them, or refuses (the bot hands over). Disabled by default;
enable it with ``[plugins] enable = ["kefu.plugins.llm_openai"]`` and a
``[llm_openai]`` table (docs/bot.md, "Generative answers (providers)").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kefu.core.errors import ApiError
from kefu.core.types import DegradableFeature, RestEndpoint
from kefu.hooks import hookimpl
from kefu.plugins.llm_openai.provider import Provider
from kefu.plugins.llm_openai.site_settings import SiteSettingsIn, SiteSettingsOut, merged, shown

STATE = "llm_openai"
URL_PATTERN = r"^https?://[^/?#@\s]+(/[^\s?#]*)?$"


class LlmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The API's base: ``{base_url}/chat/completions`` is POSTed (``.../v1`` for most).
    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=URL_PATTERN)
    #: Sent as ``Authorization: Bearer``; give it as ``{ env = "NAME" }`` or
    #: ``KEFU_LLM_OPENAI__API_KEY``, not in the file. Empty: no header (a local server).
    api_key: str = Field("", repr=False)
    model: str = Field("gpt-4o-mini", min_length=1)
    #: Sites whose bot answers this way; empty: every site.
    sites: list[str] = []
    connect_timeout_s: float = Field(3.0, gt=0, le=30)
    #: Seconds without a byte from the server at most: before the answer starts (the
    #: model reading the prompt) and between two chunks of the stream.
    idle_timeout_s: float = Field(5.0, gt=0, le=25)
    #: Seconds for a whole answer; past it the bot answers with the best passage. Below
    #: the bot's 30 s turn lease, which the answer holds.
    timeout_s: float = Field(15.0, gt=0, le=25)
    #: The answer's length at most (``max_tokens`` of the request): its cost cap.
    max_tokens: int = Field(300, ge=16, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    max_passages: int = Field(3, ge=1, le=10)
    #: Characters of each passage sent at most (the prompt's cost cap).
    max_passage_chars: int = Field(1500, ge=100, le=20_000)
    #: Answers being composed at once in one process; one more is not queued.
    max_concurrent: int = Field(4, ge=1, le=256)
    #: Tokens (prompt and answer) a site may spend per ``budget_window``.
    budget_tokens: int = Field(200_000, ge=0)
    budget_window: Literal["hour", "day"] = "day"
    #: Ask for ``usage`` in the stream (``stream_options``); off for a server that refuses it.
    stream_usage: bool = True


def provider_of(kernel) -> Provider | None:
    return kernel.existing_plugin_state(STATE)


@hookimpl
def kefu_config_schema():
    return {"llm_openai": LlmSettings}


@hookimpl
async def kefu_startup(kernel):
    await kernel.plugin_state(STATE, Provider).start()


@hookimpl
async def kefu_shutdown(kernel):
    provider = kernel.drop_plugin_state(STATE)
    if provider is not None:
        await provider.stop()


@hookimpl
async def kefu_bot_generate(kernel, site_id, question, passages, lang, on_text):
    provider = provider_of(kernel)
    if provider is None:
        return None
    return await provider.generate(site_id, question, passages, lang, on_text)


@hookimpl
def kefu_degradation_features(kernel):
    def set_enabled(enabled: bool) -> None:
        provider = provider_of(kernel)
        if provider is not None:
            provider.enabled = enabled

    return [
        DegradableFeature(
            "llm_answers", 20, set_enabled, 2, "bot answers with the best passage, no model"
        )
    ]


async def _settings_of(call: Any, provider: Provider) -> SiteSettingsOut:
    install = provider.settings
    overrides = await provider.sites.overrides(call.site_id)
    window = merged(install, call.site_id, overrides).budget_window
    spent = await provider.budget.spent(call.site_id, window)
    return shown(install, call.site_id, overrides, spent)


def _provider(call: Any) -> Provider:
    provider = provider_of(call.kernel)
    if provider is None:
        raise ApiError(503, "not_started", "the provider is not running yet")
    return provider


async def get_settings(call: Any) -> SiteSettingsOut:
    await call.require("sites.manage", call.site_id)
    return await _settings_of(call, _provider(call))


async def patch_settings(call: Any) -> SiteSettingsOut:
    await call.require("sites.manage", call.site_id)
    provider = _provider(call)
    await provider.sites.change(call.site_id, call.body)
    return await _settings_of(call, provider)


@hookimpl
def kefu_rest_endpoints(kernel):
    return [
        RestEndpoint("GET", "/v1/llm/settings", "get_llm_settings",
                     "Read the site's generative-answer settings", "generative answers",
                     get_settings, response=SiteSettingsOut,
                     description="Admins of the site. What the bot uses now: the site's "
                     "own values over `[llm_openai]`; the API key never, only `api_key_set` "
                     "and where it comes from."),
        RestEndpoint("PATCH", "/v1/llm/settings", "patch_llm_settings",
                     "Change the site's generative-answer settings", "generative answers",
                     patch_settings, response=SiteSettingsOut, body=SiteSettingsIn,
                     description="Admins of the site. The fields given are set; `null` goes "
                     "back to the install's value; `api_key` is write-only (omit it to keep "
                     "the key, empty or null for the install's)."),
    ]  # fmt: skip


@hookimpl
def kefu_stats(kernel):
    provider = provider_of(kernel)
    return None if provider is None else provider.stats()
