"""Serving the application: event loop choice, banner, signal handling."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from kefu.core import __version__
from kefu.core.errors import KefuError
from kefu.core.kernel import Kernel
from kefu.core.web_app import create_app

log = logging.getLogger(__name__)


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def serve(kernel: Kernel, host: str | None = None, port: int | None = None) -> None:
    """Run until interrupted; prints the URL and any operator announcements once started."""
    host = host or kernel.config.server.host
    port = kernel.config.server.port if port is None else port
    if kernel.config.server.workers > 1:
        raise KefuError(
            "[server] workers > 1 is not supported yet: run one process per port "
            "(several workers need the Redis bus, which is not built yet)"
        )
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
    # aiohttp's default backlog (128) overflows during connection ramps and reconnect storms
    web.run_app(app, host=host, port=port, print=None, access_log=None, backlog=4096)
