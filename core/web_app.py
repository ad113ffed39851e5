"""The aiohttp application factory: kernel endpoints, plugin routes, lifespans."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from kefu.core import __version__, gc_tuning, tls
from kefu.core.errors import StartupError
from kefu.core.kernel import Kernel
from kefu.core.reload import watch_config
from kefu.core.supervisor import worker_index

log = logging.getLogger(__name__)

KERNEL_KEY = web.AppKey("kefu_kernel", Kernel)
CHECKS_KEY = web.AppKey("kefu_ready_checks", dict)
#: A request's key: headers a middleware decided before its handler ran, added to the answer
#: when it is prepared (also an answer the handler streams itself, which a middleware sees
#: only once it is sent: a file served by range).
RESPONSE_HEADERS = web.RequestKey("kefu_response_headers", dict)
READY_CHECK_TIMEOUT = 2.0


def bearer_token(request: web.Request) -> str | None:
    """The caller's credential: ``Authorization: Bearer``, ``?token=`` or the session cookie."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query.get("token") or request.cookies.get("kefu_session")


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The one error shape of every HTTP API: ``{"error": {"code", "message"}}``, plus the
    ``extra`` fields a client words the error from (``field``, ``problem``, ``reason``...)."""
    body = {"code": code, "message": message, **extra}
    return web.json_response({"error": body}, status=status)


async def request_principal(request: web.Request):
    """The authenticated :class:`~kefu.core.types.Principal` of a request, or None."""
    return await request.app[KERNEL_KEY].hooks.authenticate(request, bearer_token(request))


async def healthz(request: web.Request) -> web.Response:
    # worker and pid tell apart the processes of `kefu run --workers N` (docs/scaling.md)
    body = {"status": "ok", "version": __version__, "worker": worker_index(), "pid": os.getpid()}
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    kernel = request.app[KERNEL_KEY]
    problems: dict[str, str] = {}
    if not kernel.started:
        problems["kernel"] = "starting"
    for name, check in request.app[CHECKS_KEY].items():
        try:
            problem = await asyncio.wait_for(check(), READY_CHECK_TIMEOUT)
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            problems[name] = str(problem)
    status = 503 if problems else 200
    return web.json_response({"ready": not problems, "problems": problems}, status=status)


async def list_plugins(request: web.Request) -> web.Response:
    """Plugins, versions, origins and hooks; admin only once an auth plugin is enabled."""
    kernel = request.app[KERNEL_KEY]
    if kernel.hooks.has_auth():
        principal = await request_principal(request)
        if not await kernel.hooks.permits(principal, "plugins.list", None):
            status = 401 if principal is None else 403
            return error_response(status, "admin_required", "an admin token is required")
    return web.json_response({"plugins": [r.as_dict() for r in kernel.plugins.records]})


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Open the single-slot services, start every plugin, then watch the config."""
    kernel = app[KERNEL_KEY]
    async with AsyncExitStack() as stack:
        kernel.bus = kernel.make_bus()
        kernel.storage = kernel.make_storage()
        for service in (kernel.bus, kernel.storage):
            if service is not None:
                await service.open()
                stack.push_async_callback(service.close)
        for plugin, start, stop in kernel.hooks.lifespans():
            if start is not None:
                await _run_start(plugin, start, kernel)
            if stop is not None:
                stack.push_async_callback(_run_stop, plugin, stop, kernel)
        stack.push_async_callback(kernel.cancel_tasks)  # first thing at shutdown
        if kernel.config_path and kernel.config.server.reload:
            watcher = asyncio.create_task(watch_config(kernel), name="kefu-config-watch")
            stack.callback(watcher.cancel)
        server_tls = tls.server_tls(kernel)
        if server_tls is not None:
            kernel.spawn(server_tls.watch(), "kefu-tls-reload")
        kernel.started = True
        _tune_gc(kernel)
        yield
        kernel.started = False


def _tune_gc(kernel: Kernel) -> None:
    """Bound the collector's pauses (core/gc_tuning.py): thresholds, the start-up freeze
    (long-lived start-up objects leave the generations) and the periodic freezer."""
    server = kernel.config.server
    gc_tuning.apply_thresholds(server.gc_thresholds)
    gc_tuning.freeze_start_up()
    if server.gc_freeze_interval_s:
        freezer = gc_tuning.GcFreezer()
        kernel.spawn(freezer.run(server.gc_freeze_interval_s), "kefu-gc-freezer")


async def _run_start(plugin: str, start, kernel: Kernel) -> None:
    try:
        result = start(kernel)
        if asyncio.iscoroutine(result):
            await result
    except Exception as exc:
        raise StartupError(f"plugin {plugin!r} failed to start: {exc}") from exc


async def _run_stop(plugin: str, stop, kernel: Kernel) -> None:
    try:
        result = stop(kernel)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        kernel.failures.record(plugin, "kefu_shutdown")
        log.exception("plugin %r failed to shut down", plugin)


def create_app(kernel: Kernel) -> web.Application:
    """Build the application; routes and middlewares are collected before it is frozen."""
    app = web.Application(middlewares=kernel.hooks.middlewares(), client_max_size=1024**2)
    hsts = tls.hsts_value(kernel.config.server)
    if hsts:
        app.on_response_prepare.append(_send_hsts(hsts))
    app.on_response_prepare.append(_send_decided_headers)
    app[KERNEL_KEY] = kernel
    app[CHECKS_KEY] = {"storage": _storage_ping(kernel), **kernel.hooks.ready_checks()}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/-/plugins", list_plugins)
    app.router.add_routes(kernel.hooks.routes())
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(_shutdown_requested)
    return app


def _send_hsts(value: str):
    """``Strict-Transport-Security`` on every response, errors included."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("Strict-Transport-Security", value)

    return on_prepare


async def _send_decided_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The headers a middleware put under :data:`RESPONSE_HEADERS` of the request."""
    for name, value in request.get(RESPONSE_HEADERS, {}).items():
        response.headers[name] = value


async def _shutdown_requested(app: web.Application) -> None:
    kernel = app[KERNEL_KEY]
    kernel.started = False  # /readyz turns 503 while draining
    await kernel.hooks.shutdown_requested()


def _storage_ping(kernel: Kernel):
    async def check() -> str | None:
        if kernel.storage is None:
            return None if not kernel.hooks.storage_backends() else "not open"
        await kernel.storage.ping()
        return None

    return check
