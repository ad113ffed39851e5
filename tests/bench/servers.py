"""The processes under test: ``kefu run`` and the baseline relay, measured through /proc.

Each runs as its own subprocess on a free loopback port with its working files in a
temporary directory. CPU time comes from ``/proc/PID/stat`` (user + system), memory from
``/proc/PID/status`` (``VmRSS``), so nothing inside the server is needed to measure it.
With ``kefu run --workers N`` both are summed over the supervisor and every process below
it (``/proc/PID/task/PID/children``), and :meth:`ServerProcess.placement` tells which
worker holds a client's socket (its peer address in ``/proc/net/tcp``, the socket's inode
among the worker's file descriptors), so nothing in the server says it either.

Storage is SQLite in the working directory, or the local PostgreSQL in a schema of its own
(``[sql] pg_schema``, dropped afterwards); several workers share the local Redis as their
bus under a key prefix of their own (deleted afterwards).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
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
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


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


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process's main thread (kefu's event loop) ran on a CPU and waited in the
    run queue for one, so far (``/proc/PID/schedstat``)."""
    with open(f"/proc/{pid}/schedstat") as f:
        ran, waited = f.read().split()[:2]
    return int(ran) / 1e9, int(waited) / 1e9


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first (gone ones left out)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        found.append(current)
        queue += children
    return found


def _summed(pids: list[int], measure) -> float:
    total = 0
    for pid in pids:
        try:
            total += measure(pid)
        except OSError:  # exited meanwhile
            pass
    return total


def worker_index_of(pid: int) -> int | None:
    """``KEFU_WORKER_INDEX`` from a process's environment (None when it has none)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"KEFU_WORKER_INDEX="):
            return int(item.split(b"=", 1)[1])
    return None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _hex_address(text: str) -> tuple[str, int]:
    ip, port = text.split(":")
    raw = bytes.fromhex(ip)[::-1]  # little-endian on every Linux kefu runs on
    return ".".join(str(b) for b in raw), int(port, 16)


def tcp_peers(local_port: int) -> dict[int, tuple[str, int]]:
    """``{socket inode: peer (ip, port)}`` of the established IPv4 sockets on ``local_port``."""
    peers = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] != "01":  # ESTABLISHED
                continue
            local = fields[1]
            if int(local.rsplit(":", 1)[1], 16) != local_port:
                continue
            peers[int(fields[9])] = _hex_address(fields[2])
    return peers


def listening_on(port: int) -> bool:
    """Whether a socket listens on ``port`` (IPv4, any address)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


async def _listening(port: int, every_s: float = 0.01) -> float:
    """The wall time ``port`` was first seen listening (polled every ``every_s``)."""
    while not listening_on(port):  # noqa: ASYNC110 (nothing to wait on but /proc)
        await asyncio.sleep(every_s)
    return time.time()


def toml_sections(sections: dict[str, dict[str, str]]) -> str:
    """``{section: {key: TOML value}}`` as TOML text."""
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())
        for name, keys in sections.items()
        if keys
    )


