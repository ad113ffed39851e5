"""The ``[metrics]`` section of kefu.toml. Read at start-up: a change needs a restart."""

from __future__ import annotations

from pydantic import Field, field_validator

from kefu.core.config import Section

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5]
WAIT_BUCKETS_S = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]


class MetricsSettings(Section):
    """Where the Prometheus endpoint is served and what it measures."""

    #: Path of the exposition endpoint (text format; OpenMetrics when the scraper asks).
    path: str = Field("/metrics", pattern=r"^/[A-Za-z0-9_./-]*$")
    #: When set, scrapers must send ``Authorization: Bearer <token>``; give it as
    #: ``{ env = "NAME" }``. Unset: the endpoint is open to whoever reaches the port.
    token: str | None = Field(None, min_length=16)
    #: Measure event-loop lag: a small task sleeps and records how late it wakes up.
    loop_lag_probe: bool = True
    #: Seconds between two loop-lag probes.
    loop_lag_interval_s: float = Field(0.1, ge=0.01, le=10)
    #: The ``kefu_event_loop_lag_max_seconds`` gauge covers at least the last half of this.
    loop_lag_window_s: float = Field(60.0, ge=1, le=3600)
    #: Process CPU, memory, file descriptors and Python GC series (``process_*``, ``python_*``).
    process_metrics: bool = True
    #: With a bus shared by several processes (the Redis bus): seconds between two
    #: publications of this worker's series, which any worker's endpoint answers with a
    #: ``worker`` label. The in-process bus: each process answers its own only.
    cluster_interval_s: float = Field(5.0, ge=0.5, le=300)
    #: Bucket upper bounds (seconds) of the ack-latency and loop-lag histograms.
    latency_buckets_s: list[float] = Field(default_factory=lambda: list(LATENCY_BUCKETS_S))
    #: Bucket upper bounds (seconds) of the routing wait histogram.
    wait_buckets_s: list[float] = Field(default_factory=lambda: list(WAIT_BUCKETS_S))

    @field_validator("latency_buckets_s", "wait_buckets_s")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if not value or any(b <= 0 for b in value) or value != sorted(set(value)):
            raise ValueError("bucket bounds must be positive, ascending and distinct")
        return value
