"""Domain events: the one notification hook every listener uses."""

from kefu.hooks import hookspec


@hookspec
def kefu_event(kernel, event):
    """Observe a domain event.

    Emitted after the fact, for example ``message.stored``,
    ``conversation.queued``, ``conversation.assigned``,
    ``conversation.transferred``, ``conversation.resolved``,
    ``agent.presence``, ``pressure.level_changed``, ``bot.handoff``,
    ``config.reloaded``. Metrics, webhooks and analytics are plugins that
    listen here.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param event: a :class:`kefu.core.types.Event` (``type``, ``site_id``,
        ``data``, ``ts``).
    :returns: None. May be async. Every implementation is isolated: one that
        raises is logged with its plugin name and counted, and the others
        still run. Listeners must be quick; slow work belongs in a task.
    """
