"""Languages of the console and admin pages.

Texts are written in English in the templates (``{{ _("Queued") }}``) and the scripts
(``tr("Queued")``); ``static/i18n/<lang>.json`` maps each English text to its
translation, one table for both (tests/test_web_i18n.py fails on a text missing from it).
A page's language is the agent's own setting (*Profile* in the console), else the
browser's ``Accept-Language`` (``zh*`` -> ``zh-CN``), else English.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import orjson

CATALOGS = Path(__file__).resolve().parent / "static" / "i18n"
#: Page languages besides English (the code's own), each with its table.
LANGUAGES = ("en", "zh-CN")
LANGUAGE_NAMES = {"en": "English", "zh-CN": "中文"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    if lang == "en" or lang not in LANGUAGES:
        return {}
    return orjson.loads((CATALOGS / f"{lang}.json").read_bytes())


def translator(lang: str) -> Callable[..., str]:
    """``_(text, **values)``: the text in ``lang`` with ``{name}`` filled in."""
    table = catalog(lang)

    def translate(text: str, **values: object) -> str:
        found = table.get(text, text)
        if not values:
            return found
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), found)

    return translate


def from_header(accept_language: str | None) -> str:
    """The first supported language of an ``Accept-Language`` header, by weight."""
    ranked = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        ranked.append((-weight, i, tag.strip().lower()))
    for _weight, _i, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


def choose(setting: str | None, accept_language: str | None) -> str:
    """The agent's setting when it names a language, else the browser's."""
    return setting if setting in LANGUAGES else from_header(accept_language)
