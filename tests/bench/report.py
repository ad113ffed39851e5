"""Numbers into a report: percentiles, one JSON file per run and a markdown table.

Both go to ``build/bench/`` (not committed): ``<stamp>-<profile>.json`` with everything
measured, ``<stamp>-<profile>.md`` with kefu beside the baseline relay (ratios) and the
targets of issue 7, and ``latest.md`` / ``latest.json`` copies. A run of kefu with
several server-worker counts (``--server-workers 1,2``) adds a table of the counts side
by side, with the sweep's scaling ratio.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from array import array
from pathlib import Path
from typing import Any

REPORT_DIR = Path(__file__).resolve().parents[2] / "build" / "bench"


def merge(chunks: list[bytes]) -> list[float]:
    """Worker sample arrays (``array('d')`` bytes) into one sorted list."""
    values = array("d")
    for chunk in chunks:
        values.frombytes(chunk)
    return sorted(values)


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (NaN when there are none)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary_ms(ordered: list[float]) -> dict[str, float]:
    """p50/p95/p99/p999/max in milliseconds, and the sample count."""
    out = {"n": len(ordered)}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999)):
        out[label] = round(quantile(ordered, q) * 1000, 2)
    out["max"] = round(ordered[-1] * 1000, 2) if ordered else math.nan
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def _get(data: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):  # per worker
        return " / ".join(_fmt(v) for _, v in sorted(value.items()))
    return str(value)


#: (scenario, label, path inside a scenario's result, target text, lower is better)
ROWS = [
    ("idle", "server workers", "server_workers", "", False),
    ("idle", "connections held", "connections", "15,000", False),
    ("idle", "connections per worker", "connections_by_worker", "", False),
    ("idle", "connections up at the end of the hold", "held_at_end", "", False),
    ("idle", "connection attempts that failed", "failed", "0", True),
    ("idle", "ramp (connections/s)", "ramp_per_s", "≥ 2,000", False),
    ("idle", "accept-queue overflows during the ramp", "listen_overflows", "", True),
    ("idle", "server RSS per connection (KiB)", "rss_per_conn_kib", "≤ 24, ≤ 1.6x relay", True),
    ("idle", "server CPU while holding (%)", "cpu_percent", "", True),
    ("idle", "loop lag p99 (ms, ≤ bucket)", "loop_lag.p99_le_ms", "≤ 10", True),
    ("idle", "loop lag max (ms, ≤ bucket)", "loop_lag.max_le_ms", "≤ 50", True),
    ("idle", "ping round trip p99 (ms)", "probe.p99", "", True),
    ("idle", "ping round trip max (ms)", "probe.max", "", True),
    ("idle", "machine load average (1 min)", "load_average", "", True),
    ("chat", "visitors / agents", "population", "5,000 / 250", False),
    ("chat", "offered (msg/s)", "offered_per_s", "2,000", False),
    ("chat", "delivered (msg/s)", "delivered_per_s", "", False),
    ("chat", "delivery p50 (ms)", "delivery.p50", "", True),
    ("chat", "delivery p99 (ms)", "delivery.p99", "≤ 50", True),
    ("chat", "conversations with sides on two workers", "cross_worker.cross_share", "", False),
    (
        "chat",
        "delivery p99, sides on two workers (ms)",
        "cross_worker.delivery_cross.p99",
        "≤ 10",
        True,
    ),
    ("chat", "delivery p99, sides on one worker (ms)", "cross_worker.delivery_same.p99", "", True),
    ("chat", "delivery p999 (ms)", "delivery.p999", "≤ 200", True),
    ("chat", "ack p99 (ms)", "ack.p99", "≤ 30", True),
    ("chat", "server CPU per delivered message (µs)", "cpu_us_per_msg", "≤ 4x relay", True),
    ("chat", "loop lag p99 (ms, ≤ bucket)", "loop_lag.p99_le_ms", "≤ 10", True),
    ("chat", "loop lag max (ms, ≤ bucket)", "loop_lag.max_le_ms", "≤ 50", True),
    ("chat", "ping round trip p99 (ms)", "probe.p99", "", True),
    ("chat", "client scheduler lag p99 (ms)", "client_lag.p99", "", True),
    ("chat", "machine load average (1 min)", "load_average", "", True),
    ("chat", "lost / duplicated (stored)", "loss.summary", "0 / 0", True),
    ("storm", "connections dropped", "dropped", "5,000", False),
    ("storm", "all resumed after (s)", "all_resumed_s", "≤ 10", True),
    ("storm", "resume p50 (ms)", "resume.p50", "", True),
    ("storm", "accept-queue overflows", "listen_overflows", "", True),
    ("storm", "lost (stored)", "loss.summary", "0", True),
    ("sweep", "highest offered rate with p99 ≤ 50 ms", "best_rate", "report", False),
    ("longpoll", "visitors / agents", "population", "", False),
    ("longpoll", "offered (msg/s)", "offered_per_s", "", False),
    ("longpoll", "delivery p99 (ms)", "delivery.p99", "", True),
    ("longpoll", "ack p99 (ms)", "ack.p99", "", True),
    ("longpoll", "server CPU per delivered message (µs)", "cpu_us_per_msg", "", True),
    ("longpoll", "lost / duplicated (stored)", "loss.summary", "0 / 0", True),
    ("grpc_ws", "WebSocket: visitors / agents", "population", "", False),
    ("grpc_ws", "WebSocket: offered (msg/s)", "offered_per_s", "", False),
    ("grpc_ws", "WebSocket: delivered (msg/s)", "delivered_per_s", "", False),
    ("grpc_ws", "WebSocket: delivery p50 (ms)", "delivery.p50", "", True),
    ("grpc_ws", "WebSocket: delivery p99 (ms)", "delivery.p99", "", True),
    ("grpc_ws", "WebSocket: ack p99 (ms)", "ack.p99", "", True),
    ("grpc_ws", "WebSocket: server CPU per delivered message (µs)", "cpu_us_per_msg", "", True),
    ("grpc_ws", "WebSocket: machine load average (1 min)", "load_average", "", True),
    ("grpc_ws", "WebSocket: lost / duplicated (stored)", "loss.summary", "0 / 0", True),
    ("grpc", "gRPC: visitors / agents", "population", "", False),
    ("grpc", "gRPC: offered (msg/s)", "offered_per_s", "", False),
    ("grpc", "gRPC: delivered (msg/s)", "delivered_per_s", "", False),
    ("grpc", "gRPC: delivery p50 (ms)", "delivery.p50", "", True),
    ("grpc", "gRPC: delivery p99 (ms)", "delivery.p99", "", True),
    ("grpc", "gRPC: ack p99 (ms)", "ack.p99", "", True),
    ("grpc", "gRPC: server CPU per delivered message (µs)", "cpu_us_per_msg", "", True),
    ("grpc", "gRPC: machine load average (1 min)", "load_average", "", True),
    ("grpc", "gRPC: lost / duplicated (stored)", "loss.summary", "0 / 0", True),
]

#: The ``kill -9`` scenario (kefu only, a server of its own: tests/bench/scenarios.kill)
KILL_ROWS = [
    ("kill", "visitors / agents (routed)", "population", "2,000 / 100", False),
    ("kill", "set-up, routing included (s)", "setup_s", "", True),
    ("kill", "offered (msg/s)", "offered_per_s", "1,000", False),
    ("kill", "machine load average (1 min) at the kill", "load_average_at_kill", "", True),
    ("kill", "SIGKILL to the restarted server listening (s)", "kill_to_listen_s", "", True),
    ("kill", "SIGKILL to its /readyz answering (s)", "kill_to_ready_s", "", True),
    ("kill", "clients reconnecting at once", "clients_back_at_once", "", False),
    ("kill", "of which resumed", "clients_resumed", "all", False),
    ("kill", "all resumed, after the restart (listening) (s)", "resume_max_s", "≤ 5", True),
    ("kill", "resume p99, after the restart (listening) (s)", "resume_p99_s", "≤ 5", True),
    ("kill", "agents kept away after the restart", "agents_kept_away", "", False),
    ("kill", "kept-away agents let back after (s)", "agents_released_after_s", "", False),
    ("kill", "server CPU from /readyz to all resumed (%)", "cpu_percent_resuming", "", True),
    ("kill", "its loop thread meanwhile: on a CPU (%)", "loop_ran_percent_resuming", "", False),
    (
        "kill",
        "its loop thread meanwhile: waiting for a CPU (%)",
        "loop_waited_percent_resuming",
        "",
        True,
    ),
    ("kill", "kept-away agents: all resumed after (s)", "away_resume_max_s", "", True),
    ("kill", "new visitors started after the restart", "late_visitors", "", False),
    ("kill", "every conversation told to its agent (s)", "all_told_after_release_s", "", True),
    ("kill", "assigned before the kept-away agents were back", "assigned_while_cut_off", "", False),
    ("kill", "of which to a kept-away agent", "assigned_to_away_agents", "", False),
    ("kill", "conversations left queued once agents are back", "queued_left", "0", True),
    ("kill", "assignments the agent was not told of", "assigned_untold", "0", True),
    ("kill", "agents not told of an assignment", "agents_untold", "0", True),
    ("kill", "re-sent after the kill (same cid)", "resent", "", False),
    ("kill", "lost / duplicated (stored)", "loss.summary", "0 / 0", True),
]
ROWS += KILL_ROWS


def kefu_names(results: dict[str, Any]) -> list[str]:
    """The result names of kefu runs: ``kefu``, or ``kefu-1w``, ``kefu-2w``, ..., and the
    overload scenario's runs with the degradation plugin (``kefu+degradation``)."""
    return [name for name in results if name == "kefu" or name.startswith(("kefu-", "kefu+"))]


