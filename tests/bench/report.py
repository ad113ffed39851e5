"""Numbers into a report: percentiles, one JSON file per run and a markdown table.

Both go to ``build/bench/`` (not committed): ``<stamp>-<profile>.json`` with everything
measured, ``<stamp>-<profile>.md`` with kefu beside the baseline relay (ratios) and the
targets of issue 7, and ``latest.md`` / ``latest.json`` copies.
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
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


#: (scenario, label, path inside a scenario's result, target text, lower is better)
ROWS = [
    ("idle", "connections held", "connections", "15,000", False),
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
]


def markdown(run: dict[str, Any]) -> str:
    kefu, relay = run["results"].get("kefu", {}), run["results"].get("relay", {})
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
        "| scenario | metric | kefu | relay | kefu / relay | target (issue 7) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for scenario, label, path, target, _ in ROWS:
        k, r = _get(kefu.get(scenario, {}), path), _get(relay.get(scenario, {}), path)
        if k is None and r is None:
            continue
        ratio = "-"
        if isinstance(k, int | float) and isinstance(r, int | float) and r and not math.isnan(r):
            ratio = f"{k / r:.2f}x"
        lines.append(f"| {scenario} | {label} | {_fmt(k)} | {_fmt(r)} | {ratio} | {target} |")
    sweep = _get(kefu, "sweep.steps") or []
    if sweep:
        lines += [
            "",
            "Rate sweep (kefu):",
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
