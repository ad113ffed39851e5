"""Several worker processes on one port: ``kefu run --workers N`` (docs/scaling.md).

``kefu run`` with ``[server] workers`` above 1 becomes the supervisor. It checks that
the configuration can run on several processes (:func:`check_scaling`), makes sure the
secret exists, then starts N workers. Each worker is ``python -m kefu.core.cli run``
with ``KEFU_WORKER_INDEX`` set: a whole kernel that makes its own listening socket with
``SO_REUSEPORT`` on the one port, so the OS spreads new connections across them.

- Worker 0 starts first and alone (it creates tables and the demo site on a first
  start); the others start once it is ready. The banner is printed once, here, when
  every worker is ready, with what the workers announced under it.
- A worker that exits while the supervisor is not stopping is restarted after a
  back-off (0.5 s, doubling to 30 s; reset once a worker stayed up a minute), logged.
  A worker that fails during the first start fails start-up: the supervisor stops the
  others and exits with the worker's exit code (the worker printed the error).
- SIGTERM or SIGINT drains: SIGTERM goes to every worker, each closes its client
  connections with reason ``shutdown`` (clients resume on another worker or after the
  restart), and a worker still running after ``[server] drain_timeout`` is killed. A
  second signal kills at once.
- Each worker holds one end of a socket pair with the supervisor: it reports ready on
  it, and drains by itself when the supervisor's end closes (the supervisor was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kefu.core import __version__
from kefu.core.errors import ConfigError

if TYPE_CHECKING:
    from kefu.core.config import Config
    from kefu.core.kernel import Kernel

log = logging.getLogger("kefu.supervisor")

#: This worker's index, 0 to N-1 (0 in a single process); metrics may label by it.
WORKER_INDEX_ENV = "KEFU_WORKER_INDEX"
#: The file descriptor of a worker's end of its socket pair with the supervisor.
CONTROL_FD_ENV = "KEFU_SUPERVISOR_FD"

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # seconds up after which a worker's next crash starts the back-off again


def worker_index() -> int:
    """This process's worker index: ``KEFU_WORKER_INDEX``, 0 when not a supervised worker."""
    try:
        return int(os.environ.get(WORKER_INDEX_ENV, "0"))
    except ValueError:
        return 0


def control_fd() -> int | None:
    """The supervisor's socket of this worker, or None when not started by a supervisor."""
    value = os.environ.get(CONTROL_FD_ENV)
    return int(value) if value and value.isdigit() else None


# -- what several processes need -----------------------------------------------------


def storage_is_shared(config: Config) -> bool:
    """Whether the storage backend is one several machines can share (so may be shared).

    SQLite (the ``sql`` backend without a URL, or with a ``sqlite`` one) and ``memory``
    are local to a machine; PostgreSQL, MongoDB and any other backend are not.
    """
    backend = config.storage.backend
    if backend == "memory":
        return False
    if backend == "sql":
        sections = config.sections()
        url = getattr(sections.get("sql"), "url", None)
        return bool(url) and not url.startswith("sqlite")
    return True


def bus_is_shared(config: Config) -> bool:
    """Any bus but the in-process one reaches other processes."""
    return config.bus.backend != "memory"


def check_scaling(config: Config) -> None:
    """Refuse, with a clear message, a configuration that cannot run as configured:

    - several workers on the in-process bus (unless ``[server] allow_unshared_bus``) or on
      the ``memory`` storage backend;
    - shared storage or a shared bus without ``[server] secret``: every node must sign
      and check tokens with the same secret, and one generated into a data dir is not.
    """
    server = config.server
    source = config.source
    if server.workers > 1:
        if config.bus.backend == "memory" and not server.allow_unshared_bus:
            raise ConfigError(
                source,
                "server.workers",
                f"{server.workers} workers need a bus shared between processes: set "
                '[bus] backend = "redis" (the in-process bus "memory" delivers only inside '
                "one process). For tests and demos only, [server] allow_unshared_bus = true "
                "starts them anyway, and each worker then sees only its own connections",
            )
        if config.storage.backend == "memory":
            raise ConfigError(
                source,
                "server.workers",
                f"{server.workers} workers need storage shared between processes: the "
                '"memory" backend keeps each process\'s data apart; use "sql" (SQLite is '
                'fine on one machine, PostgreSQL on several) or "mongo"',
            )
    if not server.secret and (storage_is_shared(config) or bus_is_shared(config)):
        shared = []
        if storage_is_shared(config):
            backend = config.storage.backend
            shared.append(
                "[sql] url names a database server"
                if backend == "sql"
                else f"[storage] backend = {backend!r}"
            )
        if bus_is_shared(config):
            shared.append(f"[bus] backend = {config.bus.backend!r}")
        raise ConfigError(
            source,
            "server.secret",
            f"required when nodes may share storage or the bus ({'; '.join(shared)}): a token "
            "signed on one node must verify on every other, and a secret generated into one "
            "data dir does not travel. Set KEFU_SERVER__SECRET in the environment (or "
            'secret = { env = "NAME" } under [server]), the same on every node, at least 32 '
            "characters",
        )