def _worker_names(names: list[str]) -> list[str]:
    return [name for name in names if "+" not in name]


#: (label, path inside the overload result, issue 16's target)
OVERLOAD_ROWS = [
    ("chat population (visitors / agents)", "setup.population", ""),
    ("ramp: highest step with p99 ≤ 50 ms (msg/s)", "ramp.ramp_best_rate", ""),
    ("P: highest rate with p99 ≤ 50 ms, confirmed (msg/s)", "rate", "report"),
    ("ramp (with the plugin): level changes below P", "ramp.changes_below_p", "0"),
    ("ramp: past P, overload detected after (s)", "ramp.detect_s", "≤ 1"),
    ("ramp: past P, the level entered first", "ramp.detect_level", ""),
    ("at P: delivered (msg/s)", "steady.delivered_per_s", ""),
    ("at P: goodput, delivered ≤ 200 ms (msg/s) = the peak", "steady.goodput_per_s", ""),
    ("at P: delivery p99 (ms)", "steady.delivery.p99", "≤ 50"),
    ("at P: level changes per minute", "steady.level_changes_per_min", "< 2"),
    ("at P: level at the end", "steady.level_at_end", ""),
    ("at P: machine load average (1 min)", "steady.load_average", ""),
    ("2P offered (msg/s)", "overload.offered_per_s", ""),
    ("2P: delivered (msg/s)", "overload.delivered_per_s", ""),
    ("2P: goodput (msg/s)", "overload.goodput_per_s", ""),
    ("2P: goodput / the peak", "overload.goodput_share_of_peak", "≥ 0.90"),
    ("2P: admitted messages' delivery p50 (ms)", "overload.delivery.p50", ""),
    ("2P: admitted messages' delivery p99 (ms)", "overload.delivery.p99", "< 100"),
    ("2P: ack p99 (ms)", "overload.ack.p99", ""),
    ("2P: sends refused (error frames)", "overload.errors", ""),
    ("2P: server RSS (MiB)", "overload.rss_mib", "no OOM"),
    ("2P: server file descriptors", "overload.server_fds", "no exhaustion"),
    ("2P: server CPU (%)", "overload.cpu_percent", ""),
    ("2P: level when it started", "overload.level_at_start", ""),
    ("2P: overload detected after (s)", "overload.detect_s", "≤ 1"),
    ("2P: highest level", "overload.highest_level", ""),
    ("load stopped: back at level 0 after (s)", "overload.back_to_0_s", "≤ 5"),
    ("2P: machine load average (1 min)", "overload.load_average", ""),
    ("flood: new connections", "flood.connections", "5,000"),
    ("flood: spread over (s)", "flood.flood_s", "2"),
    ("flood: opened / refused (503) / failed", "flood.summary", ""),
    ("flood: chat delivery p99 (ms)", "flood.chat.delivery.p99", "< 100"),
    ("flood: chat ack p99 (ms)", "flood.chat.ack.p99", ""),
    ("flood: level when it started", "flood.level_at_start", ""),
    ("flood: detected after its first handshake (s)", "flood.detect_s", "≤ 1"),
    ("flood: handshakes refused by level 2's limit", "flood.rate_limited_total", ""),
    ("flood: highest level", "flood.highest_level", ""),
    ("flood: back at level 0 after the window (s)", "flood.back_to_0_s", ""),
    ("flood: machine load average (1 min)", "flood.chat.load_average", ""),
    ("lost / duplicated (stored)", "loss.summary", "0 / 0"),
]


