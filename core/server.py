"""Serving the application: event loop choice, banner, signal handling."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from kefu.core import __version__, tls
from kefu.core.http_limits import Runner
from kefu.core.kernel import Kernel
from kefu.core.supervisor import (
    WorkerControl,
    check_scaling,
    control_fd,
    supervise,
    worker_index,
)
from kefu.core.web_app import create_app

log = logging.getLogger(__name__)


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def serve(
    kernel: Kernel,
    host: str | None = None,
    port: int | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """Run until interrupted; prints the URL and any operator announcements once started.

    With ``[server] workers`` above 1 this process becomes the supervisor of that many
    worker processes (:mod:`kefu.core.supervisor`); a worker it started serves through
    :func:`serve_worker`. ``environ`` is the environment the config was read with (the
    workers get it). Returns the exit code.
    """
    host = host or kernel.config.server.host
    port = kernel.config.server.port if port is None else port
    check_scaling(kernel.config)
    fd = control_fd()
    if fd is not None:
        serve_worker(kernel, host, port, fd)
        return 0
    if kernel.config.server.workers > 1:
        return supervise(kernel, host, port, environ)
    loop_name = _install_uvloop()
    kernel.listen = (host, port)
    app = create_app(kernel)

    async def banner(app: web.Application) -> None:
        url = kernel.base_url
        print(f"kefu {__version__} serving on {url} ({loop_name}, config: {kernel.config.source})")
        for line in kernel.announcements:
            print(f"  {line}")
        sys.stdout.flush()

    app.on_startup.append(banner)
    asyncio.run(_serve_single(kernel, app, host, port))
    return 0


def _ssl_context(kernel: Kernel):
    server_tls = tls.server_tls(kernel)
    return server_tls.context if server_tls else None


async def _serve_single(kernel: Kernel, app: web.Application, host: str, port: int) -> None:
    """What ``web.run_app`` did, with the runner that bounds the header read
    (core/http_limits.py): serve until SIGINT or SIGTERM, then shut down cleanly (the
    application closes its clients first, then the tasks stop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    header_timeout = kernel.config.server.header_timeout
    runner = Runner(app, header_timeout=header_timeout, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        # aiohttp's default backlog (128) overflows during connection ramps and reconnect storms
        site = web.TCPSite(runner, host, port, backlog=4096, ssl_context=_ssl_context(kernel))
        await site.start()
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_worker(kernel: Kernel, host: str, port: int, fd: int) -> None:
    """Serve as worker ``KEFU_WORKER_INDEX`` of a supervisor, on a ``SO_REUSEPORT`` socket.

    Reports ready (with the announcements) to the supervisor instead of printing a banner;
    SIGTERM, SIGINT or the supervisor going away drains: client connections are closed
    with reason ``shutdown`` and in-flight requests get most of ``[server] drain_timeout``.
    """
    index = worker_index()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s")
        )
    loop_name = _install_uvloop()
    kernel.listen = (host, port)
    app = create_app(kernel)
    control = WorkerControl(fd)
    asyncio.run(_worker_main(kernel, app, host, port, control, loop_name))


async def _worker_main(
    kernel: Kernel, app: web.Application, host: str, port: int, control, loop_name: str
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = Runner(
        app,
        header_timeout=kernel.config.server.header_timeout,
        access_log=None,
        handle_signals=False,
        # the supervisor kills at drain_timeout: stop waiting for requests before that
        shutdown_timeout=kernel.config.server.drain_timeout * 0.8,
    )
    await runner.setup()  # starts the services and every plugin
    try:
        site = web.TCPSite(
            runner, host, port, backlog=4096, reuse_port=True, ssl_context=_ssl_context(kernel)
        )
        await site.start()
        control.watch(stop.set)
        control.report_ready(kernel, loop_name)
        log.info("worker %d serving on %s:%d (pid %d)", worker_index(), host, port, os.getpid())
        await stop.wait()
        log.info("draining")
    finally:
        await runner.cleanup()
        control.close()
