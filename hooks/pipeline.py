"""Message pipeline hooks: processors that run before a message is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kefu.hooks import hookspec

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel
    from kefu.core.types import Processor


@hookspec
def kefu_pipeline_processors(kernel: Kernel) -> list[Processor] | None:
    """Contribute message processors.

    Called once at start-up (and again after a live configuration change);
    the collected processors run for every message before it is stored,
    whoever sent it (a visitor, an agent, a bot or the system: look at
    ``message.sender_kind``), in ascending ``priority`` order (ties broken
    by name), never in plugin registration order. Each is awaited as
    ``process(message, context)``: ``message`` is the
    :class:`kefu.core.domain.Message` (``text``, ``type``, ``attachment``,
    ``meta``, ``sender_kind``, ``sender_id``, ``conversation_id``,
    ``site_id``, ``cid``) and ``context`` a dict with ``kernel``,
    ``conversation`` (the :class:`kefu.core.domain.Conversation`),
    ``principal`` (the sender's :class:`kefu.core.types.Principal`) and
    ``connection`` (the sender's connection, None for a message that did
    not come over one). A processor returns the message, modified or not
    (None keeps it as it is; the identity fields ``site_id``,
    ``conversation_id``, ``cid`` and the sender cannot be changed), may
    annotate it in ``message.meta`` (stored, and sent to clients as the
    ``message`` frame's ``meta``), or raises
    :class:`kefu.core.types.PipelineReject` ``(code, message)`` to refuse
    it: nothing is stored, a ``message.rejected`` event is emitted and the
    sender receives an ``error`` frame with code ``rejected`` and
    ``reason`` set to that code (a REST sender: 422 ``rejected``).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.Processor`, or None. Sync only.
    """