def _overload_table(results: dict[str, Any], names: list[str]) -> list[str]:
    names = [n for n in names if "overload" in results[n]]
    if not names:
        return []
    heads = [("with the degradation plugin" if "+" in n else "without") for n in names]
    lines = [
        "",
        "Overload (issue 16), twice the highest rate meeting p99 ≤ 50 ms:",
        "",
        "| metric | " + " | ".join(heads) + " | target |",
        "|---|" + "---:|" * len(names) + "---|",
    ]
    for n in names:
        flood = results[n]["overload"].get("flood")
        if flood:
            flood["summary"] = f"{flood['opened']} / {flood['refused']} / {flood['failed']}"
    for label, path, target in OVERLOAD_ROWS:
        values = [_get(results[n]["overload"], path) for n in names]
        if all(v is None for v in values):
            continue
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + f" | {target} |")
    for n in names:
        steps = _get(results[n]["overload"], "ramp.steps") or []
        lines += _steps_table(f"Overload ramp ({n})", steps)
    return lines


def _steps_table(title: str, steps: list[dict]) -> list[str]:
    """A sweep's or ramp's steps: offered, delivered, p99, whether it met p99 ≤ 50 ms."""
    if not steps:
        return []
    levels = any("level_changes" in s for s in steps)
    head = "| offered | delivered | p99 ms | ok |" + (" level changes |" if levels else "")
    lines = ["", f"{title}:", "", head, "|---:|---:|---:|---|" + ("---:|" if levels else "")]
    for s in steps:
        lines.append(
            f"| {_fmt(s['offered_per_s'])} | {_fmt(s['delivered_per_s'])} | "
            f"{_fmt(s['delivery']['p99'])} | {'yes' if s['ok'] else 'no'} |"
            + (f" {_fmt(s.get('level_changes'))} |" if levels else "")
        )
    return lines


