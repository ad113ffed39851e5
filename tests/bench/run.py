"""The load-harness driver: ``python -m tests.bench.run [--smoke | --tiny]``.

For each target — the baseline relay first, then ``kefu run`` (SQLite, uvloop) — it
starts the server as its own process, runs the scenarios in order (idle, chat, storm,
sweep, then the long-poll chat on a population of its own), checks every population for
lost and duplicated messages, stops the server, and writes ``build/bench/<stamp>.json``
and ``.md`` (kefu beside the relay, with ratios and the targets of issue 7).

``make bench`` runs the ``full`` profile (issue 7's scale), ``make bench-smoke`` the
``smoke`` one (about a minute); ``tiny`` is what tests/test_bench_harness.py runs.
Server settings can be changed with ``--set 'section.key=value'`` (TOML values), e.g.
``--set sql.batch_window_ms=2 --set gateway.outbox_frames=256``; ``--disable routing``
turns a plugin off. The exit status is 1 when kefu lost or duplicated a message.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import report, scenarios
from tests.bench.pool import Pool, Probe
from tests.bench.servers import raise_nofile
from tests.bench.targets import Target

log = logging.getLogger("tests.bench")

#: Scale of each profile. Rates are messages per second offered across all clients.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "workers": 4,
        # routing passes grow with queued conversations x agents (docs/performance.md):
        # with it, starting 5,000 conversations alone takes most of an hour
        "disable": ["routing"],
        "idle": {"n": 15_000, "hold_s": 35.0},
        "chat": {"visitors": 5_000, "agents": 250, "rate": 2_000.0, "duration": 30.0},
        "storm": {"fraction": 1.0, "background_rate": 100.0, "background_s": 24.0, "wait_s": 40.0},
        "sweep": {
            "rates": [100.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1_000.0, 1_500.0, 2_000.0],
            "step_s": 15.0,
        },
        "longpoll": {"visitors": 1_000, "agents": 50, "rate": 300.0, "duration": 30.0},
    },
    "smoke": {
        "workers": 2,
        "idle": {"n": 1_000, "hold_s": 3.0, "settle_s": 1.0},
        "chat": {"visitors": 200, "agents": 10, "rate": 200.0, "duration": 6.0},
        "storm": {"fraction": 0.5, "background_rate": 100.0, "background_s": 6.0, "wait_s": 10.0},
        "sweep": {"rates": [400.0], "step_s": 4.0},
        "longpoll": {"visitors": 40, "agents": 4, "rate": 40.0, "duration": 4.0},
    },
    "tiny": {
        "workers": 2,
        "idle": {"n": 40, "hold_s": 0.5, "settle_s": 0.2},
        "chat": {"visitors": 16, "agents": 2, "rate": 40.0, "duration": 1.0},
        "storm": {"fraction": 0.5, "background_rate": 20.0, "background_s": 1.5, "wait_s": 6.0},
        "sweep": None,
        "longpoll": {"visitors": 6, "agents": 2, "rate": 10.0, "duration": 1.0},
    },
}
SCENARIOS = ("idle", "chat", "storm", "sweep", "longpoll")


def kefu_settings(assignments: list[str], disabled: list[str]) -> str:
    """``section.key=value`` pairs and disabled plugins as TOML appended to the bench config."""
    sections: dict[str, list[str]] = {}
    for item in assignments:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not name or not value:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        sections.setdefault(section, []).append(f"{name} = {value.strip()}")
    if disabled:
        sections.setdefault("plugins", []).append(f"disable = {list(disabled)!r}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def with_params(profile: dict[str, Any], params: list[str]) -> dict[str, Any]:
    """A copy of ``profile`` with ``scenario.key=value`` changes (values are Python literals)."""
    profile = {k: dict(v) if isinstance(v, dict) else v for k, v in profile.items()}
    for item in params:
        key, _, value = item.partition("=")
        scenario, _, name = key.partition(".")
        if not isinstance(profile.get(scenario), dict) or name not in profile[scenario]:
            raise SystemExit(f"--param: no {key!r} in the profile")
        profile[scenario][name] = ast.literal_eval(value)
    return profile


async def run_target(
    kind: str,
    pool: Pool,
    profile: dict[str, Any],
    wanted: set[str],
    workdir: Path,
    settings: str,
    backlog: int = 4096,
) -> dict[str, Any]:
    target = Target(kind, workdir / kind, settings if kind == "kefu" else "", backlog)
    results: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        await target.start(http)
        probe = Probe(target.base, (await target.visitors(http, 1, signed=True))[0][1])
        try:
            await probe.open()
            await _scenarios(target, pool, http, probe, profile, wanted, results)
        finally:
            await probe.close()
            await pool.each("close", deadline_s=120)
            results["server_alive_at_end"] = target.server.alive()
            await target.server.stop()
    return results


async def _scenarios(target, pool, http, probe, profile, wanted, results) -> None:
    timings = results.setdefault("timings_s", {})
    last = [time.monotonic(), "start"]

    def step(name: str) -> None:
        now = time.monotonic()
        timings[last[1]] = round(now - last[0], 1)
        last[:] = [now, name]
        log.info("%s: %s", target.kind, name)

    if "idle" in wanted:
        step("idle")
        results["idle"] = await scenarios.idle(target, pool, http, probe, **profile["idle"])
    if wanted & {"chat", "storm", "sweep"}:
        c = profile["chat"]
        step("chat population")
        setup = await scenarios.populate(target, pool, http, c["visitors"], c["agents"], "ws")
        if "sweep" in wanted and profile.get("sweep") and target.kind == "kefu":
            step("sweep")  # first: an overloaded chat step leaves a backlog behind it
            results["sweep"] = await scenarios.sweep(target, pool, http, probe, **profile["sweep"])
            results["sweep"]["drain"] = await scenarios.drain(target, pool)
        if "chat" in wanted:
            step("chat")
            chat = await scenarios.load(target, pool, http, probe, c["rate"], c["duration"])
            results["chat"] = {**setup, **chat, "drain": await scenarios.drain(target, pool)}
        if "storm" in wanted and profile.get("storm"):
            step("storm")
            results["storm"] = await scenarios.storm(target, pool, http, probe, **profile["storm"])
            results["storm"]["drain"] = await scenarios.drain(target, pool)
        step("verify chat population")
        loss = await scenarios.verify(target, pool)
        for name in ("chat", "storm"):
            if name in results:
                results[name]["loss"] = loss
        step("close chat population")
        await pool.each("close", deadline_s=120)
    if "longpoll" in wanted and profile.get("longpoll"):
        lp = profile["longpoll"]
        step("long-poll population")
        setup = await scenarios.populate(
            target, pool, http, lp["visitors"], lp["agents"], "longpoll"
        )
        step("long-poll chat")
        chat = await scenarios.load(target, pool, http, probe, lp["rate"], lp["duration"])
        step("verify long-poll population")
        results["longpoll"] = {**setup, **chat, "loss": await scenarios.verify(target, pool)}
        step("close long-poll population")
        await pool.each("close", deadline_s=120)
    step("end")


def kefu_failures(results: dict[str, Any]) -> list[str]:
    """What makes the run fail: kefu lost or duplicated a message, or died."""
    problems = []
    for name, scenario in results.items():
        loss = scenario.get("loss") if isinstance(scenario, dict) else None
        if loss and (loss.get("lost") or loss.get("duplicated_stored")):
            problems.append(f"{name}: {loss['summary']} lost / duplicated")
    if results and not results.get("server_alive_at_end", True):
        problems.append("the kefu server died during the run")
    return problems


async def main_async(args: argparse.Namespace) -> int:
    profile = with_params(PROFILES[args.profile], args.param)
    if args.workers:
        profile["workers"] = args.workers
    wanted = set(args.scenario or SCENARIOS)
    disabled = args.disable + ([] if args.all_plugins else profile.get("disable", []))
    settings = kefu_settings(args.set, sorted(set(disabled)))
    run: dict[str, Any] = {
        "profile": args.profile,
        "started": dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": report.machine(),
        "settings": {
            "profile": profile,
            "kefu_overrides": settings,
            "relay_backlog": args.relay_backlog,
            "scenarios": sorted(wanted),
        },
        "results": {},
        "notes": [],
    }
    started = time.monotonic()
    out = Path(args.out) if args.out else report.REPORT_DIR
    pool = Pool(profile["workers"])
    try:
        with tempfile.TemporaryDirectory(prefix="kefu-bench-") as tmp:
            workdir = Path(args.keep) if args.keep else Path(tmp)
            for kind in args.targets:
                run["results"][kind] = await run_target(
                    kind, pool, profile, wanted, workdir, settings, args.relay_backlog
                )
                report.write(run, out)  # a partial report survives an interrupted run
    finally:
        await pool.close()
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    problems = kefu_failures(run["results"].get("kefu", {}))
    run["notes"] += problems
    for name, scenario in run["results"].get("kefu", {}).items():
        loss = scenario.get("loss") if isinstance(scenario, dict) else None
        if loss and not loss.get("complete", True):
            run["notes"].append(
                f"{name}: the final drain did not finish ({loss['unacked_at_end']} unacked, "
                f"{loss['disconnected_at_end']} clients still reconnecting): undelivered "
                "messages are reported, not counted as lost"
            )
    json_path, md_path = report.write(run, out)
    print(md_path.read_text())
    print(f"report: {json_path} and {md_path} ({run['elapsed_s']} s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kefu load harness (issue 7)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smoke", dest="profile", action="store_const", const="smoke")
    group.add_argument("--tiny", dest="profile", action="store_const", const="tiny")
    group.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable")
    parser.add_argument("--targets", nargs="+", default=["relay", "kefu"])
    parser.add_argument("--workers", type=int, help="client processes")
    parser.add_argument("--param", action="append", default=[], help="e.g. chat.rate=1000")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--disable", action="append", default=[], help="a kefu plugin")
    parser.add_argument(
        "--all-plugins", action="store_true", help="ignore the profile's disabled plugins"
    )
    parser.add_argument("--out", help="report directory (default build/bench)")
    parser.add_argument(
        "--relay-backlog", type=int, default=4096, help="listen backlog of the baseline relay"
    )
    parser.add_argument("--keep", help="keep the servers' files and logs in this directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every worker call")
    parser.set_defaults(profile="full")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.verbose:
        logging.getLogger("tests.bench").setLevel(logging.DEBUG)
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
