"""Intent recognition for the bot, in English, Chinese and other languages.

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
"""

from __future__ import annotations

from kefu.hooks import hookimpl

__version__ = "0.1.0"


@hookimpl
def kefu_cli_commands():
    """``kefu bot`` with its sub-commands (``kefu bot eval``)."""
    from kefu.plugins.bot_intents.cli import bot_command

    return [bot_command()]
