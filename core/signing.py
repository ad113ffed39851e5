"""Signing outgoing HTTP requests (webhooks, bot calls), and checking them on the receiving side.

A request carries ``X-Kefu-Signature: t=<unix seconds>,v1=<hex>`` where the hex is
HMAC-SHA256, keyed with the subscription's secret, of ``"<t>.<raw body>"``. A receiver
recomputes it over the raw body it read, compares in constant time, and refuses a
timestamp outside its replay window (5 minutes here). Receivers in Python may import
:func:`verify`; the algorithm is small enough to write in any language
(docs/integrations.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Kefu-Signature"
TOLERANCE_S = 300.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, now: float | None = None) -> str:
    """The ``X-Kefu-Signature`` value for ``body``, stamped now."""
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:  # fmt: skip
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(
        hmac.compare_digest(expected, value)
        for key, value in (p.split("=", 1) for p in header.split(",") if "=" in p)
        if key == "v1"
    )
