"""The load-harness driver: ``python -m tests.bench.run [--smoke | --tiny]``.

For each target — the baseline relay first, then ``kefu run`` (SQLite, uvloop) — it
starts the server as its own process, runs the scenarios in order (idle, chat, storm,
sweep, then the long-poll chat on a population of its own), checks every population for
lost and duplicated messages, stops the server (kefu then gets a server of its own for
``kill``, which SIGKILLs and restarts it), and writes ``build/bench/<stamp>.json``
and ``.md`` (kefu beside the relay, with ratios and the targets of issue 7).

``make bench`` runs the ``full`` profile (issue 7's scale), ``make bench-smoke`` the
``smoke`` one (about a minute); ``tiny`` is what tests/test_bench_harness.py runs;
``scale`` holds 100,000 idle WebSockets on six server workers (issue 12).

``--scenario overload`` (issue 16, :mod:`tests.bench.overload`) runs kefu a second time
with the degradation plugin enabled (``kefu+degradation``): both are offered twice the
highest rate the first run met p99 ≤ 50 ms at, then a connection flood; the report puts
them side by side. Asked alone, it runs no relay.

Several server workers (issue 12): ``--server-workers 2`` starts ``kefu run --workers 2``
over the Redis bus (the local Redis, a key prefix of its own); ``--server-workers 1,2``
runs kefu once per count, side by side in the report (``kefu-1w``, ``kefu-2w``) with the
sweep's scaling ratio. ``--storage postgres`` puts kefu on the local PostgreSQL in a
fresh schema (dropped afterwards) instead of SQLite.
Server settings can be changed with ``--set 'section.key=value'`` (TOML values), e.g.
``--set sql.batch_window_ms=2 --set gateway.outbox_frames=256``. Every default plugin
runs (routing included); ``--disable routing`` turns one off. The exit status is 1 when
kefu lost or duplicated a message.
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

from tests.bench import overload, report, scenarios
from tests.bench.pool import Pool, Probe
from tests.bench.servers import PG_URL, REDIS_URL, raise_nofile, toml_sections
from tests.bench.targets import Target

log = logging.getLogger("tests.bench")

#: Scale of each profile. Rates are messages per second offered across all clients.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "workers": 4,
        "idle": {"n": 15_000, "hold_s": 35.0},
        "chat": {"visitors": 5_000, "agents": 250, "rate": 2_000.0, "duration": 30.0},
        "storm": {"fraction": 1.0, "background_rate": 100.0, "background_s": 24.0, "wait_s": 40.0},
        "sweep": {
            "rates": [100.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1_000.0, 1_500.0, 2_000.0],
            "step_s": 15.0,
            "warmup_s": 0.0,  # e.g. 20.0: an unjudged window first (cold caches)
        },
        "longpoll": {"visitors": 1_000, "agents": 50, "rate": 300.0, "duration": 30.0},
        # the gRPC transport beside the WebSocket: two populations of this size, one after
        # the other, at the same offered rate (kefu only; --scenario grpc)
        "grpc": {"visitors": 1_000, "agents": 50, "rate": 300.0, "duration": 30.0, "first": "ws"},
        # issue 16: ramp to P (p99 <= 50 ms), P for steady_s, 2P for overload_s, a flood
        "overload": {
            "visitors": 2_000,
            "agents": 100,
            "rates": [
                *(50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0, 800.0),
                *(1_000.0, 1_200.0, 1_400.0, 1_600.0, 2_000.0),
            ],
            "step_s": 4.0,
            "warmup_s": 5.0,
            "confirm_s": 15.0,  # P held this long at p99 <= 50 ms, else the rate below
            "steady_s": 60.0,
            "overload_s": 20.0,
            "recover_s": 20.0,
            "flood": 5_000,
            "flood_s": 2.0,
            "flood_window_s": 8.0,
            "rate": None,  # e.g. --param overload.rate=1000.0: no ramp, P given
        },
        # kill -9 under load, on a server of its own (kefu only; see scenarios.kill)
        "kill": {
            "visitors": 2_000,
            "agents": 100,
            "rate": 1_000.0,
            "duration": 30.0,
            "late": 200,
            "away_fraction": 0.2,
            "away_s": 3.0,
            "wait_s": 30.0,
        },
    },
    "smoke": {
        "workers": 2,
        "idle": {"n": 1_000, "hold_s": 3.0, "settle_s": 1.0},
        "chat": {"visitors": 200, "agents": 10, "rate": 200.0, "duration": 6.0},
        "storm": {"fraction": 0.5, "background_rate": 100.0, "background_s": 6.0, "wait_s": 10.0},
        "sweep": {"rates": [400.0], "step_s": 4.0},
        "longpoll": {"visitors": 40, "agents": 4, "rate": 40.0, "duration": 4.0},
        "grpc": {"visitors": 40, "agents": 4, "rate": 40.0, "duration": 4.0},
        "overload": {
            "visitors": 200,
            "agents": 10,
            "rates": [100.0, 200.0, 400.0, 600.0, 800.0],
            "step_s": 3.0,
            "warmup_s": 3.0,
            "confirm_s": 5.0,
            "steady_s": 10.0,
            "overload_s": 8.0,
            "recover_s": 15.0,
            "flood": 1_000,
            "flood_s": 1.0,
            "flood_window_s": 5.0,
            "rate": None,
        },
        "kill": {
            "visitors": 200,
            "agents": 10,
            "rate": 200.0,
            "duration": 9.0,
            "late": 20,
            "away_fraction": 0.2,
            "away_s": 2.0,
            "wait_s": 20.0,
        },
    },
    "tiny": {
        "workers": 2,
        "idle": {"n": 40, "hold_s": 0.5, "settle_s": 0.2},
        "chat": {"visitors": 16, "agents": 2, "rate": 40.0, "duration": 1.0},
        "storm": {"fraction": 0.5, "background_rate": 20.0, "background_s": 1.5, "wait_s": 6.0},
        "sweep": None,
        "longpoll": {"visitors": 6, "agents": 2, "rate": 10.0, "duration": 1.0},
        "grpc": {"visitors": 6, "agents": 2, "rate": 10.0, "duration": 1.0},
        "overload": {
            "visitors": 12,
            "agents": 2,
            "rates": [20.0, 40.0],
            "step_s": 0.8,
            "warmup_s": 0.0,
            "confirm_s": 0.0,
            "steady_s": 1.0,
            "overload_s": 1.0,
            "recover_s": 3.0,
            "flood": 40,
            "flood_s": 0.3,
            "flood_window_s": 1.2,
            "rate": None,
        },
        "kill": {
            "visitors": 16,
            "agents": 4,
            "rate": 20.0,
            "duration": 3.0,
            "late": 4,
            "away_fraction": 0.5,
            "away_s": 1.0,
            "wait_s": 15.0,
        },
    },
}
# issue 12: 100,000 idle WebSockets over six server workers (each under the 20,000 fds a
# process may hold here), from seven client processes; kefu only (the relay is one
# process). The chat, sweep, ... numbers are the full profile's, for --scenario chat.
PROFILES["scale"] = {
    **PROFILES["full"],
    "workers": 7,
    "server_workers": [6],
    "targets": ["kefu"],
    "scenarios": ["idle"],
    "idle": {"n": 100_000, "hold_s": 30.0, "settle_s": 5.0},
}
SCENARIOS = ("idle", "chat", "storm", "sweep", "longpoll", "grpc", "overload", "kill")
#: The plugin the overload scenario's second kefu run enables.
DEGRADATION = "kefu.plugins.degradation"
#: Scenarios a run does unless asked (``--scenario grpc`` needs the grpc extra;
#: ``--scenario overload`` runs kefu twice).
DEFAULT_SCENARIOS = ("idle", "chat", "storm", "sweep", "longpoll", "kill")
#: Scenarios that get a kefu server of their own (they kill it), after the others.
OWN_SERVER = ("kill",)


def installed_third_party() -> list[str]:
    """Names of the kefu plugins installed as entry points (not kefu's own)."""
    from importlib import metadata

    from kefu.core.plugins import ENTRY_POINT_GROUP

    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def kefu_settings(assignments: list[str], disabled: list[str]) -> dict[str, dict[str, str]]:
    """``section.key=value`` pairs and disabled plugins, laid over the bench config."""
    sections: dict[str, dict[str, str]] = {}
    for item in assignments:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not name or not value:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        sections.setdefault(section, {})[name] = value.strip()
    if disabled:
        sections.setdefault("plugins", {})["disable"] = repr(list(disabled)).replace("'", '"')
    return sections


def server_counts(text: str | None, profile: dict[str, Any]) -> list[int]:
    """``--server-workers 1,2`` as ``[1, 2]`` (the profile's, else one worker)."""
    if text is None:
        return list(profile.get("server_workers", [1]))
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--server-workers expects counts like 2 or 1,2, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit("--server-workers: counts of at least 1")
    return counts


def target_runs(kinds: list[str], counts: list[int]) -> list[tuple[str, str, int]]:
    """``(result name, kind, server workers)`` in run order: kefu once per worker count."""
    runs = []
    for kind in kinds:
        if kind != "kefu":
            runs.append((kind, kind, 1))
        elif len(counts) == 1:
            runs.append(("kefu", "kefu", counts[0]))
        else:
            runs += [(f"kefu-{n}w", "kefu", n) for n in counts]
    return runs


def overload_runs(
    runs: list[tuple[str, str, int]], wanted: set[str], targets_asked: bool
) -> list[tuple[str, str, int]]:
    """With ``overload``: each kefu run again with the degradation plugin (``+degradation``);
    the relay is left out when the overload is the only scenario and no target was asked."""
    if "overload" not in wanted:
        return runs
    if wanted == {"overload"} and not targets_asked:
        runs = [r for r in runs if r[1] == "kefu"]
    return runs + [(f"{name}+degradation", kind, n) for name, kind, n in runs if kind == "kefu"]


def with_degradation(settings: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``settings`` with the degradation plugin added to ``[plugins] enable``."""
    out = {name: dict(keys) for name, keys in settings.items()}
    plugins = out.setdefault("plugins", {})
    enabled = ast.literal_eval(plugins.get("enable", "[]"))
    if DEGRADATION not in enabled:
        enabled.append(DEGRADATION)
    plugins["enable"] = repr(enabled).replace("'", '"')
    return out


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
    settings: dict[str, dict[str, str]],
    backlog: int = 4096,
    name: str | None = None,
    carry: dict[str, Any] | None = None,
    **server: Any,
) -> dict[str, Any]:
    target = Target(
        kind,
        workdir / (name or kind),
        settings=settings if kind == "kefu" else {},
        backlog=backlog,
        **server,
    )
    results: dict[str, Any] = {
        "server_workers": target.server.workers,
        "storage": target.server.storage,
    }
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            await target.start(http)
        except BaseException:
            await target.server.stop()  # a server that failed to start is not left running
            await target.server.cleanup()
            raise
        probe = Probe(target.base, (await target.visitors(http, 1, signed=True))[0][1])
        try:
            await probe.open()
            await _scenarios(target, pool, http, probe, profile, wanted, results, carry)
        finally:
            await probe.close()
            await pool.each("close", deadline_s=120)
            results["server_alive_at_end"] = target.server.alive()
            await target.server.stop()
            try:
                await target.server.cleanup()
            except Exception as exc:  # the run's figures matter more than a leftover schema
                log.warning("%s: cleaning up its schema or keys failed: %s", kind, exc)
    return results


async def _scenarios(target, pool, http, probe, profile, wanted, results, carry=None) -> None:
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
    if "grpc" in wanted and profile.get("grpc") and target.kind == "kefu":
        g = profile["grpc"]
        order = [("ws", "grpc_ws"), ("grpc", "grpc")]  # same size, same rate
        if g.get("first") == "grpc":  # --param grpc.first='"grpc"': the other order
            order.reverse()
        for transport, name in order:
            step(f"{name} population")
            setup = await scenarios.populate(
                target, pool, http, g["visitors"], g["agents"], transport
            )
            step(f"{name} chat")
            chat = await scenarios.load(target, pool, http, probe, g["rate"], g["duration"])
            chat["drain"] = await scenarios.drain(target, pool)
            step(f"verify {name} population")
            results[name] = {**setup, **chat, "loss": await scenarios.verify(target, pool)}
            step(f"close {name} population")
            await pool.each("close", deadline_s=120)
    if "overload" in wanted and profile.get("overload") and target.kind == "kefu":
        step("overload")  # a population of its own; the ramp's P is carried to the next run
        results["overload"] = await overload.overload(
            target, pool, http, probe, carry if carry is not None else {}, **profile["overload"]
        )
    if "kill" in wanted and profile.get("kill") and target.kind == "kefu":
        step("kill")
        results["kill"] = await scenarios.kill(target, pool, http, **profile["kill"])
        step("close kill population")
        await pool.each("close", deadline_s=120)
    step("end")


def kefu_failures(results: dict[str, Any]) -> list[str]:
    """What makes the run fail: kefu lost or duplicated a message, or died; after the
    kill, a conversation left queued or an agent not told of one assigned to it."""
    problems = []
    kill = results.get("kill") or {}
    if kill.get("queued_left"):
        problems.append(f"kill: {kill['queued_left']} conversations left queued")
    if kill.get("assigned_untold"):
        problems.append(
            f"kill: {kill['assigned_untold']} assignments never told to "
            f"{kill['agents_untold']} agents"
        )
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
    wanted = set(args.scenario or profile.get("scenarios", DEFAULT_SCENARIOS))
    disabled = args.disable + ([] if args.all_plugins else profile.get("disable", []))
    # the targets are for kefu's own plugins: plugins installed in this venv from elsewhere
    # (the example kefu-greeter of `make test`) are off unless --third-party keeps them
    third_party = [] if args.third_party else installed_third_party()
    settings = kefu_settings(args.set, sorted(set(disabled + third_party)))
    if "grpc" in wanted:
        settings.setdefault("transport_grpc", {}).setdefault("enabled", "true")
    counts = server_counts(args.server_workers, profile)
    storage = args.storage or profile.get("storage", "sqlite")
    runs = target_runs(args.targets or profile.get("targets", ["relay", "kefu"]), counts)
    runs = overload_runs(runs, wanted, bool(args.targets))
    carry: dict[str, Any] = {}  # the overload's P, from the run without the plugin
    run: dict[str, Any] = {
        "profile": args.profile,
        "started": dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": report.machine(),
        "settings": {
            "profile": profile,
            "kefu_overrides": toml_sections(settings),
            "relay_backlog": args.relay_backlog,
            "scenarios": sorted(wanted),
            "server_workers": counts,
            "storage": storage,
        },
        "results": {},
        "notes": [f"third-party plugins disabled: {', '.join(third_party)}"] if third_party else [],
    }
    started = time.monotonic()
    out = Path(args.out) if args.out else report.REPORT_DIR
    pool = Pool(profile["workers"])
    try:
        with tempfile.TemporaryDirectory(prefix="kefu-bench-") as tmp:
            workdir = Path(args.keep) if args.keep else Path(tmp)
            for name, kind, workers in runs:
                degraded = name.endswith("+degradation")
                base = {"overload"} if degraded else wanted
                shared = base - set(OWN_SERVER)
                alone = sorted(base & set(OWN_SERVER)) if kind == "kefu" else []
                for scenario_set, workdir_name in [(shared, name)] + [
                    ({s}, f"{name}-{s}") for s in alone
                ]:
                    if not scenario_set:
                        continue
                    results = await run_target(
                        kind,
                        pool,
                        profile,
                        scenario_set,
                        workdir,
                        with_degradation(settings) if degraded else settings,
                        args.relay_backlog,
                        name=workdir_name,
                        carry=carry,
                        workers=workers,
                        storage=storage,
                        pg_url=args.pg_url,
                        redis_url=args.redis_url,
                    )
                    merged = run["results"].setdefault(name, {})
                    alive = merged.get("server_alive_at_end", True)
                    timings = merged.get("timings_s", {})
                    if workdir_name != name:  # the steps of a server of its own, apart
                        own = results.pop("timings_s", {})
                        timings.update({f"{workdir_name}: {k}": v for k, v in own.items()})
                    merged.update(results)
                    merged["timings_s"] = timings or merged.get("timings_s", {})
                    merged["server_alive_at_end"] = alive and results["server_alive_at_end"]
                    report.write(run, out)  # a partial report survives an interrupted run
    finally:
        await pool.close()
    run["elapsed_s"] = round(time.monotonic() - started, 1)
    problems = []
    for target_name in report.kefu_names(run["results"]):
        failures = kefu_failures(run["results"][target_name])
        problems += [f"{target_name}: {p}" if target_name != "kefu" else p for p in failures]
    run["notes"] += problems
    for target_name in report.kefu_names(run["results"]):
        for name, scenario in run["results"][target_name].items():
            loss = scenario.get("loss") if isinstance(scenario, dict) else None
            if loss and not loss.get("complete", True):
                run["notes"].append(
                    f"{target_name} {name}: the final drain did not finish "
                    f"({loss['unacked_at_end']} unacked, {loss['disconnected_at_end']} clients "
                    "still reconnecting): undelivered messages are reported, not counted as lost"
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
    parser.add_argument("--targets", nargs="+", help="relay and/or kefu (default: both)")
    parser.add_argument("--workers", type=int, help="client processes")
    parser.add_argument(
        "--server-workers",
        help="kefu run --workers N over the Redis bus; a list (1,2) runs kefu once per count",
    )
    parser.add_argument("--storage", choices=["sqlite", "postgres"], help="default sqlite")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL for --storage postgres")
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis for several workers")
    parser.add_argument("--param", action="append", default=[], help="e.g. chat.rate=1000")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--disable", action="append", default=[], help="a kefu plugin")
    parser.add_argument(
        "--third-party",
        action="store_true",
        help="keep the third-party plugins installed here (off by default: the targets are "
        "for kefu's own plugins)",
    )
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
