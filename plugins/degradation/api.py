"""``GET``/``PUT /v1/admin/degradation`` and ``kefu degrade``: see and hold the level.

The CLI talks to a running server through the REST endpoint (an admin's bearer token,
``--token`` or ``$KEFU_TOKEN``): ``kefu degrade --level 2 --for 10m`` holds level 2 in
every worker for ten minutes, ``kefu degrade --clear`` hands back to the sensors,
``kefu degrade`` alone prints the level and the readings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from typing import Any

from pydantic import BaseModel, Field

from kefu.core.errors import ApiError
from kefu.core.pressure import MAX_LEVEL
from kefu.core.types import CliCommand, RestEndpoint

PATH = "/v1/admin/degradation"


class OverrideBody(BaseModel):
    level: int | None = Field(
        description=f"The level to hold, 0..{MAX_LEVEL}; null hands back to the sensors.",
        ge=0,
        le=MAX_LEVEL,
    )
    ttl_s: float = Field(600.0, ge=1, description="How long it holds, seconds.")


class DegradationStatus(BaseModel):
    enabled: bool
    level: int = Field(description="The level in force (the override's while one holds).")
    sensed_level: int = Field(0, description="The level the sensors chose.")
    since: float = 0.0
    changes: int = 0
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The last 64 level changes: at (Unix time), old, new, reason.",
    )
    sensors: dict[str, Any] = Field(default_factory=dict)
    baselines: dict[str, float] = Field(
        default_factory=dict,
        description="The relative sensors' own normal (their thresholds are scaled to it).",
    )
    plugin_readings: dict[str, float] = Field(default_factory=dict)
    outbox_backlog: int = 0
    features: list[dict[str, Any]] = Field(default_factory=list)
    shed: list[str] = Field(default_factory=list)
    refused: dict[str, int] = Field(
        default_factory=dict, description="Requests refused with 503 by level, per path."
    )
    rate_limited: dict[str, int] = Field(
        default_factory=dict,
        description="New WebSockets and visitor sessions refused by level 2's admission limits.",
    )
    override: dict[str, Any] | None = None
    worker: str = ""


def make_endpoints() -> list[RestEndpoint]:
    async def status(call: Any) -> DegradationStatus:
        await call.require("degradation.override", call.site_id)
        return DegradationStatus.model_validate(call.kernel.pressure.snapshot())

    async def hold(call: Any) -> DegradationStatus:
        await call.require("degradation.override", call.site_id)
        body: OverrideBody = call.body
        p = call.principal
        try:
            await call.kernel.pressure.override(body.level, body.ttl_s, by=f"{p.site_id}/{p.id}")
        except (RuntimeError, ValueError) as exc:
            raise ApiError(409, "not_available", str(exc)) from None
        return DegradationStatus.model_validate(call.kernel.pressure.snapshot())

    return [
        RestEndpoint(
            "GET",
            PATH,
            "get_degradation",
            "This worker's degradation level and sensor readings",
            "admin",
            status,
            response=DegradationStatus,
            description="Admins only. docs/degradation.md explains each sensor.",
        ),
        RestEndpoint(
            "PUT",
            PATH,
            "set_degradation_override",
            "Hold a degradation level for a while (every worker)",
            "admin",
            hold,
            response=DegradationStatus,
            body=OverrideBody,
            errors=(409,),
            description="Admins only. The override expires after `ttl_s` (at most "
            "`[degradation] override_max_s`); `level: null` ends it. `kefu degrade` calls this.",
        ),
    ]


# -- the command line -----------------------------------------------------------------
def _duration(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected seconds or 30s / 10m / 1h, got {value!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def configure(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--level", type=int, choices=range(MAX_LEVEL + 1), help="level to hold")
    what.add_argument("--clear", action="store_true", help="hand back to the sensors")
    p.add_argument(
        "--for", dest="ttl", type=_duration, default=600.0, help="how long (default 10m)"
    )
    p.add_argument(
        "--url",
        default=os.environ.get("KEFU_URL", "http://127.0.0.1:8080/"),
        help="the running server (default $KEFU_URL, else http://127.0.0.1:8080/)",
    )
    p.add_argument("--token", default=None, help="an admin's bearer token (default $KEFU_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("KEFU_TOKEN")
    if not token:
        print("kefu degrade: an admin token is needed (--token or KEFU_TOKEN)", file=sys.stderr)
        return 2
    url = args.url.rstrip("/") + PATH
    data, method = None, "GET"
    if args.level is not None or args.clear:
        method = "PUT"
        body = {"level": None if args.clear else args.level, "ttl_s": args.ttl}
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"kefu degrade: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        print(f"kefu degrade: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(describe(answer))
    return 0


def describe(status: dict[str, Any]) -> str:
    """The answer for a person: level, override, what is shed, the readings."""
    lines = [f"level {status['level']} (sensed {status.get('sensed_level', 0)})"]
    override = status.get("override")
    if override:
        lines.append(
            f"override: level {override['level']} for {override['remaining_s']:.0f} s more"
            f" (by {override.get('by') or '?'})"
        )
    lines.append("shed: " + (", ".join(status.get("shed") or []) or "nothing"))
    for name, reading in (status.get("sensors") or {}).items():
        bounds = "/".join(f"{b:g}" for b in reading.get("thresholds") or [])
        lines.append(f"  {name:<18} {reading['value']:>10.3f}   levels at {bounds}")
    return "\n".join(lines)


def cli_command() -> CliCommand:
    return CliCommand(
        name="degrade",
        help="see or hold the degradation level of a running server",
        configure=configure,
        run=run,
    )
