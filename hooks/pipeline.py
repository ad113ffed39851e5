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
    the collected processors run for every inbound message before it is
    stored, in ascending ``priority`` order (ties broken by name), never in
    plugin registration order. A processor may return a modified message,
    add annotations, or raise :class:`kefu.core.types.PipelineReject` with a
    machine-readable code to refuse it; the sender then receives an error
    frame and nothing is stored.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.Processor`, or None. Sync only.
    """
