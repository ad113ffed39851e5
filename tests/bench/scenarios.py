"""The scenarios of issue 7, run against one target with the client processes of a pool.

- :func:`idle`: open N visitor WebSockets as fast as allowed (ramp), hold them; RSS per
  connection and the CPU of holding them (heartbeats);
- :func:`chat`: V visitors and A agents, each agent holding V/A conversations, every
  participant sending open-loop; latencies, CPU per delivered message, loop lag;
- :func:`storm`: cut a fraction of the visitors' connections at once while agents keep
  writing to them; time until every one has reconnected, resumed and re-sent;
- :func:`sweep`: the chat load at rising offered rates, to find the highest that keeps
  p99 delivery within the target;
- :func:`verify`: drain, then check the population against storage (lost, duplicated);
- :func:`kill`: SIGKILL the server under load and start it again on the same files and
  port: time until every client resumed, conversations assigned, agents told, loss.

With several server workers (``kefu run --workers N``), server CPU and RSS are summed
over the supervisor and its workers, the idle scenario reports how the kernel spread the
connections over the workers, and every chat window first asks the server's /proc which
worker holds each client socket (:func:`place`), so its delivery latency is also given
split into conversations whose visitor and agent sit on different workers (``cross``) and
the others (``same``).

Each returns a JSON-ready dict. Everything runs on loopback and is bounded in time.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import time
from array import array
from typing import Any

import aiohttp

from tests.bench.pool import Pool, Probe, Window
from tests.bench.report import merge, quantile, summary_ms
from tests.bench.servers import listen_overflows, schedstat
from tests.bench.targets import Target

log = logging.getLogger(__name__)

P99_TARGET_MS = 50.0
#: Goodput (issue 16): messages delivered within this many milliseconds of their send.
GOODPUT_MS = 200.0


def _split(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


def _window(result: dict[str, Any]) -> dict[str, Any]:
    """A :class:`Window` result with its probe samples summarised."""
    out = dict(result)
    out["probe"] = summary_ms(out.pop("probe_samples"))
    return out


async def idle(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    probe: Probe,
    n: int,
    hold_s: float,
    settle_s: float = 2.0,
) -> dict[str, Any]:
    tokens = await target.visitors(http, n, signed=True)
    server = target.server
    await asyncio.sleep(settle_s)
    rss_before = server.rss()
    cpu_before = server.cpu()
    overflows = listen_overflows()
    chunks = _split(tokens, len(pool))
    # 100,000 connections over six workers on two shared cores take minutes to open
    deadline = max(600.0, n / 50)
    opened = await pool.each(
        "open_idle", [{"tokens": c} for c in chunks], base=target.base, deadline_s=deadline
    )
    cpu_ramp = server.cpu() - cpu_before
    overflows = listen_overflows() - overflows
    count = sum(r["opened"] for r in opened)
    ramp_s = max(r["last"] for r in opened) - min(r["first"] for r in opened)
    await asyncio.sleep(settle_s)  # let allocations settle before reading RSS
    rss_after = server.rss()
    window = Window(server, http, probe)
    await window.open()
    await asyncio.sleep(hold_s)
    held = _window(await window.close())
    status = await pool.each("held")  # dropped connections reconnect: count what is up now
    closes: dict[str, int] = {}
    for st in status:
        for reason, k in st["closes"].items():
            closes[reason] = closes.get(reason, 0) + k
    connect = sorted(t for r in opened for t in r["connect_s"])
    spread = server.connections_by_worker() if server.workers > 1 else None
    rss_workers = server.rss_by_worker() if server.workers > 1 else None
    await pool.each("close", deadline_s=deadline)
    per_conn = (rss_after - rss_before) / count if count else None
    return {
        "server_workers": server.workers,
        # established connections each worker held (the probe's among them)
        "connections_by_worker": spread,
        "rss_by_worker_mib": {str(i): round(b / 2**20, 1) for i, b in rss_workers.items()}
        if rss_workers
        else None,
        "connections": count,
        "held_at_end": sum(st["held"] for st in status),
        "closed_during_run": closes,  # by reason, each then reconnected by the client
        "reconnects": sum(st["reconnects"] for st in status),
        "failed": sum(r["failed"] for r in opened),
        "failures": sorted({f for r in opened for f in r["failures"]}),
        "ramp_s": round(ramp_s, 2),
        "ramp_per_s": round(count / ramp_s, 1) if ramp_s > 0 else None,
        "connect_ms": summary_ms(connect),
        "listen_overflows": overflows,  # handshakes the full accept queue dropped (retried)
        "server_cpu_ramp_us_per_conn": round(cpu_ramp / count * 1e6, 1) if count else None,
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_per_conn_kib": round(per_conn / 1024, 2) if per_conn is not None else None,
        "hold_s": hold_s,
        "cpu_percent": held["cpu_percent"],
        "cpu_us_per_conn_s": round(held["cpu_s"] / held["elapsed_s"] / count * 1e6, 3)
        if count
        else None,
        "loop_lag": held["loop_lag"],
        "gc_collections": held["gc_collections"],
        "probe": held["probe"],
        "load_average": held["load_average"],
    }


async def populate(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    visitors: int,
    agents: int,
    transport: str,
    jitter: float = 1.0,
) -> dict[str, Any]:
    """Visitors start conversations; agent ``j`` holds those of visitors ``k % A == j``.

    An agent and its visitors go to the same client process.
    """
    started = time.monotonic()
    v_tokens = await target.visitors(http, visitors)
    a_tokens = await target.agents(http, agents)
    tokens_s = time.monotonic() - started
    plans: list[dict] = [{"visitors": [], "agents": []} for _ in range(len(pool))]
    for j, (ident, token) in enumerate(a_tokens):
        plan = plans[j % len(pool)]
        held = []
        for k in range(j, visitors, agents):
            held.append(len(plan["visitors"]))
            plan["visitors"].append(v_tokens[k])
        plan["agents"].append((ident, token, held))
    base = target.server.grpc_target if transport == "grpc" else target.base
    results = await pool.each("open_chat", plans, base=base, transport=transport, jitter=jitter)
    return _set_up(results, tokens_s, started)


def _set_up(results: list[dict], tokens_s: float, started: float) -> dict[str, Any]:
    """What the client processes said of opening a population."""
    return {
        "population": f"{sum(r['visitors'] for r in results):,} / "
        f"{sum(r['agents'] for r in results):,}",
        "tokens_s": round(tokens_s, 1),
        "setup_s": round(time.monotonic() - started, 1),
        "setup_failed": sum(r["failed"] for r in results),
        "setup_failures": sorted({f for r in results for f in r["failures"]}),
    }


async def load(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    probe: Probe,
    rate: float,
    duration: float,
    seed: int = 0,
) -> dict[str, Any]:
    """One open-loop window at ``rate`` messages/s offered, across all client processes."""
    placed = await place(target, pool) if target.server.workers > 1 else None
    window = Window(target.server, http, probe)
    await window.open()
    parts = await pool.each(
        "load", rate=rate / len(pool), duration=duration, seed=seed, deadline_s=duration + 120
    )
    measured = _window(await window.close())
    delivered = sum(p["delivered"] for p in parts)
    errors, closes = _tally(parts)
    lag = merge([p["lag"] for p in parts])
    deliveries = merge([p["delivery"] for p in parts])
    within = bisect.bisect_right(deliveries, GOODPUT_MS / 1000)
    if placed is not None:
        placed["delivery_cross"] = summary_ms(merge([p["delivery_cross"] for p in parts]))
        placed["delivery_same"] = summary_ms(merge([p["delivery_same"] for p in parts]))
    return {
        "server_workers": target.server.workers,
        "cross_worker": placed,
        "offered_per_s": rate,
        "duration_s": duration,
        "sent": sum(p["sent"] for p in parts),
        "acked": sum(p["acked"] for p in parts),
        "delivered": delivered,
        "delivered_per_s": round(delivered / duration, 1),
        # delivered within GOODPUT_MS of their send, per second of the window
        "goodput_per_s": round(within / duration, 1),
        "late_unacked": sum(p["late"] for p in parts),
        "duplicates_delivered": sum(p["duplicates"] for p in parts),
        "resent": sum(p["resent"] for p in parts),
        "delivery": summary_ms(deliveries),
        "ack": summary_ms(merge([p["ack"] for p in parts])),
        "client_lag": {"p99": round(quantile(lag, 0.99) * 1000, 2) if lag else 0.0},
        "cpu_us_per_msg": round(measured["cpu_s"] / delivered * 1e6, 1) if delivered else None,
        "errors": errors,
        "closes": closes,
        **{
            k: measured[k]
            for k in (
                "cpu_s",
                "cpu_percent",
                "rss_mib",
                "loop_lag",
                "gc_collections",
                "probe",
                "load_average",
            )
        },
    }


def _tally(parts: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """Error frames by code and closes by reason, summed over the client processes."""
    errors: dict[str, int] = {}
    closes: dict[str, int] = {}
    for p in parts:
        for table, into in ((p["errors"], errors), (p["closes"], closes)):
            for key, n in table.items():
                into[key] = into.get(key, 0) + n
    return errors, closes


async def storm(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    probe: Probe,
    fraction: float,
    background_rate: float,
    background_s: float,
    wait_s: float = 30.0,
) -> dict[str, Any]:
    """Cut ``fraction`` of every process's visitors at one instant under background load.

    The cut comes a third into ``background_s`` seconds of open-loop traffic in both
    directions, so agents keep writing to visitors who are away.
    """
    at = time.time() + background_s / 3
    overflows = listen_overflows()
    traffic = asyncio.ensure_future(
        load(target, pool, http, probe, background_rate, background_s, seed=7)
    )
    parts = await pool.each("storm", at=at, fraction=fraction, wait_s=wait_s)
    background = await traffic
    resumes = merge([_pack(p["resume_s"]) for p in parts])
    dropped = sum(p["dropped"] for p in parts)
    resumed = sum(p["resumed"] for p in parts)
    return {
        "dropped": dropped,
        "resumed": resumed,
        "all_resumed_s": round(resumes[-1], 2) if resumes and resumed == dropped else None,
        "resume": summary_ms(resumes),
        "listen_overflows": listen_overflows() - overflows,
        "background_per_s": background_rate,
        "background": {k: background[k] for k in ("delivery", "ack", "closes", "errors")},
    }


async def place(target: Target, pool: Pool) -> dict[str, Any]:
    """Tell each client process which of its conversations span two server workers.

    The server's /proc says which worker holds each client socket; conversations with a
    side that is not on a WebSocket (long-polling: each request may reach another worker)
    stay unknown.
    """
    addresses = await pool.each("addresses")
    where = target.server.placement()

    def workers(items: list) -> list[int | None]:
        return [where.get(tuple(a)) if a else None for a in items]

    counts = await pool.each(
        "placement",
        [{"visitors": workers(a["visitors"]), "agents": workers(a["agents"])} for a in addresses],
    )
    total = {k: sum(c[k] for c in counts) for k in ("cross", "same", "unknown")}
    known = total["cross"] + total["same"]
    total["cross_share"] = round(total["cross"] / known, 3) if known else None
    return total


def _pack(values: list[float]) -> bytes:
    return array("d", values).tobytes()


async def sweep(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    probe: Probe,
    rates: list[float],
    step_s: float,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """Rising offered rates until p99 delivery exceeds the target (or messages go missing).

    ``warmup_s``: first a window at the lowest rate that is not judged, so that the first
    step does not pay for every conversation's first message (cold caches, fan-out keys).
    """
    steps, best, warmup = [], None, None
    if warmup_s > 0:
        warmup = await load(target, pool, http, probe, rates[0], warmup_s, seed=99)
        warmup["drain"] = await drain(target, pool)
    for n, rate in enumerate(rates):
        step = await load(target, pool, http, probe, rate, step_s, seed=100 + n)
        step["ok"] = (
            step["delivery"]["p99"] <= P99_TARGET_MS
            and step["late_unacked"] == 0
            and not step["closes"]
        )
        steps.append(step)
        log.info("sweep %s: %.0f msg/s -> p99 %.1f ms", target.kind, rate, step["delivery"]["p99"])
        if not step["ok"]:
            break
        best = rate
        step["drain"] = await drain(target, pool)
    return {"steps": steps, "best_rate": best, "warmup": warmup}


async def drain(target: Target, pool: Pool) -> dict[str, Any]:
    """Until every client holds every acked message (re-sending what has no ack)."""
    drained = await pool.each("drain", wait_s=target.drain_s, deadline_s=target.drain_s + 60)
    return {
        "pending": sum(d["pending"] for d in drained),
        "behind": sum(d["behind"] for d in drained),
        "drain_s": max(d["drain_s"] for d in drained),
    }


async def verify(target: Target, pool: Pool) -> dict[str, Any]:
    """Drain, then check the population against storage."""
    drained = await drain(target, pool)
    records = await pool.each("records", deadline_s=120)
    result = await target.check(records)
    result["pending_after_drain"] = drained["pending"]
    result["drain_s"] = drained["drain_s"]
    return result


def _department(index: int) -> str:
    """The department of client process ``index`` in a routed population: its agents have
    that skill, so routing keeps each process's conversations among its own agents."""
    return f"bench-w{index}"


