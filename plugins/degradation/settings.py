"""The ``[degradation]`` section of kefu.toml (docs/degradation.md "Tuning")."""

from __future__ import annotations

from pydantic import Field, field_validator

from kefu.core.config import Section
from kefu.core.pressure import MAX_LEVEL

Thresholds = tuple[float, float, float]


class SensorThresholds(Section):
    """Per sensor, the readings at which levels 1, 2 and 3 are entered (ascending; a
    very large number never enters that level). Each level is left again once every
    sensor reads below ``exit_ratio`` times its entry threshold."""

    #: Event-loop lag, ms: the smallest of the last three samples (one stall is not a load).
    loop_lag_ms: Thresholds = (40.0, 120.0, 400.0)
    #: Share of the time the loop thread could run (wall time less its run-queue wait)
    #: that it ran, over half a second: 1.0 is a saturated loop, whatever the machine.
    loop_busy: Thresholds = (0.85, 0.95, 1e9)
    #: Storage group-commit queue: the minimum time an item waited over one interval, ms
    #: (CoDel: above the target means a standing queue, not a burst).
    sojourn_ms: Thresholds = (25.0, 80.0, 250.0)
    #: Storage group commit: the delay no message escaped over half a second, ms (a
    #: batch's newest item's wait plus its commit, the minimum of five samples). Under
    #: group commit a message overload grows the batches and their commits, which
    #: ``sojourn_ms`` takes off as service: this is the sensor that sees it. Level 2 at
    #: the delivery SLO (50 ms): no message of half a second got through the store in it.
    store_ms: Thresholds = (20.0, 50.0, 200.0)
    #: A storage or bus batch's latency divided by its own recent minimum (the median of
    #: half a second). Level 1 only by default: a slow disk or database is helped little
    #: by shedding more and not at all by refusing visitors, and the queue it causes is
    #: the sojourn sensor's (on a shared machine SQLite commits read 20-130x their
    #: minimum at 100 msg/s, which held level 2 for minutes).
    batch_ratio: Thresholds = (8.0, 1e9, 1e9)
    #: Share of sampled connections whose outbox holds ``slow_outbox_frames`` or more.
    slow_consumers: Thresholds = (0.05, 0.15, 0.30)
    #: CPU of this process in cores (a worker is one thread: 1.0 is saturated).
    cpu: Thresholds = (0.92, 1e9, 1e9)
    #: Resident memory against ``rss_budget_mb``.
    rss: Thresholds = (0.80, 0.90, 0.97)
    #: Open file descriptors against the soft limit.
    fds: Thresholds = (0.70, 0.85, 0.95)
    #: Milliseconds spent in garbage collection over the last second.
    gc_ms_per_s: Thresholds = (150.0, 300.0, 600.0)
    #: New WebSocket and long-poll connections per second (this worker).
    handshakes_per_s: Thresholds = (300.0, 800.0, 1500.0)
    #: New visitor sessions per second (this worker).
    sessions_per_s: Thresholds = (200.0, 500.0, 1000.0)
    #: Readings other plugins report through ``kefu_degradation_pressure`` (0..1).
    plugin: Thresholds = (0.70, 0.85, 0.95)

    @field_validator("*")
    @classmethod
    def _ascending(cls, value: Thresholds) -> Thresholds:
        if list(value) != sorted(value) or value[0] <= 0:
            raise ValueError("three positive thresholds in ascending order (levels 1, 2, 3)")
        return value


