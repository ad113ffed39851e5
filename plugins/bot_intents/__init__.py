"""The bot: intent recognition and hot-reloadable dialogue flows.

Quick start::

    from kefu.plugins.bot_intents.classifier import train_in_executor

    clf = await train_in_executor(texts, intents)   # off the event loop
    clf = clf.with_threshold(0.3)
    answer = clf.predict("我的订单到哪了")            # IntentPrediction
    answer.intent        # "order_status", or None when out of scope
    answer.confidence    # softmax confidence in 0..1

Features are word 1-2 grams (one token per CJK character, so no word segmentation is
needed) plus ``char_wb`` 1-4 grams, TF-IDF weighted; the model is a linear SVM whose
scores go through a softmax with a fitted temperature. ``kefu bot eval --dataset PATH``
measures it on a CLINC-style or BANKING77-style dataset (see ``docs/bot.md``).

Flows (``[bot] flows``, YAML, ``docs/bot.md``) are checked (``kefu bot validate``),
compiled and swapped in live by :mod:`~kefu.plugins.bot_intents.service`; conversations
of a site an active flow serves start with the bot and are handed to routing.
"""

from __future__ import annotations

import weakref

from kefu.hooks import hookimpl

__version__ = "0.2.0"

_SERVICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Enrichments:
    """What the bot adds beyond its answer, switched off under pressure (degradation level
    2, through ``kefu_degradation_features``; docs/degradation.md): True while on.

    - ``kb_feedback``: the "Did this help?" question (and its Yes/No quick replies, and the
      conversation write that remembers it) after an answer from a help article; while
      shed the passage with its citation is the whole answer.
    - ``embeddings``: the sentence-embedding pass of the intent classifier (a BERT forward
      pass in a worker thread per visitor message); while shed the classifier scores its
      n-gram features alone.
    """

    __slots__ = ("embeddings", "kb_feedback")

    def __init__(self, _kernel=None) -> None:
        self.kb_feedback = self.embeddings = True


def enrichments(kernel) -> Enrichments:
    return kernel.plugin_state("bot.enrichments", Enrichments)


def service_of(kernel):
    """The running bot service of a kernel, None before start-up or without storage."""
    return _SERVICES.get(kernel)


@hookimpl
def kefu_cli_commands():
    """``kefu bot`` with its sub-commands (``eval``, ``validate``)."""
    from kefu.plugins.bot_intents.cli import bot_command

    return [bot_command()]


@hookimpl
def kefu_config_schema():
    from kefu.plugins.bot_intents.settings import BotSettings

    return {"bot": BotSettings}


@hookimpl
async def kefu_startup(kernel):
    if kernel.storage is None:
        return
    from kefu.plugins.bot_intents.service import BotService

    service = BotService(kernel)
    _SERVICES[kernel] = service
    await service.start()


@hookimpl
async def kefu_config_changed(kernel, section, old, new):
    service = _SERVICES.get(kernel)
    if section == "bot" and service is not None:
        await service.settings_changed(old, new)


@hookimpl
async def kefu_shutdown(kernel):
    service = _SERVICES.pop(kernel, None)
    if service is not None:
        await service.stop()


@hookimpl(trylast=True)
def kefu_bot_takes(kernel, conversation):
    service = _SERVICES.get(kernel)
    return True if service is not None and service.takes(conversation) else None


@hookimpl(trylast=True)
def kefu_bot_serves(kernel, site_id):
    service = _SERVICES.get(kernel)
    return True if service is not None and service.serves(site_id) else None


@hookimpl(trylast=True)
async def kefu_bot_reply(kernel, conversation, message):
    service = _SERVICES.get(kernel)
    return None if service is None else await service.reply(conversation, message)


@hookimpl
async def kefu_event(kernel, event):
    service = _SERVICES.get(kernel)
    if service is not None:
        await service.on_event(event)


@hookimpl
def kefu_rest_endpoints(kernel):
    from kefu.plugins.bot_intents.ab_api import make_ab_endpoints
    from kefu.plugins.bot_intents.api import make_endpoints
    from kefu.plugins.bot_intents.faq_api import make_faq_endpoints

    return (
        make_endpoints(service_of) + make_ab_endpoints(service_of) + make_faq_endpoints(service_of)
    )


@hookimpl
def kefu_transport_frame_handlers(kernel):
    """``track``: the widget's ``kefu.track(name, props)``, an A/B conversion (abtests.py)."""

    async def track(conn, frame):
        service = _SERVICES.get(kernel)
        if service is None:
            from kefu.core.errors import ApiError

            raise ApiError(503, "unavailable", "the bot is not running")
        return await service.ab.track(conn, frame)

    return {"track": track}


@hookimpl
def kefu_degradation_features(kernel):
    from kefu.core.types import DegradableFeature

    state = enrichments(kernel)

    def switch(name: str):
        return lambda enabled: setattr(state, name, bool(enabled))

    return [
        DegradableFeature(
            "bot_kb_feedback",
            30,
            switch("kb_feedback"),
            2,
            'no "Did this help?" after a help-article answer',
        ),
        DegradableFeature(
            "bot_embeddings",
            40,
            switch("embeddings"),
            2,
            "intents scored on n-grams only, no sentence-embedding pass; articles by words only",
        ),
    ]


@hookimpl
def kefu_bot_text_encoders(kernel):
    from kefu.plugins.bot_intents.text_encoders import text_encoders

    state = enrichments(kernel)
    return text_encoders(kernel, lambda: state.embeddings)


@hookimpl
def kefu_stats(kernel):
    service = _SERVICES.get(kernel)
    return None if service is None else service.stats()