async def populate_routed(
    target: Target, pool: Pool, http: aiohttp.ClientSession, visitors: int, agents: int
) -> dict[str, Any]:
    """Visitors start conversations, then agents go online and **routing** assigns them.

    Each client process gets ``visitors / len(pool)`` visitors starting in a department
    of its own and ``agents / len(pool)`` agents with that skill; an agent holds what its
    ``assignment`` frames gave it (as a console does), not a share chosen here.
    """
    started = time.monotonic()
    v_tokens = await target.visitors(http, visitors)
    a_tokens = []
    for index, share in enumerate(_split(list(range(agents)), len(pool))):
        a_tokens.append(await target.agents(http, len(share), skills=[_department(index)]))
    tokens_s = time.monotonic() - started
    results = await pool.each(
        "open_routed",
        [
            {"department": _department(i), "visitors": v, "agents": a_tokens[i]}
            for i, v in enumerate(_split(v_tokens, len(pool)))
        ],
        base=target.base,
        wait_s=120.0,
    )
    return {
        **_set_up(results, tokens_s, started),
        "setup_unassigned": sum(r["unassigned"] for r in results),
        "routed_s": max(r["assigned_s"] for r in results),
    }


def _loops(server: Any) -> tuple[float, float]:
    """Seconds the server's event-loop threads (each worker's main thread) ran and waited
    for a CPU so far, summed."""
    ran = waited = 0.0
    for pid in server.worker_pids().values():
        with contextlib.suppress(OSError):
            r, w = schedstat(pid)
            ran, waited = ran + r, waited + w
    return ran, waited


