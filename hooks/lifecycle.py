"""Lifecycle hooks: configuration, start-up, shutdown, HTTP routes and middlewares, CLI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware
    from pydantic import BaseModel

    from kefu.core.kernel import Kernel
    from kefu.core.types import CliCommand, RestEndpoint

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@hookspec
def kefu_config_schema() -> dict[str, type[BaseModel]] | None:
    """Declare the configuration sections this plugin owns.

    Called once when the configuration is validated (at start-up, by
    ``kefu check`` and on every live reload), before any other hook.

    :returns: a dict mapping a top-level section name of ``kefu.toml`` to a
        pydantic model class that validates it, or None when the plugin has
        no settings. Models should give every field a default so that an
        absent section is valid. Sync only.
    """


@hookspec
def kefu_config_changed(kernel: Kernel, section: str, old: Any, new: Any) -> MaybeAwaitable[None]:
    """React to a live configuration change of one section.

    Called after a changed ``kefu.toml`` was validated and swapped in
    atomically, once per section whose validated value differs.

    :param kernel: the running :class:`kefu.core.kernel.Kernel`.
    :param section: the section name (``"routing"``, a plugin's own section, ...).
    :param old: the previous validated value (a pydantic model or dict).
    :param new: the new validated value; also readable as
        ``kernel.config.section(section)``.
    :returns: None. May be async. A raising implementation is logged with
        its plugin name; the new configuration stays in force.
    """


# ---------------------------------------------------------------------------
# Start-up and shutdown
# ---------------------------------------------------------------------------


@hookspec
def kefu_startup(kernel: Kernel) -> MaybeAwaitable[None]:
    """Acquire the plugin's resources before the server accepts requests.

    Called once per process after the single-slot services (storage, bus)
    are open, in plugin registration order. Failing start-up is fatal: the
    error is reported with the plugin's name and the server does not start.

    :param kernel: the :class:`kefu.core.kernel.Kernel` being started.
    :returns: None. May be async.
    """


@hookspec
def kefu_shutdown(kernel: Kernel) -> MaybeAwaitable[None]:
    """Release what :func:`kefu_startup` acquired.

    Called once per process when the server stops, in reverse registration
    order. Every implementation runs even if another one raises; failures
    are logged with the plugin's name.

    :param kernel: the :class:`kefu.core.kernel.Kernel` being stopped.
    :returns: None. May be async.
    """


@hookspec
def kefu_shutdown_requested(kernel: Kernel) -> MaybeAwaitable[None]:
    """Start closing long-lived connections because the server is stopping.

    Called once when the server begins to stop (SIGINT, SIGTERM), after it
    stopped accepting new connections and before it waits for open requests
    to finish, so that WebSockets and long-polls end promptly instead of
    holding shutdown until they time out. Resources are released later, in
    :func:`kefu_shutdown`.

    :param kernel: the :class:`kefu.core.kernel.Kernel` being stopped.
    :returns: None. May be async. Every implementation runs even if another
        one raises; failures are logged with the plugin's name.
    """


@hookspec
def kefu_ready_checks(kernel: Kernel) -> dict[str, Callable[[], Awaitable[str | None]]] | None:
    """Contribute readiness checks to ``GET /readyz``.

    Called while building the application; the checks run on every request
    to ``/readyz``.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a dict mapping a check name to a zero-argument async callable
        that returns None when ready or a short string describing what is not
        ready; or None. Sync only.
    """


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


@hookspec
def kefu_routes(kernel: Kernel) -> list[web.AbstractRouteDef] | None:
    """Contribute HTTP routes.

    Called once while the aiohttp application is built, before it is frozen.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`aiohttp.web.RouteDef` (``web.get(...)`` ...),
        or None. Sync only.
    """


@hookspec
def kefu_rest_endpoints(kernel: Kernel) -> list[RestEndpoint] | None:
    """Contribute JSON endpoints to the REST API, served and documented like its own.

    Called once while the application is built, by the plugin that serves the
    REST API (the built-in ``rest_api``), and again to build
    ``/v1/openapi.json``. That plugin authenticates the caller, validates the
    query and body with the endpoint's models, turns a raised
    :class:`kefu.core.errors.ApiError` into its error response and lists the
    operation in the OpenAPI document. A method and path claimed twice fails
    start-up naming both plugins. Without a REST API plugin nothing serves them.

    The handler is awaited as ``handler(call)``: ``call.kernel``,
    ``call.request`` (the aiohttp request), ``call.principal`` (None only
    with ``auth=False``), ``call.site_id`` (the caller's site),
    ``call.params`` (path parameters), ``call.query`` and ``call.body``
    (instances of the endpoint's models). Authenticated means any valid token, a visitor's
    included: a handler that is not for everyone checks the caller with
    ``await call.require(action, resource)``, which answers 403
    ``forbidden`` unless the auth plugins permit it (the action names are in
    docs/protocol.md section 7).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.RestEndpoint`, or None. Sync only.
    """


@hookspec
def kefu_middlewares(kernel: Kernel) -> list[tuple[int, Middleware]] | None:
    """Contribute aiohttp middlewares.

    Called once while the application is built. Middlewares are applied in
    ascending priority (lower runs first / outermost), then by plugin name.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of ``(priority, middleware)`` tuples where middleware is
        an ``@web.middleware`` coroutine function, or None. Sync only.
    """


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@hookspec
def kefu_cli_commands() -> list[CliCommand] | None:
    """Contribute sub-commands to the ``kefu`` command line.

    Called once when the CLI builds its parser.

    :returns: a list of :class:`kefu.core.types.CliCommand`, or None. Sync only.
    """
