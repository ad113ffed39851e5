"""kefu-greeter: a complete third-party plugin in one module.

It shows the four things most plugins do: declare a config section, add an
HTTP route, add a message pipeline step and listen to domain events; and one a
plugin under load should do: declare what may be shed (``kefu_degradation_features``).
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from kefu.core.types import DegradableFeature, PipelineReject, Processor
from kefu.hooks import hookimpl

__version__ = "0.2.0"


class GreeterSettings(BaseModel):
    """The ``[greeter]`` section of kefu.toml."""

    model_config = ConfigDict(extra="forbid")
    greeting: str = "Hello! How can we help?"
    blocked_words: list[str] = []


#: Events seen since start-up, by type (a real plugin would export metrics).
events_seen: Counter[str] = Counter()
#: False while the degradation plugin sheds the greeting route (level 2 and up).
hello_enabled = {"on": True}


@hookimpl
def kefu_config_schema():
    return {"greeter": GreeterSettings}


@hookimpl
def kefu_routes(kernel):
    async def hello(request: web.Request) -> web.Response:
        if not hello_enabled["on"]:  # shed under pressure: a cheap, polite refusal
            return web.json_response({"busy": True}, status=503, headers={"Retry-After": "5"})
        settings = kernel.config.section("greeter")
        return web.json_response({"greeting": settings.greeting})

    return [web.get("/greeter/hello", hello)]


@hookimpl
def kefu_pipeline_processors(kernel):
    # This runs for every message: the lowered words are kept until the settings change
    # (a reload gives a new section object), and a message without words costs nothing.
    lowered: list = [None, ()]  # [settings the words came from, their lowered forms]

    async def refuse_blocked(message, context):
        settings = kernel.config.section("greeter")
        if lowered[0] is not settings:
            lowered[:] = [settings, tuple(w.lower() for w in settings.blocked_words if w)]
        words = lowered[1]
        if words:
            text = str(getattr(message, "text", "") or "").lower()
            for word in words:
                if word in text:
                    raise PipelineReject("blocked_word", "this message contains a blocked word")
        return message

    return [Processor(name="greeter.blocked_words", priority=50, process=refuse_blocked)]


@hookimpl
def kefu_degradation_features(kernel):
    def switch(enabled: bool) -> None:
        hello_enabled["on"] = enabled

    return [
        DegradableFeature(
            "greeter.hello",
            priority=40,
            set_enabled=switch,
            level=2,
            description="GET /greeter/hello answers 503",
        )
    ]


@hookimpl
async def kefu_event(kernel, event):
    events_seen[event.type] += 1
