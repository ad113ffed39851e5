"""A site's own generative-answer settings (*Admin → Generative answers*, REST
``/v1/llm/settings``): whether the site's bot composes answers, and its model server,
key, model, answer length, temperature and token budget, over the ``[llm_openai]``
defaults of ``kefu.toml``. Stored as one record (kind ``llm.settings``, id ``provider``)
behind the storage interface. The key is write-only: no answer ever holds it, only
whether one is set and where it comes from. The install's bounds (timeouts, concurrent
answers, prompt size) stay in ``kefu.toml``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

KIND = "llm.settings"
RECORD_ID = "provider"
URL_PATTERN = r"^https?://[^/?#@\s]+(/[^\s?#]*)?$"
#: What a site may set; everything else is the install's.
SITE_FIELDS = ("enabled", "base_url", "api_key", "model", "max_tokens", "temperature",
               "budget_tokens", "budget_window")  # fmt: skip
#: Seconds a site's record is reused by the provider before it is read again (a change
#: through this process is seen at once).
CACHE_S = 5.0


class SiteSettingsIn(BaseModel):
    """A change: the fields given are set, ``null`` goes back to the install's value."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = Field(None, description="The site's bot composes answers; null: "
                                 "as `[llm_openai] sites` says")  # fmt: skip
    base_url: Annotated[str, StringConstraints(max_length=500, pattern=URL_PATTERN)] | None = None
    api_key: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None, description="Write-only. Omit to keep the key; null or empty: the install's key."
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    max_tokens: int | None = Field(None, ge=16, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    budget_tokens: int | None = Field(None, ge=0)
    budget_window: Literal["hour", "day"] | None = None


class Bounds(BaseModel):
    """The install's limits (``kefu.toml``), shown, not changed here."""

    connect_timeout_s: float
    idle_timeout_s: float
    timeout_s: float
    max_passages: int
    max_passage_chars: int
    max_concurrent: int


class SiteSettingsOut(BaseModel):
    """What the site's bot uses now; never the key itself."""

    enabled: bool
    base_url: str
    model: str
    max_tokens: int
    temperature: float
    budget_tokens: int
    budget_window: str
    api_key_set: bool
    #: ``"site"`` (set on this page), ``"config"`` (kefu.toml / environment) or null
    api_key_from: Literal["site", "config"] | None
    #: the fields this site set itself (the others are the install's)
    overridden: list[str]
    #: tokens spent in the current budget window
    spent_tokens: int
    bounds: Bounds


def merged(install: Any, site_id: str, overrides: dict[str, Any]) -> Any:
    """The ``[llm_openai]`` settings with the site's own values in place."""
    update = {k: v for k, v in overrides.items() if k in SITE_FIELDS and k != "enabled"}
    return install.model_copy(update=update)


def enabled_for(install: Any, site_id: str, overrides: dict[str, Any]) -> bool:
    if isinstance(overrides.get("enabled"), bool):
        return overrides["enabled"]
    return not install.sites or site_id in install.sites


class SiteSettings:
    """The sites' records, cached for :data:`CACHE_S`."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def overrides(self, site_id: str) -> dict[str, Any]:
        cached = self._cache.get(site_id)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        storage = self.kernel.storage
        record = await storage.get_record(site_id, KIND, RECORD_ID) if storage else None
        data = dict(record.data) if record is not None else {}
        self._cache[site_id] = (time.monotonic(), data)
        return data

    async def change(self, site_id: str, change: SiteSettingsIn) -> dict[str, Any]:
        data = dict(await self.overrides(site_id))
        for name in change.model_fields_set:
            value = getattr(change, name)
            if value is None or (name == "api_key" and value == ""):
                data.pop(name, None)
            else:
                data[name] = value
        await self.kernel.storage.put_record(site_id, KIND, RECORD_ID, data)
        self._cache[site_id] = (time.monotonic(), data)
        return data


def shown(install: Any, site_id: str, overrides: dict[str, Any], spent: int) -> SiteSettingsOut:
    s = merged(install, site_id, overrides)
    key_from = "site" if overrides.get("api_key") else ("config" if install.api_key else None)
    return SiteSettingsOut(
        enabled=enabled_for(install, site_id, overrides),
        base_url=s.base_url,
        model=s.model,
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        budget_tokens=s.budget_tokens,
        budget_window=s.budget_window,
        api_key_set=key_from is not None,
        api_key_from=key_from,
        overridden=sorted(k for k in overrides if k in SITE_FIELDS),
        spent_tokens=spent,
        bounds=Bounds(**{k: getattr(install, k) for k in Bounds.model_fields}),
    )
