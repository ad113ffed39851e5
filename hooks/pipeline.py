"""Message pipeline hooks: processors that run before a message is stored."""

from kefu.hooks import hookspec


@hookspec
def kefu_pipeline_processors(kernel):
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
