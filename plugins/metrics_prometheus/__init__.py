"""Prometheus exporter: ``GET /metrics`` in the text exposition format.

Series (all ``kefu_*``, listed in docs/metrics.md) come from three places:

- domain events (``kefu_event``) and the transport hooks, kept as plain counters
  by :class:`~kefu.plugins.metrics_prometheus.series.DomainSeries`;
- the kernel: hook failures, refused config reloads, event-loop lag (a probe
  task), plus prometheus-client's process and GC collectors;
- every plugin's ``kefu_stats`` answer (gateway frames and outboxes, storage
  group commits ...), read only when a scrape comes in.

Each kernel gets its own ``CollectorRegistry``; the process-wide default one is
never used. Disable the plugin (``[plugins] disable = ["metrics_prometheus"]``)
and the endpoint, the probe and every scrape-time read are gone. Settings:
``[metrics]`` (:class:`~kefu.plugins.metrics_prometheus.settings.MetricsSettings`).
"""

from __future__ import annotations

from aiohttp import web

from kefu.hooks import hookimpl
from kefu.plugins.metrics_prometheus.exporter import Exporter
from kefu.plugins.metrics_prometheus.settings import MetricsSettings


def exporter_of(kernel) -> Exporter:
    """The kernel's exporter, created on first use."""
    return kernel.plugin_state("metrics_prometheus", Exporter)


@hookimpl
def kefu_config_schema():
    return {"metrics": MetricsSettings}


@hookimpl
def kefu_routes(kernel):
    exporter = exporter_of(kernel)
    return [web.get(exporter.settings.path, exporter.handle, allow_head=False)]


@hookimpl
async def kefu_startup(kernel):
    await exporter_of(kernel).start()


@hookimpl
async def kefu_shutdown(kernel):
    # kept: connections closed later in the shutdown are still counted (and nothing is rebuilt)
    exporter = kernel.existing_plugin_state("metrics_prometheus")
    if exporter is not None:
        await exporter.stop()


@hookimpl
def kefu_event(kernel, event):
    exporter_of(kernel).series.on_event(event)


@hookimpl
def kefu_transport_connected(kernel, connection):
    exporter_of(kernel).series.connected(connection)


@hookimpl
def kefu_transport_disconnected(kernel, connection, reason):
    exporter_of(kernel).series.disconnected(connection, reason)
