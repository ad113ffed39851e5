"""The ``[bot]`` section of kefu.toml.

Example::

    [bot]
    flows = ["flows/shop.yaml"]   # flow files (relative to the config file's folder)
    watch = true                  # reload a flow file when it changes
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section


class BotSettings(Section):
    """Dialogue flows the bot serves; read at start-up (the files themselves reload live)."""

    #: Flow files (YAML, docs/bot.md). A conversation of a site that an active flow serves
    #: starts with the bot; with none, conversations go straight to routing.
    flows: list[str] = Field(default_factory=list, max_length=64)
    #: Watch the flow files: a change is checked, compiled and swapped in; an invalid
    #: file is refused (logged, counted in ``kefu_stats``) and the last good version stays.
    watch: bool = True
    #: Worker processes that train intent classifiers (0: a thread of the event loop's pool).
    training_processes: int = Field(0, ge=0, le=8)
