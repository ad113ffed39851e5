"""Domain events: the one notification hook every listener uses; and plugin statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel
    from kefu.core.stats import Labels
    from kefu.core.types import Event


@hookspec
def kefu_event(kernel: Kernel, event: Event) -> MaybeAwaitable[None]:
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
        Decorate the implementation with ``kefu.hooks.listens_to(*types)`` to be
        called for those types only (``"conversation.*"`` for a prefix): an
        event of another type then costs the plugin nothing.
    """


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


@hookspec
def kefu_stats(
    kernel: Kernel,
) -> dict[str, float | dict[str, Any] | dict[Labels, float | dict[str, Any]]] | None:
    """Report the plugin's internal statistics, read when metrics are collected.

    Called by a metrics plugin (the built-in ``metrics_prometheus`` on every
    scrape of ``GET /metrics``), never on a hot path: keep plain integer
    counters where the work happens (:class:`kefu.core.stats.Histogram` for
    distributions) and only read them here. Nothing calls this hook while no
    metrics plugin is enabled. Names are exported with the ``kefu_`` prefix;
    a name ending in ``_total`` is a counter (it never decreases), any other
    plain number is a gauge.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a dict mapping a metric name (``[a-z_][a-z0-9_]*``, unique
        across plugins) to a number, to a histogram
        (:meth:`kefu.core.stats.Histogram.snapshot`: ``{"buckets":
        [(upper_bound, cumulative_count), ..., (inf, count)], "sum": s,
        "count": n}``), or to a dict mapping a label tuple (label name and
        value pairs, the same names in every key, e.g.
        ``(("op", "send"),)``) to either of those; or None. Sync only. An
        implementation that raises is logged with its plugin name and
        counted in ``kernel.failures``; the other plugins' statistics are
        still exported.
    """
