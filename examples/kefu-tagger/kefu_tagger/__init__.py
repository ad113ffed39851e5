"""kefu-tagger: a third-party plugin written from docs/plugins.md alone.

A message pipeline step that annotates the visitor messages mentioning a configured word
(``meta["topic"]``, which every client sees in the ``message`` frame), a ``[tagger]`` config
section, a REST endpoint for agents (``GET /v1/tagger/stats``) and a Prometheus counter
(``kefu_tagger_tagged_total``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from kefu.core.types import Processor, RestEndpoint
from kefu.hooks import hookimpl

__version__ = "0.1.0"


class TaggerSettings(BaseModel):
    """The ``[tagger]`` section of kefu.toml: every field has a default, typos are errors."""

    model_config = ConfigDict(extra="forbid")
    word: str = "refund"
    topic: str = "billing"


class Counts:
    """Per-kernel state (``kernel.plugin_state``), never a module global."""

    def __init__(self, kernel):
        self.tagged = 0


def counts(kernel) -> Counts:
    return kernel.plugin_state("tagger", Counts)


@hookimpl
def kefu_config_schema():
    return {"tagger": TaggerSettings}


@hookimpl
def kefu_pipeline_processors(kernel):
    async def tag(message, context):
        settings = kernel.config.section("tagger")  # read at use time: live reload works
        if settings.word.lower() in message.text.lower():
            message.meta["topic"] = settings.topic
            counts(kernel).tagged += 1
        return message

    # wants: a cheap test, so agents', bots' and attachment messages skip the step
    return [Processor("tagger.topic", 60, tag, wants=lambda m: m.sender_kind == "visitor")]


class TaggerStats(BaseModel):
    site_id: str
    tagged: int
    word: str


async def stats(call):
    # any valid token gets here, a visitor's too: let agents and admins only
    await call.require("conversation.list", call.site_id)
    word = call.kernel.config.section("tagger").word
    return TaggerStats(site_id=call.site_id, tagged=counts(call.kernel).tagged, word=word)


@hookimpl
def kefu_rest_endpoints(kernel):
    # method, path, operationId, summary, OpenAPI tag, handler; then keywords
    endpoint = RestEndpoint(
        "GET", "/v1/tagger/stats", "taggerStats", "Messages tagged so far", "tagger", stats,
        response=TaggerStats,
    )  # fmt: skip
    return [endpoint]


@hookimpl
def kefu_stats(kernel):
    return {"tagger_tagged_total": counts(kernel).tagged}
