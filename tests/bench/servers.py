"""The processes under test: ``kefu run`` and the baseline relay, measured through /proc.

Each runs as its own subprocess on a free loopback port with its working files in a
temporary directory. CPU time comes from ``/proc/PID/stat`` (user + system), memory from
``/proc/PID/status`` (``VmRSS``), so nothing inside the server is needed to measure it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD = re.compile(r"password '([^']+)'")
WIDGET_KEY = re.compile(r"widget key '([^']+)'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full
    (``TcpExt ListenOverflows``, machine-wide; 0 where it cannot be read)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ServerProcess:
    """A server subprocess on a loopback port; ``kind`` is ``kefu`` or ``relay``."""

    def __init__(self, kind: str, workdir: Path, settings: str = "", backlog: int = 4096) -> None:
        self.kind = kind
        self.backlog = backlog  # the relay's listen backlog, as kefu run's
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.secret = secrets.token_urlsafe(48)
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.stdout = workdir / f"{kind}.out"
        self.stderr = workdir / f"{kind}.err"
        self.db = workdir / "data" / "kefu.db"

    def command(self) -> list[str]:
        if self.kind == "relay":
            script = str(Path(__file__).with_name("relay.py"))
            return [
                sys.executable,
                script,
                "--port",
                str(self.port),
                "--backlog",
                str(self.backlog),
            ]
        config = self.workdir / "kefu.toml"
        config.write_text(
            f'[server]\nport = {self.port}\ndata_dir = "{self.workdir / "data"}"\n'
            f'reload = false\nsecret = "{self.secret}"\nlog_level = "warning"\n'
            '[storage]\nbackend = "sql"\n[auth]\npassword_cost = 10\n' + self.settings,
            encoding="utf-8",
        )
        return [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(config)]

    async def start(self, ready_s: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KEFU_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
            self.command(),
            stdout=self.stdout.open("wb"),
            stderr=self.stderr.open("wb"),
            cwd=self.workdir,
            env=env,
            preexec_fn=raise_nofile,  # inherited across exec: the server may hold 20k sockets
        )
        deadline = time.monotonic() + ready_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited: {self.stderr.read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not become ready in {ready_s:.0f} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def announcements(self) -> dict[str, str]:
        """The demo admin password and widget key ``kefu run`` printed once."""
        text = self.stdout.read_text()
        found = {}
        for name, pattern in (("password", PASSWORD), ("widget_key", WIDGET_KEY)):
            match = pattern.search(text)
            if match:
                found[name] = match.group(1)
        return found

    async def stop(self, grace_s: float = 20.0) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if self.proc.poll() is None:
            log.warning("%s did not stop in %.0f s; killing it", self.kind, grace_s)
            self.proc.kill()
            self.proc.wait(5)


async def scrape_metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    """``/metrics`` as ``{'name{labels}': value}``; None when the endpoint is absent."""
    try:
        async with http.get(f"{base}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
    except aiohttp.ClientError:
        return None
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            samples[key] = float(value)
        except ValueError:
            continue
    return samples


def loop_lag(before: dict[str, float] | None, after: dict[str, float] | None) -> dict | None:
    """Loop-lag quantile bounds over a window, from the exporter's histogram deltas.

    A histogram only says which bucket a value falls in, so p50, p99 and the maximum are
    reported as that bucket's upper bound ("at most"). (The exporter's max gauge covers
    a sliding minute, which would mix in what happened before the window.)
    """
    if not before or not after:
        return None
    prefix = "kefu_event_loop_lag_seconds_bucket{"
    buckets = []
    for key, value in after.items():
        if key.startswith(prefix):
            bound = key.split('le="', 1)[1].split('"', 1)[0]
            upper = float("inf") if bound == "+Inf" else float(bound)
            buckets.append((upper, value - before.get(key, 0.0)))
    if not buckets:
        return None
    buckets.sort()
    total = buckets[-1][1]
    if total <= 0:
        return None

    def bound(q: float) -> float:
        return next(upper for upper, count in buckets if count >= q * total)

    return {
        "source": "metrics",
        "samples": int(total),
        "p50_le_ms": bound(0.5) * 1000,
        "p99_le_ms": bound(0.99) * 1000,
        "max_le_ms": bound(1.0) * 1000,
    }


def gc_collections(before: dict | None, after: dict | None) -> dict[str, int] | None:
    """Python GC collections per generation in the server over a window (from /metrics)."""
    if not before or not after:
        return None
    found = {}
    for generation in ("0", "1", "2"):
        key = f'python_gc_collections_total{{generation="{generation}"}}'
        if key in after:
            found[f"gen{generation}"] = int(after[key] - before.get(key, 0.0))
    return found or None
