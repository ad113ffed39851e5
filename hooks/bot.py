"""Bot hooks: engines that answer visitors and actions that flows can call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from kefu.core.domain import Conversation, Message
    from kefu.core.kernel import Kernel
    from kefu.core.types import BotReply, GeneratedAnswer, KnowledgeAnswer, TextEncoder


@hookspec
def kefu_bot_reply(
    kernel: Kernel, conversation: Conversation, message: Message
) -> MaybeAwaitable[BotReply | None]:
    """Answer a visitor message in a conversation that a bot holds.

    Called for every stored visitor message while the conversation is in the
    bot state; the first non-None answer wins.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param conversation: the conversation record.
    :param message: the stored visitor message.
    :returns: a :class:`kefu.core.types.BotReply` (texts to send, optional
        handoff with a reason), or None to let other plugins answer. May be async.
    """


@hookspec
def kefu_bot_actions() -> dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] | None:
    """Contribute actions that dialogue flows may call by name.

    :returns: a dict mapping an action name (``"order_lookup"``) to an async
        callable ``action(context: dict) -> dict`` whose result is merged into
        the dialogue's slots, or None. Sync only.
    """


@hookspec
def kefu_bot_takes(kernel: Kernel, conversation: Conversation) -> MaybeAwaitable[bool | None]:
    """Decide whether a bot answers a new conversation first.

    Called by the gateway before it stores a conversation a visitor starts.
    A conversation a bot takes starts in the ``bot`` state and is not routed
    until the bot hands it off (``bot.handoff``, then ``conversation.queued``).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param conversation: the conversation record about to be stored.
    :returns: True to start it with the bot, False to refuse, or None to let
        other plugins answer (no answer: it is queued for routing). May be async.
    """


@hookspec
def kefu_bot_serves(kernel: Kernel, site_id: str) -> MaybeAwaitable[bool | None]:
    """Say whether a bot answers the new conversations of a site now.

    Asked by clients' "is anyone there?" answers (the widget's config,
    ``GET /v1/widget/config``): a visitor of a site a bot serves starts a chat
    even when no agent is online, and the leave-a-message form is kept for
    sites with neither; after a handoff the usual queue answers apply. The
    answer should agree with ``kefu_bot_takes`` for the site's new conversations.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the site's id.
    :returns: True when a bot serves the site, False when it does not, or None
        to let other plugins answer (no answer: no bot). May be async.
    """


@hookspec
def kefu_bot_knowledge(
    kernel: Kernel, site_id: str, question: str, lang: str
) -> MaybeAwaitable[KnowledgeAnswer | None]:
    """Answer a visitor question that no intent of the bot's flow covers from help articles.

    Called by the bot when a turn would fall back ("sorry, I did not understand");
    a knowledge-base plugin answers with its best passage when it is confident.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the conversation's site.
    :param question: the visitor's message text.
    :param lang: the visitor's language (``"zh"`` or ``"en"``), for the citation wording.
    :returns: a :class:`kefu.core.types.KnowledgeAnswer`, or None when unsure (the bot
        then falls back / hands over as its flow says). May be async.
    """


@hookspec
def kefu_bot_passages(
    kernel: Kernel, site_id: str, question: str, lang: str, limit: int
) -> MaybeAwaitable[list[KnowledgeAnswer] | None]:
    """Find the help-article passages that best match a question, best first.

    Called by the bot before it asks a generative provider (``kefu_bot_generate``)
    to compose an answer, once ``kefu_bot_knowledge`` was confident; unlike that
    hook it answers the next-best passages too, with no confidence threshold.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the conversation's site.
    :param question: the visitor's message text.
    :param lang: the visitor's language (``"zh"`` or ``"en"``).
    :param limit: how many passages at most.
    :returns: a list of :class:`kefu.core.types.KnowledgeAnswer`, or None to let other
        plugins answer (no answer: the bot uses the one ``kefu_bot_knowledge`` found).
        May be async.
    """


@hookspec
def kefu_bot_text_encoders(kernel: Kernel) -> list[TextEncoder] | None:
    """Offer sentence-embedding models to other plugins, one per language.

    Called (synchronously, cheaply: load nothing here) by a plugin that ranks texts by
    meaning, such as the knowledge base when it builds a site's index; every plugin's
    encoders are collected and, per language, the one of the lowest ``priority`` is
    used.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.TextEncoder` (each loads its model on its
        first ``encode``), or None when this plugin has none. Sync only.
    """


@hookspec
def kefu_bot_generate(
    kernel: Kernel,
    site_id: str,
    question: str,
    passages: Sequence[KnowledgeAnswer],
    lang: str,
    on_text: Callable[[str], Awaitable[None]],
) -> MaybeAwaitable[GeneratedAnswer | None]:
    """Compose an answer to a visitor question from help-article passages only (a model).

    Called by the bot, in its turn's background task (never on the sender's path),
    when the knowledge base found passages for a question no intent covers; without
    an answer the bot sends the best passage as it is. An implementation must bound
    its own time and cost: the bot's turn waits for it.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param site_id: the conversation's site (budgets are per site).
    :param question: the visitor's message text.
    :param passages: the passages to answer from, best first, numbered ``[1]``... in
        the order given.
    :param lang: the visitor's language (``"zh"`` or ``"en"``).
    :param on_text: ``await on_text(text)`` with the answer's whole text so far, each
        time it grows (the bot streams it to the widget as ``bot_draft`` frames); never
        call it with a refusal's text.
    :returns: a :class:`kefu.core.types.GeneratedAnswer` (its text and the passages it
        cites, or ``refused``: the passages do not answer, the bot hands over), or None
        when this provider does not answer now (not configured for the site, busy,
        over budget, timed out, failed): other plugins may answer, then the bot answers
        with the best passage. May be async.
    """