class DegradationSettings(Section):
    """Sensing, levels and what is shed (docs/degradation.md)."""

    #: Seconds between two samples of the sensors (50-100 ms keeps detection under 1 s).
    interval_s: float = Field(0.1, ge=0.02, le=1.0)
    #: Consecutive samples above a level's threshold before it is entered (enter fast).
    enter_samples: int = Field(2, ge=1, le=50)
    #: Seconds every sensor must read below its exit threshold before stepping down one level.
    leave_s: float = Field(1.0, ge=0.1, le=600)
    #: Seconds a level is held at least once entered (no flapping).
    min_dwell_s: float = Field(1.5, ge=0, le=600)
    #: A level is left below this share of its entry thresholds (the hysteresis band).
    exit_ratio: float = Field(0.6, gt=0, lt=1)
    #: A level is left only once the inflow (frames received per second) is at most this
    #: share of what it was when the level was entered: calm readings under the same
    #: traffic mean the shedding works, not that the load went away (no oscillation).
    leave_inflow_ratio: float = Field(0.8, gt=0, le=1)
    #: ... or after this many seconds at the level on calm readings alone (a probe).
    probe_s: float = Field(90.0, ge=1, le=3600)
    #: A level re-entered within this many seconds of leaving it doubles the probe time,
    probe_max_s: float = Field(600.0, ge=1, le=86400)
    #: ... up to this (a calm re-entry resets it to ``probe_s``).
    flap_window_s: float = Field(30.0, ge=0, le=3600)
    #: A level re-entered within ``flap_window_s`` is held at least this long, doubled at
    #: each further re-entry (up to ``probe_max_s``; a calm entry resets it).
    flap_dwell_s: float = Field(10.0, ge=0, le=3600)
    #: Relative thresholds: these sensors' thresholds are scaled to the worker's own
    #: normal (levels.Baseline): level 1 at ``baseline_factor`` times an average of the
    #: reading over ``baseline_s`` seconds, never below the configured thresholds and at
    #: most ``baseline_max_scale`` times them. An empty list or ``baseline_s = 0``: the
    #: configured thresholds as they are.
    baseline_sensors: list[str] = Field(
        default_factory=lambda: ["sojourn_ms", "store_ms", "batch_ratio"]
    )
    baseline_s: float = Field(60.0, ge=0, le=3600)
    baseline_factor: float = Field(2.0, ge=1, le=100)
    baseline_max_scale: float = Field(4.0, ge=1, le=100)
    #: Loop-lag samples whose median is the reading (one stall is not a load).
    lag_window: int = Field(3, ge=1, le=50)
    #: Highest level the sensors may choose (an operator's override may go to 3 anyway).
    max_level: int = Field(MAX_LEVEL, ge=0, le=MAX_LEVEL)
    thresholds: SensorThresholds = SensorThresholds()
    #: Per feature name, the level at which it is shed instead of the one it declares
    #: (0: never shed it). Names: docs/degradation.md "What is shed".
    features: dict[str, int] = Field(default_factory=dict)
    #: Memory budget of one worker, MiB (0: 80 % of the machine's memory divided by the
    #: workers).
    rss_budget_mb: int = Field(0, ge=0)
    #: An outbox holding this many frames counts as a slow consumer.
    slow_outbox_frames: int = Field(64, ge=1)
    #: Connections looked at per outbox sample (a sample every fifth interval).
    outbox_sample: int = Field(2000, ge=10)
    #: Seconds in ``Retry-After`` of a refusal at level 2; level 3 doubles it; jittered
    #: by +-50 % so that refused clients do not come back together.
    retry_after_s: float = Field(5.0, ge=1, le=600)
    #: At level 2, new WebSocket handshakes (``GET /v1/ws``) this worker admits per second;
    #: beyond it ``503 busy`` with a jittered ``Retry-After`` before any work (0: no limit).
    #: A flood's handshakes cost the people already talking far more than a refusal.
    handshake_limit_per_s: float = Field(200.0, ge=0)
    #: At level 2, new visitor sessions (``POST /v1/visitors/session``) admitted per second
    #: (0: no limit); level 3 refuses both outright.
    session_limit_per_s: float = Field(200.0, ge=0)
    #: The burst both limits allow, in seconds of their rate (a token bucket this deep).
    limit_burst_s: float = Field(0.25, gt=0, le=10)
    #: At level 3, share of this worker's connections closed each second, slowest first
    #: (only those with ``slow_outbox_frames`` queued); they reconnect and resume.
    close_slowest_share: float = Field(0.01, ge=0, le=1)
    #: ... and at most this many per second.
    close_slowest_max: int = Field(100, ge=0)
    #: Longest manual override, seconds (``kefu degrade --for``).
    override_max_s: float = Field(3600.0, ge=1)
    #: Seconds between two reads of an override set by another worker.
    override_poll_s: float = Field(1.0, ge=0.1, le=60)

    @field_validator("features")
    @classmethod
    def _levels(cls, value: dict[str, int]) -> dict[str, int]:
        for name, level in value.items():
            if not 0 <= level <= MAX_LEVEL:
                raise ValueError(f"{name}: a level 0..{MAX_LEVEL} (0: never shed)")
        return value
