"""One exporter per kernel: its own registry, the collector that reads everything at scrape
time, and the ``GET /metrics`` handler."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder
from prometheus_client.metrics_core import Metric

from kefu.core.web_app import bearer_token, error_response
from kefu.plugins.metrics_prometheus.cluster import ClusterMetrics
from kefu.plugins.metrics_prometheus.families import Families
from kefu.plugins.metrics_prometheus.probe import LoopLagProbe
from kefu.plugins.metrics_prometheus.series import DomainSeries
from kefu.plugins.metrics_prometheus.settings import MetricsSettings

log = logging.getLogger(__name__)

SOURCE = "metrics_prometheus"
PRINCIPAL_KINDS = ("visitor", "agent")


class KernelCollector:
    """A prometheus-client collector: the kernel's counters and every ``kefu_stats`` answer."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.families = Families()

    def describe(self) -> list[Metric]:
        return []  # names depend on the plugins; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        exporter, kernel = self.exporter, self.exporter.kernel
        answers = kernel.hooks.stats()  # first: a plugin failing here is counted just below
        own = exporter.series.snapshot()
        own["hook_failures_total"] = {
            (("plugin", plugin), ("hook", hook)): n
            for (plugin, hook), n in kernel.failures.counts.items()
        }
        own["config_reload_failures_total"] = kernel.reload_failures
        if exporter.probe is not None:
            own.update(exporter.probe.snapshot())
        seen: dict[str, str] = {}
        yield from self.families.convert(SOURCE, own, seen)
        for plugin, stats in answers:
            yield from self.families.convert(plugin, stats, seen)


class Exporter:
    """Everything the plugin holds for one kernel (two kernels in a process never share)."""

    def __init__(self, kernel: Any) -> None:
        settings: MetricsSettings = kernel.config.section("metrics")
        self.kernel = kernel
        self.settings = settings
        self.series = DomainSeries(settings.latency_buckets_s, settings.wait_buckets_s)
        self.probe: LoopLagProbe | None = None
        self.cluster: ClusterMetrics | None = None
        self.registry = CollectorRegistry()
        self.registry.register(KernelCollector(self))
        if settings.process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    async def start(self) -> None:
        transports = [t.name for t in self.kernel.hooks.transport_adapters()]
        self.series.known_transports(transports, PRINCIPAL_KINDS)
        s = self.settings
        if s.loop_lag_probe:
            self.probe = LoopLagProbe(
                s.loop_lag_interval_s, s.loop_lag_window_s, s.latency_buckets_s
            )
            self.probe.start()
        bus = self.kernel.bus
        if bus is not None and bus.name != "memory":  # several processes share the bus
            self.cluster = ClusterMetrics(self.kernel, self.registry, s.cluster_interval_s)
            self.cluster.start()

    async def stop(self) -> None:
        if self.probe is not None:
            await self.probe.stop()
        if self.cluster is not None:
            await self.cluster.stop()

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the text exposition format, or OpenMetrics when asked for."""
        token = self.settings.token
        if token is not None:
            given = bearer_token(request) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error_response(401, "invalid_token", "a valid metrics token is required")
        if self.cluster is not None:  # every worker's series, labelled (text format)
            body = await self.cluster.exposition()
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})
