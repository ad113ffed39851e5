"""The status page's message-rate counter (plugins/web/status.py)."""

from __future__ import annotations

import random

from kefu.plugins.web.status import MessageRate


def reference_rate(events: list[tuple[str, int]], site: str, window: int, now: int, keep: int):
    """What the counter must answer: a plain count of the kept, complete seconds."""
    seconds = [s for e_site, s in events if e_site == site]
    newest = max(seconds, default=now)  # the ring holds its newest second and `keep` before
    return sum(1 for s in seconds if s > newest - keep - 1 and now - window <= s < now) / window


def test_counts_the_complete_seconds_of_the_window_per_site():
    rate = MessageRate(keep_s=300)
    for ts in (1000.1, 1000.9, 1001.5, 1009.2, 1010.0):  # 1010 is the current second
        rate.add("s1", ts)
    rate.add("s2", 1005.0)
    assert rate.per_second("s1", 10, now=1010.5) == 4 / 10
    assert rate.per_second("s1", 1, now=1010.5) == 1 / 1  # only second 1009
    assert rate.per_second("s2", 10, now=1010.5) == 1 / 10
    assert rate.per_second("nobody", 10, now=1010.5) == 0.0
    assert rate.totals == {"s1": 5, "s2": 1}


def test_seconds_past_what_is_kept_leave_the_rate_but_not_the_total():
    rate = MessageRate(keep_s=300)
    rate.add("s1", 1000.0)
    rate.add("s1", 1200.0)
    assert rate.per_second("s1", 300, now=1250) == 2 / 300
    assert rate.per_second("s1", 300, now=1301) == 1 / 300  # second 1000 fell out
    rate.add("s1", 5000.0)  # a gap longer than the ring clears it
    assert rate.per_second("s1", 300, now=5001) == 1 / 300
    rate.add("s1", 4000.0)  # older than the ring keeps: counted in the total only
    assert rate.per_second("s1", 300, now=5001) == 1 / 300
    assert rate.totals["s1"] == 4


def test_late_events_inside_the_ring_are_counted_in_their_second():
    rate = MessageRate(keep_s=60)
    rate.add("s1", 1030.0)
    rate.add("s1", 1010.0)  # an event stamped before the newest one
    assert rate.per_second("s1", 30, now=1031) == 2 / 30
    assert rate.per_second("s1", 20, now=1031) == 1 / 20


def test_hours_of_traffic_agree_with_a_plain_count_and_keep_a_fixed_size():
    rng = random.Random(11)
    keep = 300
    rate = MessageRate(keep_s=keep)
    events: list[tuple[str, int]] = []
    second = 10_000
    for _ in range(20_000):  # about 3 hours of bursts, pauses and late stamps
        second += rng.choice((0, 0, 0, 1, 1, 2, 5, 40))
        stamp = second - rng.choice((0, 0, 0, 0, 1, 3))
        site = rng.choice(("s1", "s1", "s1", "s2"))
        rate.add(site, stamp + rng.random())
        events.append((site, stamp))
        if rng.random() < 0.01:
            now = second + rng.choice((0, 1, 7, 400))
            window = rng.choice((1, 10, 60, 300))
            for site_id in ("s1", "s2"):
                expected = reference_rate(events, site_id, window, now, keep)
                assert rate.per_second(site_id, window, now=now) == expected
    assert all(len(ring.counts) == keep + 1 for ring in rate._rings.values())
    assert sum(rate.totals.values()) == len(events)