class ServerProcess:
    """A server subprocess on a loopback port; ``kind`` is ``kefu`` or ``relay``.

    ``settings`` are ``{section: {key: TOML value}}`` laid over the bench's own config;
    ``workers`` above 1 starts ``kefu run --workers N`` on the Redis bus; ``storage`` is
    ``sqlite`` or ``postgres``.
    """

    def __init__(
        self,
        kind: str,
        workdir: Path,
        settings: dict[str, dict[str, str]] | None = None,
        backlog: int = 4096,
        workers: int = 1,
        storage: str = "sqlite",
        pg_url: str = PG_URL,
        redis_url: str = REDIS_URL,
    ) -> None:
        self.kind = kind
        self.backlog = backlog  # the relay's listen backlog, as kefu run's
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.grpc_port = free_port()  # [transport_grpc] port, used when it is enabled
        self.grpc_target = f"grpc://127.0.0.1:{self.grpc_port}"
        self.secret = secrets.token_urlsafe(48)
        self.settings = settings or {}
        self.workers = workers if kind == "kefu" else 1
        self.storage = storage if kind == "kefu" else "none"
        self.pg_url, self.redis_url = pg_url, redis_url
        tag = secrets.token_hex(4)
        self.pg_schema = f"bench_{tag}" if self.storage == "postgres" else None
        self.redis_prefix = f"kefu-bench-{tag}:" if self.workers > 1 else None
        self.proc: subprocess.Popen | None = None
        self.stdout = workdir / f"{kind}.out"
        self.stderr = workdir / f"{kind}.err"
        self.db = workdir / "data" / "kefu.db"
        self._pids: list[int] = []

    def config(self) -> dict[str, dict[str, str]]:
        """The bench's kefu config with the overrides laid over it."""
        sections: dict[str, dict[str, str]] = {
            "server": {
                "port": str(self.port),
                "data_dir": f'"{self.workdir / "data"}"',
                "reload": "false",
                "secret": f'"{self.secret}"',
                "log_level": '"warning"',
                "drain_timeout": "15",
            },
            "storage": {"backend": '"sql"'},
            "auth": {"password_cost": "10"},
            "transport_grpc": {"port": str(self.grpc_port)},
        }
        if self.pg_schema:
            sections["sql"] = {"url": f'"{self.pg_url}"', "pg_schema": f'"{self.pg_schema}"'}
        if self.workers > 1:
            from kefu.core.plugins import DEFAULT_PLUGINS

            if "kefu.plugins.bus_redis" not in DEFAULT_PLUGINS:  # until it is a default one
                sections["plugins"] = {"enable": '["kefu.plugins.bus_redis"]'}
            sections["bus"] = {"backend": '"redis"'}
            sections["bus_redis"] = {
                "url": f'"{self.redis_url}"',
                "prefix": f'"{self.redis_prefix}"',
            }
        for name, keys in self.settings.items():
            keys = dict(keys)
            if name == "plugins" and "enable" in keys and "enable" in sections.get(name, {}):
                both = ast.literal_eval(sections[name]["enable"]) + ast.literal_eval(keys["enable"])
                keys["enable"] = repr(list(dict.fromkeys(both))).replace("'", '"')
            sections.setdefault(name, {}).update(keys)
        return sections

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
        config.write_text(toml_sections(self.config()), encoding="utf-8")
        command = [sys.executable, "-m", "kefu.core.cli", "run", "--config", str(config)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        return command

    async def start(self, ready_s: float | None = None) -> None:
        # a supervisor starts its workers one after the other on a shared, busy machine
        ready_s = ready_s or 60.0 + 30.0 * (self.workers - 1)
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
                        if resp.status == 200 and self._all_up():
                            self._pids = self.pids()
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not become ready in {ready_s:.0f} s")

    def _all_up(self) -> bool:
        """Every worker started (a supervisor prints its banner once all are ready)."""
        if self.workers == 1:
            return True
        return " serving on " in self.stdout.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server's processes: the supervisor (or single process) and all below it."""
        found = descendants(self.pid)
        self._pids = sorted(set(self._pids) | set(found))  # to kill stragglers at the end
        return found

    def worker_pids(self) -> dict[int, int]:
        """``{worker index: pid}``; a single process is worker 0."""
        if self.workers == 1:
            return {0: self.pid}
        found = {}
        for pid in descendants(self.pid)[1:]:
            index = worker_index_of(pid)
            if index is not None and index not in found:
                found[index] = pid
        return found

    def cpu(self) -> float:
        """CPU seconds of every server process (supervisor and workers) so far."""
        return _summed(self.pids(), cpu_seconds)

    def rss(self) -> int:
        """Resident memory summed over the server's processes."""
        return int(_summed(self.pids(), rss_bytes))

    def rss_by_worker(self) -> dict[int, int]:
        return {i: int(_summed([pid], rss_bytes)) for i, pid in self.worker_pids().items()}

    def placement(self) -> dict[tuple[str, int], int]:
        """``{client (ip, port): worker index}`` for every connection the workers hold."""
        peers = tcp_peers(self.port)
        found = {}
        for index, pid in self.worker_pids().items():
            for inode in socket_inodes(pid):
                peer = peers.get(inode)
                if peer is not None:
                    found[peer] = index
        return found

    def connections_by_worker(self) -> dict[int, int]:
        """Established client connections per worker."""
        counts = dict.fromkeys(self.worker_pids(), 0)
        for index in self.placement().values():
            counts[index] += 1
        return counts

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

    def kill(self) -> None:
        """SIGKILL the server and every worker below it at once, as a crash would."""
        assert self.proc is not None
        for pid in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    async def restart(self) -> float:
        """Start the server again on the same data directory and port (after :meth:`kill`);
        returns the wall time its port was listening again (seen in ``/proc/net/tcp``,
        not through the server, whose ``/readyz`` answer may queue behind the clients'
        reconnects). The killed run's logs are kept beside, as ``kefu.out.killed-N``."""
        n = 1
        while self.stdout.with_name(f"{self.stdout.name}.killed-{n}").exists():
            n += 1
        for log_file in (self.stdout, self.stderr):
            if log_file.exists():
                log_file.rename(log_file.with_name(f"{log_file.name}.killed-{n}"))
        watch = asyncio.ensure_future(_listening(self.port))
        try:
            await self.start()
            return await asyncio.wait_for(watch, 5.0)
        finally:
            watch.cancel()

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
        self.kill_stragglers()

    def kill_stragglers(self) -> None:
        """SIGKILL any worker this server started that outlived it (by recorded pid)."""
        for pid in self._pids:
            if pid == self.pid:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                log.warning("%s: killed worker pid %d left behind", self.kind, pid)
            except (ProcessLookupError, PermissionError):
                pass

    async def cleanup(self) -> None:
        """Drop this run's PostgreSQL schema and Redis keys (after :meth:`stop`)."""
        if self.pg_schema:
            import asyncpg

            db = await asyncpg.connect(self.pg_url)
            try:
                await db.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
            finally:
                await db.close()
        if self.redis_prefix:
            import redis.asyncio as aioredis

            client = aioredis.from_url(self.redis_url)
            try:
                batch = []
                async for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        await client.delete(*batch)
                        batch = []
                if batch:
                    await client.delete(*batch)
            finally:
                await client.aclose()


async def scrape_metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    """``/metrics`` as ``{'name{labels}': value}``; None when the endpoint is absent."""
    try:
        async with http.get(f"{base}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
    except aiohttp.ClientError:
        return None
    return parse_metrics(text)


async def scrape_workers(base: str, workers: int, tries: int = 40) -> dict[int, dict | None]:
    """``/metrics`` of every worker sharing the port: ``{worker index: samples}``.

    The kernel picks the worker per connection, so each try opens a new connection,
    asks ``/healthz`` which worker it reached, and reads ``/metrics`` on the same
    keep-alive connection; until every worker answered or ``tries`` ran out.
    """
    found: dict[int, dict | None] = {}
    for _ in range(tries):
        if len(found) >= workers:
            break
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as http:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    index = (await resp.json())["worker"]
                if index in found:
                    continue
                samples = await scrape_metrics(http, base)
                found[index] = own_series(samples, index) if samples else samples
            except (aiohttp.ClientError, KeyError, ValueError):
                continue
    return found


WORKER_LABEL = re.compile(r',?worker="[^"]*:(\d+)"')


def own_series(samples: dict[str, float], index: int) -> dict[str, float]:
    """The answering worker's own (live) samples, without their ``worker`` label.

    With a shared bus every worker's /metrics also holds the other workers' series,
    labelled ``worker="host:port:index"`` and up to ``[metrics] cluster_interval_s`` old;
    without that label (the in-process bus) every sample is the worker's own.
    """
    own = {}
    for key, value in samples.items():
        match = WORKER_LABEL.search(key)
        if match is None:
            own[key] = value
        elif int(match.group(1)) == index:
            own[key.replace(match.group(0), "").replace("{,", "{").replace("{}", "")] = value
    return own


def parse_metrics(text: str) -> dict[str, float]:
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


def loop_lag_workers(before: dict[int, dict | None], after: dict[int, dict | None]) -> dict | None:
    """:func:`loop_lag` of each worker, and the worst bound of any as the whole's."""
    per = {i: loop_lag(before.get(i), after.get(i)) for i in sorted(after)}
    known = [v for v in per.values() if v]
    if not known:
        return None
    return {
        "source": "metrics",
        "samples": sum(v["samples"] for v in known),
        "p50_le_ms": max(v["p50_le_ms"] for v in known),
        "p99_le_ms": max(v["p99_le_ms"] for v in known),
        "max_le_ms": max(v["max_le_ms"] for v in known),
        "workers_measured": len(known),
        "per_worker": {str(i): v for i, v in per.items()},
    }


def gc_workers(before: dict[int, dict | None], after: dict[int, dict | None]) -> dict | None:
    """GC collections summed over the workers."""
    total: dict[str, int] = {}
    for index in after:
        for key, n in (gc_collections(before.get(index), after.get(index)) or {}).items():
            total[key] = total.get(key, 0) + n
    return total or None


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