# -- the supervisor -------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    control: socket.socket | None = None
    started_at: float = 0.0
    ready: asyncio.Future | None = None  # result: the ready report (dict), or None if it died
    restarts: int = 0
    backoff: float = BACKOFF_MIN
    keeper: asyncio.Task | None = field(default=None, repr=False)


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) a ``SO_REUSEPORT`` socket to the port the workers share.

    Resolves port 0 to a real one and keeps the port while every worker restarts; a
    bound socket that does not listen is never handed connections. Raises a
    :class:`ConfigError` when another program holds the port.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "kefu run", "server.port", f"cannot use {host}:{port}: {exc.strerror}"
        ) from None
    return sock, sock.getsockname()[1]


class Supervisor:
    """Starts, watches and drains the worker processes; see the module docstring."""

    def __init__(
        self,
        kernel: Kernel,
        host: str,
        port: int,
        environ: dict[str, str] | None = None,
        out: Any = None,
    ) -> None:
        self.kernel = kernel
        self.count = kernel.config.server.workers
        self.host = host
        self.port = port
        self.environ = dict(os.environ if environ is None else environ)
        self.drain_timeout = kernel.config.server.drain_timeout
        self.out = out or sys.stdout
        self.workers = [_Worker(i) for i in range(self.count)]
        self._stop = asyncio.Event()
        self._kill_now = asyncio.Event()
        self._failed: int | None = None

    # -- commands ------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "kefu.core.cli", "run"]
        if self.kernel.config_path:
            cmd += ["--config", self.kernel.config_path]
        return [*cmd, "--host", self.host, "--port", str(self.port)]

    def worker_env(self, index: int, fd: int) -> dict[str, str]:
        return {
            **self.environ,
            WORKER_INDEX_ENV: str(index),
            CONTROL_FD_ENV: str(fd),
            "KEFU_SERVER__WORKERS": str(self.count),
        }

    # -- running -------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            reports = await self._start_all()
            if reports is not None:
                self._banner(reports)
                await self._stop.wait()
            await self._drain()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self._failed or 0

    async def _start_all(self) -> list[dict] | None:
        """Worker 0 alone, then the others; None when start-up failed or was interrupted."""
        reports = []
        for batch in (self.workers[:1], self.workers[1:]):
            for worker in batch:
                worker.keeper = asyncio.create_task(
                    self._keep(worker), name=f"kefu-worker-{worker.index}"
                )
            for worker in batch:
                report = await self._first_ready(worker)
                if report is None:
                    return None
                reports.append(report)
        return reports

    async def _first_ready(self, worker: _Worker) -> dict | None:
        while worker.ready is None:  # the keeper has not spawned it yet
            if worker.keeper.done():
                return None
            await asyncio.sleep(0.01)
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({worker.ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        report = worker.ready.result() if worker.ready.done() else None
        if report is None and not self._stop.is_set():
            await worker.keeper  # it died during its first start: the keeper fails start-up
        return None if self._stop.is_set() else report

    async def _keep(self, worker: _Worker) -> None:
        try:
            await self._keep_running(worker)
        except Exception:
            log.exception("supervising worker %d failed", worker.index)
            self._failed = self._failed or 1
            self._stop.set()

    async def _keep_running(self, worker: _Worker) -> None:
        """Run one worker slot: spawn, wait, restart with back-off until stopping."""
        first_start = True
        while not self._stop.is_set():
            await self._spawn(worker)
            if self._stop.is_set():  # stopped while it was being spawned: drain it too
                self._terminate(worker)
            code = await worker.proc.wait()
            try:  # the end of its socket closes as it exits; allow for the order to vary
                report = await asyncio.wait_for(asyncio.shield(worker.ready), 2.0)
            except TimeoutError:
                report = None
                worker.ready.cancel()
            self._close_control(worker)
            if self._stop.is_set():
                return
            uptime = time.monotonic() - worker.started_at
            how = _describe_exit(code)
            if first_start and report is None:
                log.error("worker %d failed to start (%s)", worker.index, how)
                self._failed = code if code and code > 0 else 1
                self._stop.set()
                return
            first_start = False
            if uptime >= STABLE_AFTER:
                worker.backoff = BACKOFF_MIN
            delay = worker.backoff
            worker.backoff = min(worker.backoff * 2, BACKOFF_MAX)
            worker.restarts += 1
            log.warning(
                "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s (restart %d)",
                worker.index,
                worker.proc.pid,
                how,
                uptime,
                delay,
                worker.restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *self.command(),
                env=self.worker_env(worker.index, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        worker.control = ours
        worker.started_at = time.monotonic()
        worker.ready = asyncio.ensure_future(self._read_ready(worker, ours))
        log.debug("worker %d started (pid %d)", worker.index, worker.proc.pid)

    async def _read_ready(self, worker: _Worker, sock: socket.socket) -> dict | None:
        """The worker's one-line ready report; None when it closed its end first (died)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    return None
                data += chunk
        except OSError:
            return None
        report = json.loads(data)
        if worker.restarts:
            log.info("worker %d ready again (pid %d)", worker.index, report["pid"])
            self._print_announcements(report)
        return report

    def _close_control(self, worker: _Worker) -> None:
        if worker.control is not None:
            worker.control.close()
            worker.control = None

    # -- output --------------------------------------------------------------------
    def _banner(self, reports: list[dict]) -> None:
        loop_name = reports[0].get("loop", "asyncio")
        url = self.kernel.base_url
        source = self.kernel.config.source
        print(
            f"kefu {__version__} serving on {url} ({self.count} workers, {loop_name}, "
            f"config: {source})",
            file=self.out,
        )
        for report in reports:
            self._print_announcements(report)
        self.out.flush()

    def _print_announcements(self, report: dict) -> None:
        for line in report.get("announcements", ()):
            print(f"  {line}", file=self.out)
        self.out.flush()

    # -- stopping ------------------------------------------------------------------
    def _on_signal(self, sig: int) -> None:
        if self._stop.is_set():
            log.warning("second %s: killing the workers now", signal.Signals(sig).name)
            self._kill_now.set()
        else:
            log.info("%s: draining %d workers", signal.Signals(sig).name, self.count)
        self._stop.set()

    def _terminate(self, worker: _Worker) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)

    async def _drain(self) -> None:
        """SIGTERM every worker, wait up to ``drain_timeout``, kill the rest."""
        for worker in self.workers:
            self._terminate(worker)
        keepers = {w.keeper for w in self.workers if w.keeper is not None}
        if keepers:
            kill_now = asyncio.ensure_future(self._kill_now.wait())
            everyone = asyncio.ensure_future(asyncio.wait(keepers))
            await asyncio.wait(
                {everyone, kill_now},
                timeout=self.drain_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            kill_now.cancel()
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is None:
                    log.warning(
                        "worker %d (pid %d) still running after the drain; killing it",
                        worker.index,
                        worker.proc.pid,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
            await asyncio.gather(*keepers, return_exceptions=True)
            everyone.cancel()
        for worker in self.workers:
            self._close_control(worker)
        log.info("all workers stopped")


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def supervise(kernel: Kernel, host: str, port: int, environ: dict[str, str] | None = None) -> int:
    """Run ``kernel``'s config as ``[server] workers`` processes on ``host:port``; the exit code."""
    check_scaling(kernel.config)
    if not kernel.config.server.secret:
        kernel.secret  # noqa: B018 -- generated once here, before the workers read it
    reserved, port = reserve_port(host, port)
    kernel.listen = (host, port)
    try:
        return asyncio.run(Supervisor(kernel, host, port, environ).run())
    finally:
        reserved.close()


# -- the worker's side ------------------------------------------------------------------


class WorkerControl:
    """A worker's end of the socket pair: report ready; notice the supervisor going away."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)

    def report_ready(self, kernel: Kernel, loop_name: str) -> None:
        report = {
            "index": worker_index(),
            "pid": os.getpid(),
            "loop": loop_name,
            "announcements": list(kernel.announcements),
        }
        self.sock.setblocking(True)
        try:
            self.sock.sendall(json.dumps(report).encode() + b"\n")
        except OSError:
            log.warning("could not report to the supervisor (gone?)")
        finally:
            self.sock.setblocking(False)

    def watch(self, on_gone) -> None:
        """Call ``on_gone()`` once the supervisor's end is closed."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.sock.fileno())
                log.warning("the supervisor is gone: draining")
                on_gone()

        loop.add_reader(self.sock.fileno(), readable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
