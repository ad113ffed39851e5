"""The ``[bot]`` section of kefu.toml.

Example::

    [bot]
    flows = ["flows/shop.yaml"]   # flow files (relative to the config file's folder)
    watch = true                  # reload a flow file when it changes
    timezone = "Asia/Shanghai"    # of hours/weekdays conditions (docs/bot.md, Dynamic replies)

    [bot.segments]                # conditions over visitor attributes
    vip = {tier = ["gold", "platinum"]}

    [[bot.campaigns]]             # a calendar of named windows [start, end)
    name = "black_friday"
    start = 2026-11-27T00:00:00+08:00
    end = 2026-12-01T00:00:00+08:00
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from kefu.core.config import Section


class CampaignSettings(Section):
    """One ``[[bot.campaigns]]`` entry: active from ``start`` (inclusive) to ``end``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    start: datetime
    end: datetime
    #: for ``start``/``end`` written without an offset (an IANA name, e.g. Asia/Shanghai)
    timezone: str | None = None
    #: only these sites (default: every site)
    sites: list[str] = Field(default_factory=list, max_length=256)
    #: only visitors in one of these segments (default: everyone)
    segments: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _window(self) -> CampaignSettings:
        if self.timezone is not None:
            ZoneInfo(self.timezone)  # raises for an unknown zone
        if (self.start.tzinfo is None or self.end.tzinfo is None) and self.timezone is None:
            raise ValueError(
                f"campaign {self.name!r}: give start and end an offset (+08:00) or a timezone"
            )
        if self.end_at() <= self.start_at():
            raise ValueError(f"campaign {self.name!r}: end must be after start")
        return self

    def _aware(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            return moment.replace(tzinfo=ZoneInfo(self.timezone or "UTC"))
        return moment

    def start_at(self) -> datetime:
        return self._aware(self.start)

    def end_at(self) -> datetime:
        return self._aware(self.end)


class BotSettings(Section):
    """Dialogue flows the bot serves; a live change loads added files (the files themselves
    reload live when watched); ``training_processes`` needs a restart."""

    #: Flow files (YAML, docs/bot.md). A conversation of a site that an active flow serves
    #: starts with the bot; with none, conversations go straight to routing.
    flows: list[str] = Field(default_factory=list, max_length=64)
    #: Watch the flow files: a change is checked, compiled and swapped in; an invalid
    #: file is refused (logged, counted in ``kefu_stats``) and the last good version stays.
    watch: bool = True
    #: The demo ``order_lookup`` action of the example flow (made-up order statuses) when
    #: no plugin provides one; set false in production (docs/bot.md, The example).
    demo_actions: bool = True
    #: Worker processes that train intent classifiers (0: a thread of the event loop's pool).
    training_processes: int = Field(0, ge=0, le=8)
    #: Sentence embeddings for the intent classifier: ``auto`` (the installed
    #: all-MiniLM-L6-v2, for flows whose examples are mostly in Latin script), ``none``
    #: (n-grams only) or a folder with a sentence-transformers BERT model (always used).
    embedding_model: str = "auto"
    #: Transformer blocks of the embedding model to run (0: all).
    embedding_layers: int = Field(3, ge=0, le=48)
    #: Time zone of ``hours`` and ``weekdays`` conditions (an IANA name).
    timezone: str = "UTC"
    #: Named campaigns (``when: {campaign: NAME}``); names must be unique.
    campaigns: list[CampaignSettings] = Field(default_factory=list, max_length=256)
    #: Segments: name -> conditions over visitor attributes (``when: {segment: NAME}``).
    segments: dict[str, dict[str, Any]] = Field(default_factory=dict, max_length=256)
    #: A/B tests: exposures older than this do not convert any more (seconds).
    conversion_window_s: float = Field(7 * 86400, gt=0)
    #: ``track`` frames a visitor may send per minute (more are refused, ``rate_limited``).
    track_per_minute: int = Field(30, ge=1, le=600)

    @field_validator("embedding_model")
    @classmethod
    def _model(cls, value: str) -> str:
        from kefu.plugins.bot_intents.embeddings import EmbeddingModelError, resolve_model_dir

        try:
            resolve_model_dir(value)  # a folder without the model's files is an error now
        except EmbeddingModelError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("campaigns")
    @classmethod
    def _unique(cls, value: list[CampaignSettings]) -> list[CampaignSettings]:
        names = [c.name for c in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"campaign names must be unique: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _campaign_segments(self) -> BotSettings:
        for campaign in self.campaigns:
            unknown = [s for s in campaign.segments if s not in self.segments]
            if unknown:
                raise ValueError(f"campaign {campaign.name!r}: no segment {unknown[0]!r}")
        return self

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from kefu.plugins.bot_intents.strategy import ConditionError, check_value_spec

        for name, wanted in value.items():
            if not wanted:
                raise ValueError(f"segment {name!r}: give at least one attribute condition")
            for attribute, spec in wanted.items():
                try:
                    check_value_spec(spec, f"segment {name!r} attribute {attribute!r}")
                except ConditionError as exc:
                    raise ValueError(str(exc)) from None
        return value