async def kill(
    target: Target,
    pool: Pool,
    http: aiohttp.ClientSession,
    visitors: int,
    agents: int,
    rate: float,
    duration: float,
    late: int,
    away_fraction: float,
    away_s: float,
    wait_s: float = 30.0,
) -> dict[str, Any]:
    """``kill -9`` of the server under load, restarted on the same data and port.

    A routed population (:func:`populate_routed`) writes open-loop at ``rate`` for
    ``duration`` s; a third in, the server process gets SIGKILL and is started again at
    once. Every client reconnects (jittered, backing off to 2 s while the port refuses),
    resumes every conversation and re-sends what had no ack with the same ``cid``, except
    ``away_fraction`` of the agents, kept away until ``away_s`` s after the restart. As soon
    as the server answers, ``late`` new visitors start conversations (and write once):
    routing queues them or gives them to agents whose consoles are still away. Measured:
    kill to the port listening again (the restart) and to ``/readyz`` answering, from the
    restart to each client resumed, whether every conversation was assigned
    and its agent told (an ``assignment`` frame after the kill: routed, or the replay on
    connect) once the agents are back, and the loss check against storage.
    """
    setup = await populate_routed(target, pool, http, visitors, agents)
    late_tokens = _split(await target.visitors(http, late), len(pool))
    armed = await pool.each("kill_arm", away_fraction=away_fraction)
    server = target.server
    traffic = asyncio.ensure_future(
        pool.each("load", rate=rate / len(pool), duration=duration, seed=11, deadline_s=600)
    )
    await asyncio.sleep(duration / 3)
    load_average = round(os.getloadavg()[0], 2)
    cut = time.time()
    server.kill()
    killed = time.time()
    listening = await server.restart()
    ready, cpu_ready, sched_ready = time.time(), server.cpu(), _loops(server)
    log.info(
        "kill: killed in %.2f s, listening %.2f s and ready %.2f s after the kill",
        killed - cut,
        listening - cut,
        ready - cut,
    )
    late_started = asyncio.ensure_future(
        pool.each(
            "kill_late",
            [{"department": _department(i), "visitors": t} for i, t in enumerate(late_tokens)],
            base=target.base,
        )
    )
    resumed = await pool.each("kill_resumed", cut=cut, ready=listening, wait_s=wait_s)
    resuming_s, cpu_resuming = time.time() - ready, server.cpu() - cpu_ready
    ran, waited = (b - a for a, b in zip(sched_ready, _loops(server), strict=True))
    await asyncio.sleep(max(0.0, listening + away_s - time.time()))
    released_at = time.time() - listening
    late_result = await late_started
    back = await pool.each("kill_release", cut=cut, wait_s=wait_s)
    parts = await traffic
    drained = await drain(target, pool)
    loss = await verify(target, pool)
    told: dict[str, list[str]] = {}
    ours: set[str] = set()
    for part in await pool.each("kill_told", since=cut):
        told.update(part["told"])
        ours.update(part["conversations"])
    stored = await target.conversations()
    queued_left = sorted(c for c, (state, *_) in stored.items() if c in ours and state == "queued")
    untold: dict[str, int] = {}
    for conversation_id, (state, assignee, _) in stored.items():
        if state == "assigned" and assignee in told and conversation_id not in told[assignee]:
            untold[assignee] = untold.get(assignee, 0) + 1
    # assignments made while consoles were cut off (before the kept-away agents were let
    # back): the ones the replay on connect must tell
    away_ids = {i for a in armed for i in a["ids"]}
    released = min(r["released"] for r in back)
    cut_off = [
        (assignee, at)
        for state, assignee, at in stored.values()
        if state == "assigned" and at is not None and cut < float(at) < released
    ]
    times = merge([_pack(r["resume_s"]) for r in resumed])
    away_times = merge([_pack(r["resume_s"]) for r in back])
    clients = sum(r["clients"] for r in resumed)
    done = sum(r["resumed"] for r in resumed)
    errors, closes = _tally(parts)
    return {
        **setup,
        "offered_per_s": rate,
        "duration_s": duration,
        "load_average_at_kill": load_average,
        "wall_times": {"kill": cut, "listening": listening, "ready": ready, "released": released},
        "kill_to_listen_s": round(listening - cut, 2),
        "kill_to_ready_s": round(ready - cut, 2),
        "cpu_percent_resuming": round(100 * cpu_resuming / resuming_s, 1) if resuming_s else None,
        # the event-loop thread meanwhile: on a CPU, and runnable but waiting for one
        "loop_ran_percent_resuming": round(100 * ran / resuming_s, 1) if resuming_s else None,
        "loop_waited_percent_resuming": round(100 * waited / resuming_s, 1) if resuming_s else None,
        "clients_back_at_once": clients,
        "clients_resumed": done,
        "resume_max_s": round(times[-1], 2) if times and done == clients else None,
        "resume_p99_s": round(quantile(times, 0.99), 2) if times else None,
        "resume": summary_ms(times),
        "agents_kept_away": sum(a["away"] for a in armed),
        "agents_released_after_s": round(released_at, 2),
        "away_agents_resumed": len(away_times),
        "away_resume_max_s": round(away_times[-1], 2) if away_times else None,
        "late_visitors": sum(r["started"] for r in late_result),
        "late_failed": sum(r["failed"] for r in late_result),
        "late_failures": sorted({f for r in late_result for f in r["failures"]}),
        "all_told_after_release_s": max(r["all_told_s"] for r in back),
        "assigned_while_cut_off": len(cut_off),
        "assigned_to_away_agents": sum(1 for assignee, _ in cut_off if assignee in away_ids),
        "conversations": len(ours),
        "queued_left": len(queued_left),
        "queued_left_ids": queued_left[:20],
        "assigned_untold": sum(untold.values()),
        "agents_untold": len(untold),
        "untold_by_agent": untold,
        "untold_at_release": sum(r["untold"] for r in back),
        "sent": sum(p["sent"] for p in parts),
        "acked": sum(p["acked"] for p in parts),
        "resent": sum(p["resent"] for p in parts),
        "delivery": summary_ms(merge([p["delivery"] for p in parts])),
        "ack": summary_ms(merge([p["ack"] for p in parts])),
        "errors": errors,
        "closes": closes,
        "drain": drained,
        "loss": loss,
    }
