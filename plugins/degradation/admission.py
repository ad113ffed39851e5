"""Admission under pressure: the HTTP side of levels 2 and 3, and the rate sensors' counts.

One middleware, one int read per request while the level is 0 (plus a path compare for
the handshake and session counters):

- level 2: ``GET /v1/widget/config`` answers ``online: false, busy: true`` (the widget
  shows its polite "we are busy, leave a message" form to visitors without a
  conversation; those with one carry on), new long-poll sessions get ``503`` with a
  jittered ``Retry-After``;
- level 2 as well: new WebSocket handshakes and new visitor sessions are admitted at
  ``handshake_limit_per_s`` / ``session_limit_per_s`` at most (a token bucket
  ``limit_burst_s`` deep, per worker); beyond, ``503`` with a jittered ``Retry-After``
  before any work (no upgrade, no token check): a connection flood's handshakes are what
  would slow the people already talking, a refusal costs a fraction of one;
- level 3: new WebSocket connections, visitor sessions and widget loads get ``503`` with
  a jittered ``Retry-After`` as well (refused before any work: no upgrade, no token).

Requests of connected participants (frames on an open WebSocket, long-poll ``send`` and
``recv`` of an open session, the REST message API) are never refused.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
from aiohttp import web

WS_PATH = "/v1/ws"
POLL_OPEN = "/v1/poll/open"
SESSION_PATH = "/v1/visitors/session"
WIDGET_CONFIG = "/v1/widget/config"
WIDGET_SCRIPT = "/widget.js"

#: path -> the level from which a new one is refused with 503
REFUSED_FROM = {POLL_OPEN: 2, WS_PATH: 3, SESSION_PATH: 3, WIDGET_SCRIPT: 3}


#: path -> the setting holding its level-2 admission rate
LIMITED = {WS_PATH: "handshake_limit_per_s", SESSION_PATH: "session_limit_per_s"}


class TokenBucket:
    """``rate`` admissions a second, ``rate * burst_s`` at once at most (refilled lazily:
    one clock read and a few float operations per admission asked)."""

    __slots__ = ("_at", "_tokens")

    def __init__(self) -> None:
        self._tokens: float | None = None  # full at the first ask
        self._at = 0.0

    def take(self, rate: float, burst_s: float, now: float | None = None) -> bool:
        if rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        depth = max(1.0, rate * burst_s)
        if self._tokens is None:
            self._tokens = depth
        else:
            self._tokens = min(depth, self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def refill(self) -> None:
        """Full again (the level dropped below 2: the next limited period starts afresh)."""
        self._tokens = None


def retry_after(base_s: float, level: int) -> int:
    """Seconds for ``Retry-After``: the base (doubled at level 3), +-50 % jitter."""
    base = base_s * (2 if level >= 3 else 1)
    return max(1, round(base * random.uniform(0.5, 1.5)))


def busy_response(level: int, base_s: float) -> web.Response:
    seconds = retry_after(base_s, level)
    body = {
        "error": {
            "code": "busy",
            "message": "we are very busy right now; please try again in a moment",
            "retry_after_s": seconds,
        }
    }
    return web.json_response(body, status=503, headers={"Retry-After": str(seconds)})


def make_middleware(controller: Any):
    sensors = controller.sensors
    buckets = controller.buckets = {path: TokenBucket() for path in LIMITED}

    @web.middleware
    async def degradation_admission(request: web.Request, handler):
        path = request.path
        if path == WS_PATH or path == POLL_OPEN:
            sensors.handshakes.count += 1
        elif path == SESSION_PATH:
            sensors.sessions.count += 1
        level = controller.level
        if not level or request.method == "OPTIONS":
            return await handler(request)
        refused_from = REFUSED_FROM.get(path)
        if refused_from is not None and level >= refused_from:
            controller.refused[path.rsplit("/", 1)[-1] or path] += 1
            return busy_response(level, controller.settings.retry_after_s)
        if level >= 2 and path in LIMITED:
            settings = controller.settings
            rate = getattr(settings, LIMITED[path])
            if not buckets[path].take(rate, settings.limit_burst_s):
                controller.rate_limited[path.rsplit("/", 1)[-1]] += 1
                return busy_response(level, settings.retry_after_s)
        response = await handler(request)
        if path == WIDGET_CONFIG and level >= 2 and response.status == 200:
            return _busy_config(response, controller)
        return response

    return degradation_admission


def _busy_config(response: Any, controller: Any) -> Any:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray):
        return response
    try:
        config = orjson.loads(body)
    except orjson.JSONDecodeError:
        return response
    config["online"] = False
    config["busy"] = True
    controller.refused["widget_config"] += 1
    response.body = orjson.dumps(config)
    return response