#: (label, path) of the side-by-side table of server-worker counts
WORKER_ROWS = [
    ("storage", "storage"),
    ("idle: connections held", "idle.connections"),
    ("idle: connections up at the end of the hold", "idle.held_at_end"),
    ("idle: server RSS per connection (KiB)", "idle.rss_per_conn_kib"),
    ("idle: server CPU while holding (%)", "idle.cpu_percent"),
    ("chat: delivered (msg/s)", "chat.delivered_per_s"),
    ("chat: delivery p99 (ms)", "chat.delivery.p99"),
    ("chat: delivery p99, sides on two workers (ms)", "chat.cross_worker.delivery_cross.p99"),
    ("chat: server CPU per delivered message (µs)", "chat.cpu_us_per_msg"),
    ("sweep: highest offered rate with p99 ≤ 50 ms", "sweep.best_rate"),
    ("machine load average (1 min), chat", "chat.load_average"),
]


def _sweep_ratio(first: dict, other: dict) -> str:
    a, b = _get(first, "sweep.best_rate"), _get(other, "sweep.best_rate")
    return f"{b / a:.2f}x" if a and b else "-"


def _workers_table(results: dict[str, Any], names: list[str]) -> list[str]:
    heads = [f"{results[n].get('server_workers', 1)} worker(s)" for n in names]
    lines = [
        "",
        "Server workers side by side (kefu):",
        "",
        "| metric | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, path in WORKER_ROWS:
        values = [_get(results[n], path) for n in names]
        if all(v is None for v in values):
            continue
        lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")
    ratios = [_sweep_ratio(results[names[0]], results[n]) for n in names]
    lines.append("| sweep: scaling ratio to the first | " + " | ".join(ratios) + " |")
    return lines


def markdown(run: dict[str, Any]) -> str:
    names = kefu_names(run["results"])
    kefu = run["results"].get(names[0], {}) if names else {}
    relay = run["results"].get("relay", {})
    m = run["machine"]
    overrides = run["settings"].get("kefu_overrides", "").strip().replace("\n", "; ")
    lines = [
        f"# kefu load harness: {run['profile']} run, {run['started']}",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['load_average_at_start']}. "
        "Server and load clients share the machine.",
        "",
        f"kefu settings over the bench defaults: `{overrides}`." if overrides else "",
        "",
        f"| scenario | metric | {names[0] if names else 'kefu'} | relay | kefu / relay "
        "| target (issues 7, 11, 12) |",
        "|---|---|---:|---:|---:|---|",
    ]
    rows = 0
    for scenario, label, path, target, _ in ROWS:
        k, r = _get(kefu.get(scenario, {}), path), _get(relay.get(scenario, {}), path)
        if k is None and r is None:
            continue
        ratio = "-"
        if isinstance(k, int | float) and isinstance(r, int | float) and r and not math.isnan(r):
            ratio = f"{k / r:.2f}x"
        lines.append(f"| {scenario} | {label} | {_fmt(k)} | {_fmt(r)} | {ratio} | {target} |")
        rows += 1
    if not rows:  # only the overload ran: its own table below
        del lines[-2:]
    sweep = _get(kefu, "sweep.steps") or []
    if sweep:
        lines += [
            "",
            f"Rate sweep ({names[0]}):",
            "",
            "| offered msg/s | delivered msg/s | "
            "p99 ms | p999 ms | ack p99 ms | CPU µs/msg | meets p99 ≤ 50 ms |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in sweep:
            lines.append(
                f"| {_fmt(s['offered_per_s'])} | {_fmt(s['delivered_per_s'])} | "
                f"{_fmt(s['delivery']['p99'])} | {_fmt(s['delivery']['p999'])} | "
                f"{_fmt(s['ack']['p99'])} | {_fmt(s.get('cpu_us_per_msg'))} | "
                f"{'yes' if s['ok'] else 'no'} |"
            )
    workers = _worker_names(names)
    if len(workers) > 1:
        lines += _workers_table(run["results"], workers)
    lines += _overload_table(run["results"], names)
    for name in workers[1:]:
        lines += _steps_table(
            f"Rate sweep ({name})", _get(run["results"][name], "sweep.steps") or []
        )
    notes = run.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(run: dict[str, Any], directory: Path = REPORT_DIR) -> tuple[Path, Path]:
    """Write the JSON and markdown files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{run['started'].replace(':', '').replace('-', '')}-{run['profile']}"
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown(run), encoding="utf-8")
    shutil.copyfile(json_path, directory / "latest.json")
    shutil.copyfile(md_path, directory / "latest.md")
    return json_path, md_path
