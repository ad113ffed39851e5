"""The ``[webhooks]`` section of kefu.toml.

Example::

    [webhooks]
    max_attempts = 10        # then the delivery goes to the dead-letter list
    backoff_base_s = 5       # 5 s, 10 s, 20 s, ... (with jitter) up to backoff_max_s
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section


class WebhooksSettings(Section):
    """How outgoing webhooks are delivered (subscriptions are per site, in storage)."""

    #: Attempts of one delivery before it goes to the dead-letter list.
    max_attempts: int = Field(10, ge=1, le=100)
    #: The wait after the first failure; it doubles at each failure, up to ``backoff_max_s``,
    #: and each wait is drawn between half of it and all of it (jitter).
    backoff_base_s: float = Field(5.0, gt=0, le=3600)
    backoff_max_s: float = Field(3600.0, gt=0, le=86400)
    #: One attempt's time limit (connect, send, answer).
    timeout_s: float = Field(10.0, gt=0, le=300)
    #: How often each process looks for due deliveries (also woken at once when it queues one).
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    #: How long a process holds a delivery it is attempting (others skip it meanwhile).
    lease_s: float = Field(60.0, gt=0, le=3600)
    #: Attempts in flight at once per process (different conversations or subscriptions).
    concurrency: int = Field(16, ge=1, le=1000)
    #: Delivered entries kept per subscription in the delivery log (dead letters are kept
    #: until resent or deleted).
    log_keep: int = Field(200, ge=1, le=100_000)
    #: How often the subscriptions are read again from storage (changes made on this
    #: process apply at once; those made on another within this time).
    refresh_s: float = Field(5.0, gt=0, le=3600)
    #: Events waiting to be written to the queue; past it new ones are dropped and counted.
    buffer: int = Field(100_000, ge=100)
